"""The streaming metric: `update` per batch, `compute` for the summary, per-image values kept."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ..targets import Scale, TargetSpec
from .batch import Batch


@dataclass(frozen=True)
class MetricInfo:
    """What a report needs to know about a metric.

    name: the key in results ("average_drop"); label: the column title ("Drop").
    higher_is_better: the direction of improvement.
    needs_model / needs_explainer / needs_ground_truth: what the metric runs or reads.
    percent: whether tables show it x 100 (the papers' convention).
    """

    name: str
    label: str
    higher_is_better: bool
    needs_model: bool = False
    needs_explainer: bool = False
    needs_ground_truth: bool = False
    percent: bool = True

    @property
    def arrow(self) -> str:
        """The usual table mark of the direction: up or down."""
        return "\u2191" if self.higher_is_better else "\u2193"


class Metric(ABC):
    """A metric over a stream of batches.

    `update(images, maps, targets, ground_truth)` measures each image of a batch and returns
    its (B,) values; `compute()` summarises every image seen since `reset()` (the mean, unless
    a metric says otherwise); `values` holds the per-image values, so any other aggregation can
    be recomputed. NaN marks an image the metric does not apply to (no ground truth); the mean
    skips those.
    """

    info: ClassVar[MetricInfo]

    def __init__(self) -> None:
        self._values: list[Tensor] = []

    def update(
        self,
        images: Tensor,
        maps: Tensor,
        targets: TargetSpec = None,
        ground_truth: Tensor | None = None,
        *,
        score: Scale = "softmax",
    ) -> Tensor:
        """Measure a batch: (B, C, H, W) images, (B, H, W) maps in [0, 1], their targets (as
        explainers take them, or an Explanation's `target`; default: the model's top-1), and
        (B, H, W) ground-truth masks; `score` "sigmoid" reads class targets as a multi-label
        head's sigmoids."""
        batch = Batch.create(images, maps, targets, ground_truth, score=score)
        return self.update_batch(batch)

    def update_batch(self, batch: Batch) -> Tensor:
        """Measure a prepared `Batch` (which shares its forwards with other metrics)."""
        values = self.measure(batch).detach().to("cpu", torch.float64)
        self._values.append(values)
        return values

    @abstractmethod
    def measure(self, batch: Batch) -> Tensor:
        """(B,) the metric's value for each image of the batch, without recording them."""

    @property
    def values(self) -> Tensor:
        """(M,) float64 per-image values of every image since the last reset."""
        return torch.cat(self._values) if self._values else torch.zeros(0, dtype=torch.float64)

    def compute(self) -> float:
        """The summary of every image seen: the mean, NaN (not applicable) values skipped."""
        return mean_of(self.values)

    def reset(self) -> None:
        """Forget every image seen."""
        self._values = []


def mean_of(values: Tensor) -> float:
    """The mean of the non-NaN values, or NaN when there are none."""
    present = values[~values.isnan()]
    return float(present.mean()) if present.numel() else float("nan")
