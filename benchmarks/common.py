"""Timing helpers for the benchmarks: interleaved repeats, medians, machine description."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from reciprocam.explainer import Evidence, Explainer
from reciprocam.targets import Target

RESULTS = Path(__file__).parent / "results"
CHECKPOINTS = Path(__file__).resolve().parents[1] / "src/reciprocam/synthetic/checkpoints"


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def time_interleaved(
    runs: dict[str, Callable[[], object]], repeats: int, warmup: int = 2, settle: bool = False
) -> dict[str, float]:
    """Median seconds per call of each function, timed in turn so drifts hit all alike.

    `settle` runs each function once, untimed, right before each timed call, so no call pays
    for the caches and allocator state the previous function left (for fast functions).
    """
    for _ in range(warmup):
        for run in runs.values():
            run()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            if settle:
                run()
            start = time.perf_counter()
            run()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def train_one_cycle(
    model: nn.Module,
    loader: DataLoader,
    loss: Callable[[nn.Module, Tensor, Tensor], Tensor],
    *,
    rate: float,
    decay: float,
    steps: int,
    label: str,
) -> float:
    """Train `model` one pass over `loader` (AdamW, a one-cycle learning rate over `steps`)
    with `loss(model, inputs, targets)`; return the seconds taken."""
    optimiser = torch.optim.AdamW(model.parameters(), lr=rate, weight_decay=decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=rate, total_steps=steps)
    began = time.perf_counter()
    model.train()
    for step, (inputs, targets) in enumerate(loader):
        value = loss(model, inputs, targets)
        optimiser.zero_grad()
        value.backward()
        optimiser.step()
        schedule.step()
        if step % 50 == 0:
            print(f"{label} step {step}/{steps} loss {value.item():.3f}", flush=True)
    return time.perf_counter() - began


def accuracy(model: nn.Module, loader: DataLoader) -> float:
    """The share of `loader`'s (inputs, labels) that `model` (put in eval mode) gets right."""
    model.eval()
    correct = total = 0
    with torch.inference_mode():
        for inputs, labels in loader:
            correct += int((model(inputs).argmax(1) == labels).sum())
            total += len(labels)
    return correct / total


def train_classifier(
    model: nn.Module, data: Dataset[tuple[Tensor, int]], *, batch: int, rate: float, decay: float
) -> float:
    """Train a classifier one pass over `data`, in order (its samples are all new: generated
    on demand), with cross-entropy and label smoothing 0.05; return the seconds taken."""
    loader = DataLoader(data, batch_size=batch, shuffle=False, num_workers=1)
    return train_one_cycle(
        model,
        loader,
        lambda net, inputs, labels: nn.functional.cross_entropy(
            net(inputs), labels, label_smoothing=0.05
        ),
        rate=rate,
        decay=decay,
        steps=math.ceil(len(data) / batch),  # type: ignore[arg-type]
        label=type(model).__name__,
    )


def save_checkpoint(model: nn.Module, name: str) -> int:
    """Write the model's state_dict as the package's checkpoints/`name`; return its bytes."""
    CHECKPOINTS.mkdir(parents=True, exist_ok=True)
    path = CHECKPOINTS / name
    torch.save(model.state_dict(), path)
    size = path.stat().st_size
    print(f"wrote {path} ({size / 1e6:.2f} MB)")
    return size


def write_results(name: str, payload: dict[str, object]) -> Path:
    """Save a benchmark's figures as JSON under benchmarks/results/."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    return path


def report_batches(title: str, name: str, model: str, rows: list[dict[str, object]]) -> None:
    """Print per-batch rows (batch, method, seconds, ratio) as a table and save them as JSON."""
    info = machine()
    print(f"{title}, {info['cpu']}, {info['torch_threads']} threads, torch {info['torch']}")
    print("| batch | method | time per batch | ratio to inference |")
    print("|---|---|---|---|")
    for row in rows:
        milliseconds = float(str(row["seconds"])) * 1000
        print(f"| {row['batch']} | {row['method']} | {milliseconds:.0f} ms | {row['ratio']:.2f}x |")
    payload = {"model": model, "input": [3, 224, 224], "rows": rows}
    print(f"wrote {write_results(name, payload)}")


def ratio_rows(batch: int, seconds: dict[str, float]) -> list[dict[str, object]]:
    """One row per timed function: its seconds and its ratio to "inference"."""
    return [
        {"batch": batch, "method": name, "seconds": value, "ratio": value / seconds["inference"]}
        for name, value in seconds.items()
    ]


def centre_map(shape: tuple[int, ...], device: torch.device | None = None) -> Tensor:
    """The centre baseline's map of a grid of `shape` (an image's H x W, a clip's T x H x W):
    a Gaussian at its centre, its sigma a quarter of each side, 1 at the peak."""
    bump = torch.ones((), device=device)
    for side in shape:
        offsets = (torch.arange(side, device=device) - (side - 1) / 2) / (side / 4)
        bump = bump[..., None] * torch.exp(-0.5 * offsets**2)
    return bump


class CentreGaussian(Explainer):
    """The centre baseline as an explainer: `centre_map` of the input's grid, for any class."""

    def _explain(self, x: Tensor, target: Target) -> Evidence:
        with torch.inference_mode():
            logits = self.model(x)
        bump = centre_map(tuple(x.shape[2:]), x.device)
        return Evidence(logits, target.bind(logits), bump.expand(x.shape[0], *bump.shape))
