"""reciprocam: fast, faithful class activation maps for PyTorch vision models."""

from __future__ import annotations

import importlib
import sys
import types

from .errors import (
    ImageError,
    InputError,
    LayerError,
    ModelError,
    NoDetectionError,
    OptionError,
    OutputError,
    ReciproCAMError,
    TargetError,
)

# typing.TYPE_CHECKING without importing typing, which the command line does not need.
TYPE_CHECKING = False
if TYPE_CHECKING:
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
    "NoDetectionError",
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

# The module each name that needs torch comes from, imported on first use (PEP 562), so that
# `import reciprocam` and the command line's --help answer at once: the public names below,
# and every other one of __all__ (the method classes) from .methods. They are the
# TYPE_CHECKING imports above (tests/test_cli_startup.py checks that they agree).
_LAZY = {
    "Explainer": "explainer",
    "Explanation": "explainer",
    "TargetLayer": "layers",
    "export_onnx": "onnx",
    "explainer": "registry",
    "methods": "registry",
}


def _source(name: str) -> str | None:
    """The submodule that `name`, a public name not yet imported, comes from; None if it is
    not public."""
    return _LAZY.get(name, "methods" if name in __all__ else None)


# Under `if not TYPE_CHECKING`, so that mypy still flags a mistyped attribute of the package.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        source = _source(name)
        if source is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{source}", __name__), name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """This package, keeping the functions `explainer` and `methods` over its submodules of
    those names: importing a submodule sets it as an attribute of the package, which would
    otherwise hide the function once the registry is loaded."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in ("explainer", "methods") and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
