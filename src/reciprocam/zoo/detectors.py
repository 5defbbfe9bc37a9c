"""Loading a detector by name: torchvision's detection models and the Shapes detector."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import torchvision
from torch import Tensor, nn

from ..errors import ModelError
from .checkpoints import load_state
from .loading import checkpoint_state, torchvision_weights

SHAPES_DETECTOR = "shapes_detector"
# torchvision's detectors are built for COCO's 91 labels (0 the background) by default.
_COCO_LABELS = 91


@dataclass(frozen=True)
class LoadedDetector:
    """A detector in eval mode, its label names (index = label) and whether it is trained."""

    name: str
    model: nn.Module
    categories: tuple[str, ...]
    pretrained: bool


def detector_names() -> list[str]:
    """Every name `load_detector` accepts."""
    names: list[str] = torchvision.models.list_models(module=torchvision.models.detection)
    return [SHAPES_DETECTOR, *names]


def load_detector(
    name: str, *, weights: str | None = None, checkpoint: str | Path | None = None
) -> LoadedDetector:
    """Build detector `name` in eval mode: random weights, torchvision's `weights` (downloaded),
    or a state_dict `checkpoint` (its label count read from the file)."""
    state = checkpoint_state(weights, checkpoint)
    if name == SHAPES_DETECTOR:
        return _shapes_detector(weights, state, checkpoint)
    if name not in detector_names():
        close = difflib.get_close_matches(name, detector_names(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ModelError(f"unknown detector '{name}'{hint} (torchvision detection models)")
    default = torchvision.models.get_model_weights(name).DEFAULT
    # The backbone would otherwise fetch ImageNet weights of its own.
    if state is None:
        chosen = torchvision_weights(name, weights) if weights is not None else None
        try:
            model = torchvision.models.get_model(name, weights=chosen, weights_backbone=None)
        except (OSError, RuntimeError) as error:
            raise ModelError(
                f"could not download the {chosen} weights of {name} ({error}); without internet,"
                " load a state_dict file (--checkpoint FILE), or use random weights (no --weights)"
            ) from None
        categories = tuple((chosen or default).meta["categories"])
        return LoadedDetector(name, model.eval(), categories, chosen is not None)
    model = torchvision.models.get_model(name, weights_backbone=None)
    labels = _checkpoint_labels(model, state)
    if labels != _COCO_LABELS:
        model = torchvision.models.get_model(name, weights_backbone=None, num_classes=labels)
    load_state(model, state, checkpoint)
    categories = tuple(default.meta["categories"]) if labels == _COCO_LABELS else _numbered(labels)
    return LoadedDetector(name, model.eval(), categories, True)


def _checkpoint_labels(model: nn.Module, state: dict[str, Tensor]) -> int:
    """The checkpoint's label count: a classification weight's rows are anchors x labels, so
    their ratio to the COCO model's gives it."""
    own = model.state_dict()
    for key, value in own.items():
        classifying = "cls" in key or "classification" in key
        if classifying and key.endswith("weight") and key in state:
            rows = state[key].shape[0]
            if rows != value.shape[0]:
                return int(rows * _COCO_LABELS // value.shape[0])
    return _COCO_LABELS


def _numbered(labels: int) -> tuple[str, ...]:
    return ("background", *(f"class {index}" for index in range(1, labels)))


def _shapes_detector(
    weights: str | None, state: dict[str, Tensor] | None, source: object
) -> LoadedDetector:
    """The Shapes detector (`reciprocam.synthetic.detector`) with its trained weights."""
    from ..synthetic.detection import DETECTION_LABELS
    from ..synthetic.detector import shapes_detector

    if weights is not None:
        raise ModelError(f"{SHAPES_DETECTOR} comes with its own weights; give no --weights")
    model = shapes_detector()
    if state is not None:
        load_state(model, state, source)
    return LoadedDetector(SHAPES_DETECTOR, model, DETECTION_LABELS, True)
