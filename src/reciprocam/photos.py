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

from .errors import ImageError, TargetError
from .explainer import Explanation, Targets
from .files import write_atomically
from .images import load_image
from .visualize import crop_to_box, overlay
from .zoo import Preprocessing


@dataclass(frozen=True)
class Prediction:
    """One class of a model's top-k: index, name and softmax probability."""

    index: int
    name: str
    probability: float


@dataclass(frozen=True)
class ExplainedPhoto:
    """What `explain_photos` made of one file."""

    path: Path
    photo: Image.Image
    overlay: Image.Image
    top: list[Prediction]
    target: Prediction
    saliency: Tensor
    overlay_path: Path
    map_path: Path


@dataclass(frozen=True)
class SkippedPhoto:
    """A file that could not be read, and why."""

    path: Path
    reason: str


def class_index(value: str | int | None, categories: Sequence[str]) -> int | None:
    """A class given as an index or a name (case-insensitive) as an index; None stays None."""
    if value is None:
        return None
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
    target: int | None = None,
    top: int = 5,
    colormap: str = "jet",
    alpha: float = 0.5,
) -> Iterator[ExplainedPhoto | SkippedPhoto]:
    """Explain each photo; write `<stem>_<method>.png` (overlay) and `.npy` (map) into `output`.

    The .npy map is float32 in [0, 1] at the model's input size, aligned with the centre crop
    that the model sees; the overlay shows that crop of the photo. Unreadable files are
    yielded as SkippedPhoto and the run goes on.
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
        chosen = int(explanation.targets[0])
        probabilities = explanation.probabilities[0].float().cpu()
        values, indices = probabilities.topk(min(top, probabilities.numel()))
        stem = _unique_stem(f"{path.stem}_{method}", used)
        photo = crop_to_box(image, box)
        picture = overlay(photo, explanation.maps[0], colormap=colormap, alpha=alpha)
        overlay_path, map_path = output / f"{stem}.png", output / f"{stem}.npy"
        saliency = explanation.maps[0].float().cpu()
        write_atomically(overlay_path, partial(_save_png, picture))
        write_atomically(map_path, partial(_save_array, saliency.numpy()))
        yield ExplainedPhoto(
            path=path,
            photo=photo,
            overlay=picture,
            top=[
                _prediction(int(i), float(v), categories)
                for v, i in zip(values, indices, strict=True)
            ],
            target=_prediction(chosen, float(probabilities[chosen]), categories),
            saliency=saliency,
            overlay_path=overlay_path,
            map_path=map_path,
        )


def _prediction(index: int, probability: float, categories: Sequence[str]) -> Prediction:
    name = categories[index] if index < len(categories) else f"class {index}"
    return Prediction(index, name, probability)


def _unique_stem(stem: str, used: set[str]) -> str:
    candidate, number = stem, 1
    while candidate in used:
        number += 1
        candidate = f"{stem}-{number}"
    used.add(candidate)
    return candidate


def _save_png(image: Image.Image, path: Path) -> None:
    image.save(path, format="PNG")


def _save_array(values: np.ndarray, path: Path) -> None:
    with path.open("wb") as handle:
        np.save(handle, values.astype(np.float32))
