"""reciprocam: fast, faithful class activation maps for PyTorch vision models."""

from .errors import (
    ImageError,
    InputError,
    LayerError,
    ModelError,
    OptionError,
    ReciproCAMError,
    TargetError,
)
from .explainer import Explainer, Explanation
from .layers import TargetLayer
from .methods import ReciproCAM, ViTReciproCAM
from .registry import explainer, methods

__version__ = "0.1.0"

__all__ = [
    "Explainer",
    "Explanation",
    "ImageError",
    "InputError",
    "LayerError",
    "ModelError",
    "OptionError",
    "ReciproCAM",
    "ReciproCAMError",
    "TargetError",
    "TargetLayer",
    "ViTReciproCAM",
    "__version__",
    "explainer",
    "methods",
]
