"""Explanation methods: one module per method or family."""

from .ablation_cam import AblationCAM
from .cam import CAM
from .eigen_cam import EigenCAM, EigenGradCAM
from .fullgrad import FullGrad
from .gradient_cams import (
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    SmoothGradCAMPlusPlus,
    XGradCAM,
)
from .guided import GuidedBackprop, GuidedGradCAM, GuidedGradCAMPlusPlus
from .reciprocam import ReciproCAM
from .rise import RISE
from .score_cam import ScoreCAM
from .vit_reciprocam import ViTReciproCAM

__all__ = [
    "CAM",
    "RISE",
    "AblationCAM",
    "EigenCAM",
    "EigenGradCAM",
    "FullGrad",
    "GradCAM",
    "GradCAMPlusPlus",
    "GuidedBackprop",
    "GuidedGradCAM",
    "GuidedGradCAMPlusPlus",
    "HiResCAM",
    "LayerCAM",
    "ReciproCAM",
    "ScoreCAM",
    "SmoothGradCAMPlusPlus",
    "ViTReciproCAM",
    "XGradCAM",
]
