"""Methods by name: `methods()` lists them, `explainer(name, model, ...)` builds one, and
`detection_explainer(name, detector, ...)` builds a method's detection counterpart.

Names are matched ignoring case, spaces, '-' and '_', with "plusplus" or a final "pp" read as
"++": "GradCAMPlusPlus", "grad-cam++" and "gradcampp" all mean "gradcam++".
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from ._model import check_hookable
from .detection import (
    DRISE,
    ODAM,
    DetAblationCAM,
    DetectionExplainer,
    DetEigenCAM,
    DetGradCAM,
    DetReciproCAM,
)
from .errors import OptionError
from .explainer import Explainer
from .layers import LayerSpecs
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
from .names import canonical_name
from .vit import find_layout

_METHODS: dict[str, type[Explainer]] = {
    "reciprocam": ReciproCAM,
    "vit-reciprocam": ViTReciproCAM,
    "cam": CAM,
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "smooth-gradcam++": SmoothGradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "hirescam": HiResCAM,
    "layercam": LayerCAM,
    "scorecam": ScoreCAM,
    "ablationcam": AblationCAM,
    "eigencam": EigenCAM,
    "eigengradcam": EigenGradCAM,
    "fullgrad": FullGrad,
    "rise": RISE,
    "guided-backprop": GuidedBackprop,
    "guided-gradcam": GuidedGradCAM,
    "guided-gradcam++": GuidedGradCAMPlusPlus,
}

# The methods that explain a detector's boxes (`reciprocam.detection`), by the name of the
# classification method they carry over ("rise" is D-RISE).
_DETECTION_METHODS: dict[str, type[DetectionExplainer]] = {
    "reciprocam": DetReciproCAM,
    "rise": DRISE,
    "drise": DRISE,
    "gradcam": DetGradCAM,
    "odam": ODAM,
    "eigencam": DetEigenCAM,
    "ablationcam": DetAblationCAM,
}


def methods() -> list[str]:
    """The names `explainer` accepts."""
    return list(_METHODS)


def detection_methods() -> list[str]:
    """The names `detection_explainer` accepts."""
    return list(_DETECTION_METHODS)


def detection_explainer(name: str, model: nn.Module, **options: Any) -> DetectionExplainer:
    """Build the detection counterpart of method `name` for a torchvision detector; an option
    the method does not take is an OptionError."""
    key = canonical_name(name)
    if key not in _DETECTION_METHODS:
        raise OptionError(
            f"{key} has no detection counterpart; detectors are explained by"
            f" {', '.join(_DETECTION_METHODS)}"
        )
    method = _DETECTION_METHODS[key]
    accepted = _keyword_options(method)
    unknown = [option for option in options if option not in accepted]
    if unknown:
        raise OptionError(
            f"{key} takes no option '{unknown[0]}' on a detector; its options are"
            f" {', '.join(accepted)}"
        )
    return method(model, **options)


def method_for(name: str, model: nn.Module) -> str:
    """The registered method `name` means for `model` ("reciprocam" on a transformer: ViT's)."""
    key = _classification_name(name)
    if key == "reciprocam" and find_layout(check_hookable(model)) is not None:
        return "vit-reciprocam"
    return key


def mask_name(mask: str, method: str) -> str:
    """A mask as `method` spells it: "pixel" (ReciproCAM) and "token" (ViT-ReciproCAM) are one
    mask, one position kept per copy."""
    if mask in ("pixel", "token"):
        return "token" if method == "vit-reciprocam" else "pixel"
    return mask


def method_options(name: str) -> list[str]:
    """The keyword options of method `name`."""
    return _keyword_options(_METHODS[_classification_name(name)])


def _classification_name(name: str) -> str:
    key = canonical_name(name)
    if key not in _METHODS:
        raise OptionError(f"{key} explains detectors; give --task detection and a detector")
    return key


def _keyword_options(method: type) -> list[str]:
    parameters = inspect.signature(method).parameters.values()
    return [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]


def explainer(
    name: str, model: nn.Module, target_layer: LayerSpecs = None, **options: Any
) -> Explainer:
    """Build method `name` for `model` ("reciprocam" on a vision transformer: ViT-ReciproCAM).

    Options are the method's keyword arguments; one it does not take is an OptionError.
    """
    key = method_for(name, model)
    accepted = method_options(key)
    unknown = [option for option in options if option not in accepted]
    if unknown:
        raise OptionError(
            f"{key} takes no option '{unknown[0]}'; its options are {', '.join(accepted)}"
        )
    return _METHODS[key](model, target_layer, **options)
