"""Metrics by name, and a suite that measures several on the same batches.

`MetricSuite(["adcc", "deletion"], model=..., explainer=...)` builds the metrics, shares one
`Batch` (so shared forwards run once) and summarises them with `summarize`, which works as well
on per-image values read back from a file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import OptionError
from ..explainer import Explainer
from ..names import PAPER_METRICS
from ..targets import Scale, TargetSpec
from .adcc import ADCC, Coherency, Complexity, adcc
from .base import Metric, MetricInfo, mean_of
from .batch import Batch
from .causal import Deletion, Insertion
from .confidence import AverageDrop, IncreaseInConfidence
from .pointing import EnergyPointingGame, PointingGame

_METRICS: dict[str, type[Metric]] = {
    metric.info.name: metric
    for metric in (
        AverageDrop,
        IncreaseInConfidence,
        Deletion,
        Insertion,
        Coherency,
        Complexity,
        ADCC,
        PointingGame,
        EnergyPointingGame,
    )
}
ADCC_COMPONENTS = ("coherency", "complexity", "average_drop")
ADCC_MEAN_OF_IMAGES = "adcc_mean_of_images"


def metric_names() -> list[str]:
    """Every metric's name."""
    return list(_METRICS)


def metric_info(name: str) -> MetricInfo:
    """The description of metric `name` (also "adcc_mean_of_images", ADCC's other form)."""
    if name == ADCC_MEAN_OF_IMAGES:
        return MetricInfo(name, "ADCC/img", higher_is_better=True)
    canonical = _ALIASES.get(_key(name))
    if canonical is None:
        raise OptionError(f"unknown metric '{name}'; choose from {', '.join(_METRICS)}")
    return _METRICS[canonical].info


def _key(name: str) -> str:
    return name.lower().replace("-", "_").replace(" ", "_")


_ALIASES = {
    **{_key(name): name for name in _METRICS},
    **{_key(metric.info.label): name for name, metric in _METRICS.items()},
    "epg": "energy_pointing_game",
    "pg": "pointing_game",
}


def resolve_metric_names(names: str | Iterable[str]) -> list[str]:
    """Canonical names, in the registry's order: "all", "paper" (the papers' table) or a list
    (names or column labels, e.g. "drop,ins,adcc"). ADCC brings its three components."""
    requested = names.split(",") if isinstance(names, str) else list(names)
    chosen: set[str] = set()
    for raw in requested:
        key = _key(raw.strip())
        if key == "all":
            chosen.update(_METRICS)
        elif key == "paper":
            chosen.update(PAPER_METRICS)
        elif key in _ALIASES:
            chosen.add(_ALIASES[key])
        else:
            raise OptionError(
                f"unknown metric '{raw.strip()}'; choose from all, paper, {', '.join(_METRICS)}"
            )
    if "adcc" in chosen:
        chosen.update(ADCC_COMPONENTS)
    if not chosen:
        raise OptionError("no metric given; name at least one, or 'all'")
    return [name for name in _METRICS if name in chosen]


@dataclass(frozen=True)
class MetricOptions:
    """The metrics' settings.

    batch_size: images per forward pass. step / steps / substrate / start: Deletion and
    Insertion's (see `Deletion`, `Insertion`). tolerance: the Pointing Game's.
    """

    batch_size: int = 32
    step: int | None = None
    steps: int | None = None
    substrate: str = "zeros"
    start: str = "blur"
    tolerance: int = 0


class MetricSuite:
    """Several metrics measured on the same batches.

    names: metric names (see `resolve_metric_names`).
    model: the scored model (default: the explainer's); explainer: re-run by Coherency/ADCC.
    options: the metrics' settings.
    """

    def __init__(
        self,
        names: str | Iterable[str],
        *,
        model: nn.Module | None = None,
        explainer: Explainer | None = None,
        options: MetricOptions = MetricOptions(),
    ) -> None:
        self.names = resolve_metric_names(names)
        model = model if model is not None else getattr(explainer, "model", None)
        needs_explainer = [n for n in self.names if _METRICS[n].info.needs_explainer]
        needs_model = [n for n in self.names if _METRICS[n].info.needs_model]
        if needs_explainer and explainer is None:
            raise OptionError(f"{needs_explainer[0]} needs the explainer that made the maps")
        if needs_model and model is None:
            raise OptionError(f"{needs_model[0]} needs the model")
        scored = cast(nn.Module, model)
        rerun = cast(Explainer, explainer)
        batch_size = options.batch_size
        causal: dict[str, Any] = {
            "step": options.step,
            "steps": options.steps,
            "batch_size": batch_size,
        }
        builders: dict[str, Any] = {
            "average_drop": lambda: AverageDrop(scored, batch_size=batch_size),
            "increase_in_confidence": lambda: IncreaseInConfidence(scored, batch_size=batch_size),
            "deletion": lambda: Deletion(scored, substrate=options.substrate, **causal),
            "insertion": lambda: Insertion(scored, start=options.start, **causal),
            "coherency": lambda: Coherency(rerun, batch_size=batch_size),
            "complexity": Complexity,
            "adcc": lambda: ADCC(rerun, model=scored, batch_size=batch_size),
            "pointing_game": lambda: PointingGame(tolerance=options.tolerance),
            "energy_pointing_game": EnergyPointingGame,
        }
        self.metrics: dict[str, Metric] = {name: builders[name]() for name in self.names}

    @property
    def needs_ground_truth(self) -> bool:
        return any(metric.info.needs_ground_truth for metric in self.metrics.values())

    def update(
        self,
        images: Tensor,
        maps: Tensor,
        targets: TargetSpec = None,
        ground_truth: Tensor | None = None,
        *,
        score: Scale = "softmax",
    ) -> dict[str, Tensor]:
        """Measure one batch with every metric; (B,) values by metric name."""
        batch = Batch.create(images, maps, targets, ground_truth, score=score)
        return {name: metric.update_batch(batch) for name, metric in self.metrics.items()}

    def curves(self, name: str) -> list[Tensor] | None:
        """The probability curves of "deletion" or "insertion" since the last reset, if run."""
        metric = self.metrics.get(name)
        return metric.curves if isinstance(metric, Deletion | Insertion) else None

    def values(self) -> dict[str, Tensor]:
        """(M,) per-image values of each metric."""
        return {name: metric.values for name, metric in self.metrics.items()}

    def compute(self) -> dict[str, float]:
        """The summary of every image seen (see `summarize`)."""
        return summarize(self.values())

    def reset(self) -> None:
        for metric in self.metrics.values():
            metric.reset()


def summarize(values: Mapping[str, Tensor | np.ndarray | Iterable[float]]) -> dict[str, float]:
    """Each metric's mean over images (NaN values skipped). With ADCC and its components, "adcc"
    is the table form (ADCC of the component means) and "adcc_mean_of_images" the mean of the
    per-image values."""
    means = {
        name: mean_of(torch.as_tensor(np.asarray(column, dtype=np.float64)))
        for name, column in values.items()
    }
    if "adcc" in means and all(name in means for name in ADCC_COMPONENTS):
        means[ADCC_MEAN_OF_IMAGES] = means["adcc"]
        components = (torch.tensor(means[name], dtype=torch.float64) for name in ADCC_COMPONENTS)
        means["adcc"] = float(adcc(*components))
    return means
