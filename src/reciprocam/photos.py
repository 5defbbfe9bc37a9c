"""Explaining photo files with a loaded model and writing an overlay and a map for each."""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ._model import class_probabilities
from .errors import ImageError, TargetError
from .explainer import Explanation, Targets
from .files import write_atomically
from .images import load_image
from .targets import TargetSpec, check_classes
from .visualize import crop_to_box, outline, overlay
from .zoo import Preprocessing


@dataclass(frozen=True)
class Prediction:
    """One class of a model's top-k: index, name and softmax probability."""

    index: int
    name: str
    probability: float


@dataclass(frozen=True)
class ExplainedMap:
    """One map of a photo: what it explains, the map, its overlay and the files written."""

    target: Prediction
    saliency: Tensor
    overlay: Image.Image
    overlay_path: Path
    map_path: Path


@dataclass(frozen=True)
class ExplainedPhoto:
    """What `explain_photos` made of one file: its top classes and one map per target.

    For a segmenter, `top` holds the classes the model predicts with their share of pixels,
    and each map's `target.probability` is its region's mean class probability.
    """

    path: Path
    photo: Image.Image
    top: list[Prediction]
    maps: list[ExplainedMap]


@dataclass(frozen=True)
class SkippedPhoto:
    """A file that could not be read, and why."""

    path: Path
    reason: str


def class_indices(text: str | None, categories: Sequence[str]) -> list[int] | None:
    """Classes given as comma-separated indices or names ("281,tabby cat") as indices, each
    checked against the model's classes; None stays None."""
    if text is None:
        return None
    names = [part.strip() for part in text.split(",")]
    if not all(names):
        raise TargetError(f"'{text}' has an empty class; give classes separated by commas")
    indices = [class_index(name, categories) for name in names]
    if categories:
        check_classes(torch.tensor(indices), len(categories))
    return indices


def class_index(value: str | int, categories: Sequence[str]) -> int:
    """A class given as an index or a name (case-insensitive) as an index."""
    if isinstance(value, int) or value.lstrip("-").isdigit():
        return int(value)
    lowered = [name.lower() for name in categories]
    if value.lower() in lowered:
        return lowered.index(value.lower())
    close = difflib.get_close_matches(value.lower(), lowered, n=3)
    hint = (
        f"; did you mean {', '.join(repr(categories[lowered.index(c)]) for c in close)}?"
        if close
        else ""
    )
    raise TargetError(f"the model has no class named '{value}'{hint}")


class PhotoExplainer(Protocol):
    """What explains a batch: an `Explainer`, or an `OnnxExplainer` on an exported file."""

    def explain(self, x: Tensor, targets: Targets = None) -> Explanation: ...


def explain_photos(
    paths: Sequence[Path],
    explainer: PhotoExplainer,
    output: Path,
    *,
    preprocessing: Preprocessing,
    categories: Sequence[str],
    method: str,
    device: torch.device,
    target: TargetSpec = None,
    top: int = 5,
    colormap: str = "jet",
    alpha: float = 0.5,
) -> Iterator[ExplainedPhoto | SkippedPhoto]:
    """Explain each photo; write `<stem>_<method>.png` (overlay) and `.npy` (map) into `output`,
    or `<stem>_<method>_<class>.png` and `.npy` for each of several targets per photo.

    The .npy map is float32 in [0, 1] at the model's input size, aligned with the centre crop
    that the model sees; the overlay shows that crop of the photo, with the outline of the
    explained region for a segmentation target. Unreadable files are yielded as SkippedPhoto
    and the run goes on.
    """
    used: set[str] = set()
    for path in paths:
        try:
            image = load_image(path)
        except ImageError as error:
            yield SkippedPhoto(path, str(error))
            continue
        tensor, box = preprocessing(image)
        explanation = explainer.explain(tensor[None].to(device), target)
        bound = explanation.target
        assert bound is not None  # every explainer binds its target
        scores = explanation.target_probabilities[0]
        maps = explanation.maps[0] if bound.stacked else explanation.maps
        photo = crop_to_box(image, box)
        stem = unique_stem(f"{path.stem}_{method}", used)
        explained = []
        for index, saliency in enumerate(maps):
            chosen = int(bound.indices[0, index])
            picture = overlay(photo, saliency, colormap=colormap, alpha=alpha)
            if bound.regions is not None:
                picture = outline(picture, bound.regions[0, index] > 0)
            name = f"{stem}_{chosen}" if bound.stacked else stem
            overlay_path, map_path = output / f"{name}.png", output / f"{name}.npy"
            values = saliency.float().cpu()
            write_atomically(overlay_path, partial(save_png, picture))
            write_atomically(map_path, partial(save_array, values.numpy()))
            explained.append(
                ExplainedMap(
                    _prediction(chosen, float(scores[index]), categories),
                    values,
                    picture,
                    overlay_path,
                    map_path,
                )
            )
        yield ExplainedPhoto(path, photo, top_predictions(explanation, top, categories), explained)


def top_predictions(
    explanation: Explanation, top: int, categories: Sequence[str]
) -> list[Prediction]:
    """The explained image's top classes (`top_classes` of its logits)."""
    return top_classes(explanation.logits, top, categories, multilabel=explanation.multilabel)


def top_classes(
    logits: Tensor, top: int, categories: Sequence[str], *, multilabel: bool = False
) -> list[Prediction]:
    """The top classes of one image's (1, N) logits, by probability (`class_probabilities`), or
    of a segmenter's (1, N, H, W) by their share of the pixels."""
    if logits.ndim > 2:
        predicted = logits.argmax(dim=1)[0].flatten()
        shares = torch.bincount(predicted, minlength=logits.shape[1]).float() / predicted.numel()
    else:
        shares = class_probabilities(logits, multilabel)[0].float()
    values, indices = shares.cpu().topk(min(top, shares.numel()))
    return [_prediction(int(i), float(v), categories) for v, i in zip(values, indices, strict=True)]


def _prediction(index: int, probability: float, categories: Sequence[str]) -> Prediction:
    return Prediction(index, category_name(index, categories), probability)


def category_name(index: int, categories: Sequence[str]) -> str:
    """The name of class `index`, or "class N" past the names known."""
    return categories[index] if index < len(categories) else f"class {index}"


def unique_stem(stem: str, used: set[str]) -> str:
    """`stem`, or `stem-2`, `stem-3`... if it is in `used` (to which the result is added)."""
    candidate, number = stem, 1
    while candidate in used:
        number += 1
        candidate = f"{stem}-{number}"
    used.add(candidate)
    return candidate


def save_png(image: Image.Image, path: Path) -> None:
    image.save(path, format="PNG")


def save_array(values: np.ndarray, path: Path) -> None:
    with path.open("wb") as handle:
        np.save(handle, values.astype(np.float32))
