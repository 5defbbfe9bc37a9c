"""Methods by name: `methods()` lists them, `explainer(name, model, ...)` builds one."""

from __future__ import annotations

from typing import Any

from torch import nn

from .errors import OptionError
from .explainer import Explainer
from .layers import LayerSpecs
from .methods import ReciproCAM, ViTReciproCAM
from .vit import find_layout

_METHODS: dict[str, type[Explainer]] = {
    "reciprocam": ReciproCAM,
    "vit-reciprocam": ViTReciproCAM,
}


def methods() -> list[str]:
    """The names `explainer` accepts (case, '-' and '_' do not matter)."""
    return list(_METHODS)


def canonical_name(name: str) -> str:
    """The registered name a user's spelling means, or OptionError listing the methods."""
    key = name.strip().lower().replace("_", "-")
    if key == "vitreciprocam":
        key = "vit-reciprocam"
    if key not in _METHODS:
        raise OptionError(f"unknown method '{name}'; choose one of {', '.join(_METHODS)}")
    return key


def explainer(
    name: str, model: nn.Module, target_layer: LayerSpecs = None, **options: Any
) -> Explainer:
    """Build method `name` for `model` ("reciprocam" on a vision transformer: ViT-ReciproCAM)."""
    key = canonical_name(name)
    if key == "reciprocam" and find_layout(model) is not None:
        key = "vit-reciprocam"
    return _METHODS[key](model, target_layer, **options)
