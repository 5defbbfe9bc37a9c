"""reciprocam: fast, faithful class activation maps for PyTorch vision models."""

from .errors import (
    ImageError,
    InputError,
    LayerError,
    ModelError,
    OptionError,
    OutputError,
    ReciproCAMError,
    TargetError,
)
from .explainer import Explainer, Explanation
from .layers import TargetLayer
from .methods import (
    CAM,
    RISE,
    AblationCAM,
    EigenCAM,
    EigenGradCAM,
    FullGrad,
    GradCAM,
    GradCAMPlusPlus,
    GuidedBackprop,
    GuidedGradCAM,
    GuidedGradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ReciproCAM,
    ScoreCAM,
    SmoothGradCAMPlusPlus,
    ViTReciproCAM,
    XGradCAM,
)
from .onnx import export_onnx
from .registry import explainer, methods

__version__ = "0.1.0"

__all__ = [
    "CAM",
    "RISE",
    "AblationCAM",
    "EigenCAM",
    "EigenGradCAM",
    "Explainer",
    "Explanation",
    "FullGrad",
    "GradCAM",
    "GradCAMPlusPlus",
    "GuidedBackprop",
    "GuidedGradCAM",
    "GuidedGradCAMPlusPlus",
    "HiResCAM",
    "ImageError",
    "InputError",
    "LayerCAM",
    "LayerError",
    "ModelError",
    "OptionError",
    "OutputError",
    "ReciproCAM",
    "ReciproCAMError",
    "ScoreCAM",
    "SmoothGradCAMPlusPlus",
    "TargetError",
    "TargetLayer",
    "ViTReciproCAM",
    "XGradCAM",
    "__version__",
    "explainer",
    "export_onnx",
    "methods",
]
