"""Running one evaluation across processes with torchrun: each rank takes a shard of images.

`torchrun --nproc_per_node N -m reciprocam evaluate ...` sets RANK and WORLD_SIZE; ranks
join a torch.distributed group (gloo on CPU, nccl on GPU) only to wait for each other before
rank 0 writes the report. Without torchrun, the single process is rank 0 of 1.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

_T = TypeVar("_T")

# Ranks wait for the slowest one at the end; a long dataset must not time that wait out.
_WAIT = timedelta(days=7)


@dataclass(frozen=True)
class Shard:
    """This process's part of the work: every `world`-th item from `rank`."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def take(self, items: Sequence[_T]) -> list[_T]:
        return list(items[self.rank :: self.world])

    def wait_for_all(self) -> None:
        """Block until every rank gets here (nothing to do in a single process)."""
        if self.world > 1:
            dist.barrier()


def launched_ranks() -> int:
    """How many processes torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_device(device: torch.device) -> torch.device:
    """A CUDA device per local rank under torchrun; `device` otherwise."""
    if device.type == "cuda" and launched_ranks() > 1 and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


@contextmanager
def process_group(device: torch.device) -> Iterator[Shard]:
    """Join torchrun's process group for the block (gloo on CPU, nccl on CUDA)."""
    world = launched_ranks()
    if world == 1:
        yield Shard()
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, timeout=_WAIT)
    try:
        yield Shard(dist.get_rank(), dist.get_world_size())
    finally:
        dist.destroy_process_group()
