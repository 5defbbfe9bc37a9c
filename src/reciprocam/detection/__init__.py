"""Explaining object detectors: one map per detected (or given) box.

`DetReciproCAM` masks the feature pyramid one region at a time and scores every box from one
batch of head passes; `DRISE`, `DetGradCAM`, `ODAM`, `DetEigenCAM` and `DetAblationCAM` are the
baselines on the same box targets; `reciprocam.detection.metrics` scores the maps.
"""

from .ablation_cam import DetAblationCAM
from .boxes import BoxTargets, pairwise_iou
from .detectors import Candidates, Detector, as_detector
from .drise import DRISE
from .eigen_cam import DetEigenCAM
from .explainer import DetectionExplainer, DetectionExplanation
from .gradients import ODAM, DetGradCAM
from .reciprocam import DetReciproCAM

__all__ = [
    "DRISE",
    "ODAM",
    "BoxTargets",
    "Candidates",
    "DetAblationCAM",
    "DetEigenCAM",
    "DetGradCAM",
    "DetReciproCAM",
    "DetectionExplainer",
    "DetectionExplanation",
    "Detector",
    "as_detector",
    "pairwise_iou",
]
