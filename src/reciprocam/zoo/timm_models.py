"""timm models by name ("timm:deit_small_patch16_224"), with timm's own preprocessing."""

from __future__ import annotations

import difflib
import socket
from collections.abc import Mapping
from typing import Any

from torch import Tensor
from torchvision.transforms import InterpolationMode

from ..errors import ModelError
from .checkpoints import checkpoint_classes, load_state
from .loaded import IMAGENET_CATEGORIES, LoadedModel
from .preprocessing import Preprocessing

TIMM_PREFIX = "timm:"


def load_timm(
    name: str, weights: str | None, state: Mapping[str, Tensor] | None, source: object
) -> LoadedModel:
    """A timm model in eval mode: random, pretrained (weights="DEFAULT") or from a state_dict."""
    try:
        import timm
        from timm.data.config import resolve_data_config
    except ImportError:
        raise ModelError("timm models need timm: pip install 'reciprocam[timm]'") from None
    architecture = name.removeprefix(TIMM_PREFIX)
    if not timm.is_model(architecture):
        close = difflib.get_close_matches(architecture, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(TIMM_PREFIX + c for c in close)}?" if close else ""
        raise ModelError(f"timm has no model '{architecture}'{hint}")
    if weights is not None and weights.upper() != "DEFAULT":
        raise ModelError(
            f"timm models take weights DEFAULT (their pretrained weights); choose a pretrained"
            f" tag in the name instead, e.g. {TIMM_PREFIX}{architecture}.<tag>"
        )
    if weights is not None:
        _check_reachable(timm, architecture)
    try:
        model = timm.create_model(architecture, pretrained=weights is not None)
    except (OSError, RuntimeError) as error:
        raise ModelError(
            f"could not download the pretrained weights of {architecture} ({error}); without"
            " internet, load a state_dict file (--checkpoint FILE), or use random weights"
        ) from None
    classes: int = model.num_classes  # type: ignore[assignment]
    if state is not None:
        classes = checkpoint_classes(model, state)
        if classes != model.num_classes:
            model = timm.create_model(architecture, num_classes=classes)
        load_state(model, state, source)
    config = resolve_data_config({}, model=model)  # type: ignore[no-untyped-call]
    height = int(config["input_size"][1])
    preprocessing = Preprocessing(
        resize=int(height / config["crop_pct"]),
        crop=height,
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
        interpolation=InterpolationMode(config["interpolation"]),
    )
    categories = (
        IMAGENET_CATEGORIES
        if classes == len(IMAGENET_CATEGORIES)
        else tuple(f"class {index}" for index in range(classes))
    )
    return LoadedModel(
        name, model.eval(), preprocessing, categories, weights is not None or state is not None
    )


def _check_reachable(timm: Any, architecture: str) -> None:
    """ModelError at once when the weights are neither cached nor downloadable (offline), rather
    than after a minute of Hugging Face retries."""
    config = timm.models.get_pretrained_cfg(architecture)
    repository = getattr(config, "hf_hub_id", None)
    if not repository:
        return  # weights from a URL: torch's download fails fast on its own
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        if isinstance(try_to_load_from_cache(repository, filename), str):
            return
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
    except OSError:
        raise ModelError(
            f"the pretrained weights of {architecture} are not in the Hugging Face cache and"
            " huggingface.co cannot be reached; connect to the internet, load a state_dict file"
            " (--checkpoint FILE), or use random weights (no --weights)"
        ) from None
