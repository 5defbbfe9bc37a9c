"""Coherency, Complexity and ADCC (Poppi et al., CVPR Workshops 2021), as the official code.

For an image x, its class c, its map L (at the input size, in [0, 1]) and E = x * L:

    Coherency  = (Pearson(vec L, vec L_E) + 1) / 2    L_E: the same explainer on E, class c
    Complexity = sum |L| / (H W)
    ADCC       = 3 / (1 / Coherency + 1 / (1 - Complexity) + 1 / (1 - Average Drop))

A map with no spread (constant) has no correlation: its Coherency is 0 (the official code
returns 0 for maps it cannot correlate). ADCC is 0 when any term is 0, the harmonic mean's
limit. Over a dataset, `ADCC.compute()` gives the table form (the harmonic mean of the
averaged components, as the ReciproCAM tables) and `compute_mean_of_images()` the mean of
per-image ADCC (the official code's per-image value, averaged).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..explainer import Explainer
from ..options import positive
from .base import Metric, MetricInfo, mean_of
from .batch import Batch
from .confidence import AverageDrop


class Coherency(Metric):
    """(Pearson(L, L_E) + 1) / 2: whether the explanation of E is the explanation of x."""

    info = MetricInfo("coherency", "Coher", higher_is_better=True, needs_explainer=True)

    def __init__(self, explainer: Explainer, *, batch_size: int = 32) -> None:
        super().__init__()
        self.explainer = explainer
        self.batch_size = positive("batch_size", batch_size)

    def measure(self, batch: Batch) -> Tensor:
        again = batch.explanation_maps(self.explainer, self.batch_size)
        correlation = pearson(batch.maps, again)
        return torch.where(correlation.isnan(), 0.0, (correlation + 1) / 2)


class Complexity(Metric):
    """sum |L| / (H W): the mean saliency; a sparse map (low) is better."""

    info = MetricInfo("complexity", "Compl", higher_is_better=False)

    def measure(self, batch: Batch) -> Tensor:
        return batch.maps.abs().flatten(1).mean(dim=1)


class ADCC(Metric):
    """The harmonic mean of Coherency, 1 - Complexity and 1 - Average Drop; higher is better.

    The explainer's model is the one scored. The components are kept as metrics of their own
    (`coherency`, `complexity`, `average_drop`), so a suite that also reports them pays once.
    """

    info = MetricInfo("adcc", "ADCC", higher_is_better=True, needs_model=True, needs_explainer=True)

    def __init__(
        self, explainer: Explainer, *, model: nn.Module | None = None, batch_size: int = 32
    ) -> None:
        super().__init__()
        model = explainer.model if model is None else model
        self.coherency = Coherency(explainer, batch_size=batch_size)
        self.complexity = Complexity()
        self.average_drop = AverageDrop(model, batch_size=batch_size)
        self._components: tuple[Metric, Metric, Metric] = (
            self.coherency,
            self.complexity,
            self.average_drop,
        )

    def update_batch(self, batch: Batch) -> Tensor:
        for metric in self._components:
            metric.update_batch(batch)
        return super().update_batch(batch)

    def measure(self, batch: Batch) -> Tensor:
        # The batch caches the forwards, so measuring a component again costs nothing.
        return adcc(*(metric.measure(batch) for metric in self._components))

    def compute(self) -> float:
        """The table form: ADCC of the dataset means of the three components."""
        return float(
            adcc(
                torch.tensor(self.coherency.compute()),
                torch.tensor(self.complexity.compute()),
                torch.tensor(self.average_drop.compute()),
            )
        )

    def compute_mean_of_images(self) -> float:
        """The mean of the per-image ADCC values."""
        return mean_of(self.values)

    def reset(self) -> None:
        super().reset()
        for metric in self._components:
            metric.reset()


def adcc(coherency: Tensor, complexity: Tensor, average_drop: Tensor) -> Tensor:
    """3 / (1/Coh + 1/(1 - Compl) + 1/(1 - Drop)) elementwise; 0 where a term is 0."""
    terms = torch.stack([coherency, 1 - complexity, 1 - average_drop])
    safe = terms.clamp_min(torch.finfo(terms.dtype).tiny)
    value = 3 / (1 / safe).sum(dim=0)
    return torch.where((terms > 0).all(dim=0), value, torch.zeros_like(value))


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """(B,) Pearson's correlation of each pair of maps (float64); NaN where a map is constant."""
    a = a.flatten(1).double()
    b = b.flatten(1).double()
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    scale = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(scale > 0, (a * b).sum(dim=1) / scale.clamp_min(1e-300), float("nan"))
