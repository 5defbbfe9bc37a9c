"""Average Drop and Increase in Confidence (Chattopadhyay et al., Grad-CAM++, WACV 2018).

With Y = p_c(x), the class probability on the image, and O = p_c(x * L), on the explanation
image (the map L at the input size masks the normalised input, so a removed pixel takes the
dataset's mean colour):

    Average Drop           = max(0, Y - O) / Y        per image; lower is better
    Increase in Confidence = 1[O > Y]                 per image; higher is better

Tables show their means x 100. c is each image's top-1 prediction unless targets are given.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..options import positive
from .base import Metric, MetricInfo
from .batch import Batch


class _ConfidenceMetric(Metric):
    def __init__(self, model: nn.Module, *, batch_size: int = 32) -> None:
        super().__init__()
        self.model = model
        self.batch_size = positive("batch_size", batch_size)

    def _confidences(self, batch: Batch) -> tuple[Tensor, Tensor]:
        return (
            batch.confidence(self.model, self.batch_size),
            batch.explanation_confidence(self.model, self.batch_size),
        )


class AverageDrop(_ConfidenceMetric):
    """max(0, Y - O) / Y per image: how much confidence the explanation image loses.

    A class whose probability Y underflows to 0 cannot drop, and scores 0.
    """

    info = MetricInfo("average_drop", "Drop", higher_is_better=False, needs_model=True)

    def measure(self, batch: Batch) -> Tensor:
        return average_drop(*self._confidences(batch))


class IncreaseInConfidence(_ConfidenceMetric):
    """1[O > Y] per image: whether the explanation image alone is more convincing."""

    info = MetricInfo("increase_in_confidence", "Inc", higher_is_better=True, needs_model=True)

    def measure(self, batch: Batch) -> Tensor:
        original, explained = self._confidences(batch)
        return (explained > original).to(original.dtype)


def average_drop(original: Tensor, explained: Tensor) -> Tensor:
    """max(0, Y - O) / Y elementwise, 0 where Y is 0."""
    drop = (original - explained).clamp_min(0.0)
    tiny = torch.finfo(original.dtype).tiny
    return torch.where(original > 0, drop / original.clamp_min(tiny), 0.0)
