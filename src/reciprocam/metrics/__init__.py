"""The ReciproCAM papers' evaluation: faithfulness, complexity and localisation metrics.

Each metric streams: `update(images, maps, targets, ground_truth)` per batch returns the
(B,) per-image values, `compute()` the summary, `reset()` starts over. `MetricSuite` runs
several on shared forwards. The protocols (top-1 class, maps at the input size in [0, 1],
masking in the normalised space, RISE's Deletion/Insertion) are the project's DECISIONS.
"""

from ..names import PAPER_METRICS
from .adcc import ADCC, Coherency, Complexity, adcc, pearson
from .base import Metric, MetricInfo
from .batch import Batch
from .causal import Deletion, Insertion, area_under_curve, rise_blur, rise_kernel
from .confidence import AverageDrop, IncreaseInConfidence, average_drop
from .pointing import EnergyPointingGame, PointingGame, boxes_to_mask
from .suite import (
    ADCC_MEAN_OF_IMAGES,
    MetricOptions,
    MetricSuite,
    metric_info,
    metric_names,
    resolve_metric_names,
    summarize,
)

__all__ = [
    "ADCC",
    "ADCC_MEAN_OF_IMAGES",
    "PAPER_METRICS",
    "AverageDrop",
    "Batch",
    "Coherency",
    "Complexity",
    "Deletion",
    "EnergyPointingGame",
    "IncreaseInConfidence",
    "Insertion",
    "Metric",
    "MetricInfo",
    "MetricOptions",
    "MetricSuite",
    "PointingGame",
    "adcc",
    "area_under_curve",
    "average_drop",
    "boxes_to_mask",
    "metric_info",
    "metric_names",
    "pearson",
    "resolve_metric_names",
    "rise_blur",
    "rise_kernel",
    "summarize",
]
