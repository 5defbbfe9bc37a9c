"""Resources over many calls and threads: memory stays flat, nothing outlives an explainer,
and threads sharing a model get the results they would get alone."""

from __future__ import annotations

import gc
import threading
import time
import weakref

import psutil
import pytest
import torch
from helpers import hook_counts, seeded
from test_properties import CNN_METHODS, FAST, tiny_cnn, tiny_vit
from torch import nn

import reciprocam

CALLS = 200
# RSS may rise by allocator pages and caches that settle; keeping one explanation of a 64x64
# image per call (its map alone is 16 KiB) would add more than 4 MiB over 200 calls.
RSS_BOUND = 4 * 2**20


def live_tensors() -> int:
    gc.collect()
    # type(), not isinstance(): isinstance reads __class__, which some lazy modules warn on.
    return sum(issubclass(type(thing), torch.Tensor) for thing in gc.get_objects())


def explainer_for(method: str) -> tuple[reciprocam.Explainer, torch.Tensor]:
    if method == "vit-reciprocam":
        return reciprocam.explainer(method, tiny_vit()), seeded((1, 3, 32, 32))
    return reciprocam.explainer(method, tiny_cnn(), **FAST.get(method, {})), seeded((1, 3, 64, 64))


@pytest.mark.parametrize("method", [*CNN_METHODS, "vit-reciprocam"])
def test_many_explanations_keep_memory_flat_and_leave_nothing_behind(method: str) -> None:
    explainer, x = explainer_for(method)
    hooks = hook_counts(explainer.model)
    for _ in range(20):  # warm-up: allocator pools, caches, lazily resolved layers
        explainer(x)
    process = psutil.Process()
    tensors = live_tensors()
    before = process.memory_info().rss
    for _ in range(CALLS):
        explainer(x)
    grown = process.memory_info().rss - before
    assert grown < RSS_BOUND, f"{method}: RSS grew by {grown / 2**20:.1f} MiB in {CALLS} calls"
    # Python-held tensors are counted exactly: freed memory the allocator reuses can hide them
    # from the RSS.
    assert live_tensors() == tensors
    assert hook_counts(explainer.model) == hooks
    reference = weakref.ref(explainer)
    explainer.close()
    del explainer
    gc.collect()
    assert reference() is None, f"{method}: something still holds the explainer"


class Dawdle(nn.Module):
    """Sleeps in the forward pass, so that two threads' passes overlap."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.002)
        return x


def dawdling_cnn() -> nn.Module:
    model = tiny_cnn()
    model.insert(2, Dawdle())
    return model


def run_in_threads(*jobs: object) -> list[object]:
    results: list[object] = [None] * len(jobs)
    errors: list[BaseException] = []

    def work(index: int, job) -> None:
        try:
            results[index] = job()
        except BaseException as error:  # re-raised in the main thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i, job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


@pytest.mark.threads
@pytest.mark.parametrize("method", ["reciprocam", "gradcam", "scorecam"])
@pytest.mark.parametrize("shared", ["one explainer", "two explainers"])
def test_threads_sharing_a_model_get_their_own_results(method: str, shared: str) -> None:
    model = dawdling_cnn().train()
    first = reciprocam.explainer(method, model)
    second = first if shared == "one explainer" else reciprocam.explainer(method, model)
    inputs = [seeded((2, 3, 20, 20), seed) for seed in (1, 2)]
    alone = [first(x).clone() for x in inputs]

    def repeat(explainer: reciprocam.Explainer, x: torch.Tensor):
        return lambda: [explainer(x) for _ in range(8)]

    together = run_in_threads(repeat(first, inputs[0]), repeat(second, inputs[1]))
    for maps, expected in zip(together, alone, strict=True):
        for found in maps:
            torch.testing.assert_close(found, expected, rtol=0, atol=1e-6)
    assert model.training
    assert all(module.training for module in model.modules())
    assert all(counts == (0, 0, 0, 0) for counts in hook_counts(model).values())
