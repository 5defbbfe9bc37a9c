"""Methods by name: `methods()` lists them, `explainer(name, model, ...)` builds one.

Names are matched ignoring case, spaces, '-' and '_', with "plusplus" or a final "pp" read as
"++": "GradCAMPlusPlus", "grad-cam++" and "gradcampp" all mean "gradcam++".
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from ._model import check_hookable
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


def _key(name: str) -> str:
    key = "".join(name.lower().split()).replace("-", "").replace("_", "")
    key = key.replace("plusplus", "++")
    return key[:-2] + "++" if key.endswith("campp") else key


_BY_KEY = {_key(name): name for name in _METHODS}


def methods() -> list[str]:
    """The names `explainer` accepts."""
    return list(_METHODS)


def canonical_name(name: str) -> str:
    """The registered name a user's spelling means, or OptionError listing the methods."""
    registered = _BY_KEY.get(_key(name))
    if registered is None:
        raise OptionError(f"unknown method '{name}'; choose one of {', '.join(_METHODS)}")
    return registered


def method_for(name: str, model: nn.Module) -> str:
    """The registered method `name` means for `model` ("reciprocam" on a transformer: ViT's)."""
    key = canonical_name(name)
    if key == "reciprocam" and find_layout(check_hookable(model)) is not None:
        return "vit-reciprocam"
    return key


def method_options(name: str) -> list[str]:
    """The keyword options of method `name`."""
    parameters = inspect.signature(_METHODS[canonical_name(name)]).parameters.values()
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
