"""Explaining one photo with one method at a time: the library's overlay and map files, the raw
grid, the time it took, and the photo's Deletion and Insertion curves."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from .._model import model_lock, model_output
from ..errors import ImageError
from ..explainer import Explainer, Explanation, Targets, upsample_maps
from ..images import load_image
from ..layers import spatial_layers
from ..layout import grid_text
from ..metrics import Deletion, Insertion
from ..photos import ExplainedMap, Prediction, SkippedPhoto, explain_photos, top_classes
from ..registry import explainer, mask_name, method_for, method_options
from ..targets import Region, TargetSpec
from ..zoo import LoadedModel, load_model
from .loaded import LoadedOnce

TOP = 5
"""How many of an input's most probable classes the page offers as buttons."""
_CACHED_EXPLAINERS = 32  # explainers kept (with their resolved layers), the oldest dropped first


def class_choices(categories: Sequence[str]) -> list[tuple[str, int]]:
    """A class dropdown's choices: each class by name and index ("tabby (281)")."""
    return [(f"{name} ({index})", index) for index, name in enumerate(categories)]


@dataclass(frozen=True)
class Settings:
    """What the page asks of every method: a target layer (None: automatic), and the mask and
    score (None: the method's default; each applies only to the methods that take it)."""

    layer: str | None = None
    mask: str | None = None
    score: str | None = None
    curves: bool = True


@dataclass(frozen=True)
class Curve:
    """One causal curve of a photo: the target's probability as the top pixels change."""

    fractions: Tensor  # (n + 1,) the share of pixels changed after each step
    probabilities: Tensor  # (n + 1,)
    auc: float


@dataclass(frozen=True)
class MethodResult:
    """One method's explanation of the photo, as `reciprocam explain` writes it, and more."""

    method: str
    explained: ExplainedMap
    grid: Tensor  # (h, w) the map at the target layer's grid, before upsampling
    seconds: float
    deletion: Curve | None
    insertion: Curve | None


class _Recording:
    """An explainer that explains at the feature grid, upsamples as `Explainer.explain` does,
    and keeps its last call's input, grid maps, explanation and time."""

    def __init__(self, explainer: Explainer) -> None:
        self.explainer = explainer
        self.seconds = 0.0
        self.x: Tensor | None = None
        self.grid: Tensor | None = None
        self.explanation: Explanation | None = None

    def explain(self, x: Tensor, targets: Targets = None) -> Explanation:
        start = time.perf_counter()
        explanation = self.explainer.explain(x, targets)
        grid = explanation.maps
        size = tuple(x.shape[2:])
        maps = grid if tuple(grid.shape[-2:]) == size else upsample_maps(grid, size)
        self.seconds = time.perf_counter() - start
        self.x, self.grid = x, grid
        self.explanation = replace(explanation, maps=maps)
        return self.explanation


class Explorer:
    """A model loaded once, shared by every request: its classes, candidate layers, and the
    explainers built so far (each keeps the layers it resolved). Requests use the model one
    at a time, under its `model_lock`: a forward pass in another thread would run through an
    explanation's hooks."""

    def __init__(self, loaded: LoadedModel, device: torch.device) -> None:
        self.loaded = loaded
        self.device = device
        loaded.model.to(device)
        side = loaded.preprocessing.crop
        blank = loaded.preprocessing(Image.new("RGB", (side, side)))[0][None].to(device)
        self.layers = [
            (f"{layer.name} ({grid_text(layout.grid)})", layer.name)
            for layer in spatial_layers(loaded.model, blank)
            if (layout := layer.layout) is not None  # always: they are the spatial ones
        ]
        with torch.inference_mode():
            self.segmenter = model_output(loaded.model, blank).ndim > 2
        self._explainers = LoadedOnce(
            self._explainer, kept=_CACHED_EXPLAINERS, drop=Explainer.close
        )

    def predict(self, path: Path) -> tuple[Image.Image, list[Prediction]]:
        """The photo at `path` (ImageError if unreadable) and the model's top classes on it."""
        image = load_image(path)
        x = self.loaded.preprocessing(image)[0][None].to(self.device)
        with model_lock(self.loaded.model), torch.inference_mode():
            logits = model_output(self.loaded.model, x)
        return image, top_classes(logits, TOP, self.loaded.categories)

    def target(self, index: int) -> TargetSpec:
        """Class `index`; for a segmenter, the region of the pixels it gives the class."""
        return Region(index) if self.segmenter else index

    def explain(
        self, path: Path, method: str, index: int, settings: Settings, output: Path
    ) -> MethodResult:
        """Explain class `index` of the photo with `method`, writing its overlay and map into
        `output` as `reciprocam explain` does; ImageError if the photo cannot be read."""
        with model_lock(self.loaded.model):
            return self._explain(
                path, method_for(method, self.loaded.model), index, settings, output
            )

    def _explain(
        self, path: Path, name: str, index: int, settings: Settings, output: Path
    ) -> MethodResult:
        key = (name, settings.layer, settings.mask, settings.score)
        recording = _Recording(self._explainers[key])
        [photo] = explain_photos(
            [path],
            recording,
            output,
            preprocessing=self.loaded.preprocessing,
            categories=self.loaded.categories,
            method=name,
            device=self.device,
            target=self.target(index),
        )
        if isinstance(photo, SkippedPhoto):
            raise ImageError(photo.reason)
        assert recording.x is not None
        assert recording.grid is not None
        assert recording.explanation is not None
        deletion, insertion = (
            self._curves(recording.x, recording.explanation) if settings.curves else (None, None)
        )
        return MethodResult(
            name, photo.maps[0], recording.grid[0].cpu(), recording.seconds, deletion, insertion
        )

    def _explainer(self, key: tuple[str, str | None, str | None, str | None]) -> Explainer:
        """The explainer of (method, layer, mask, score), each option given only where the
        method takes it."""
        name, layer, mask, score = key
        accepted = method_options(name)
        given = {
            "mask": None if mask is None else mask_name(mask, name),
            "score": score,
            "progress": False,
        }
        options = {k: v for k, v in given.items() if v is not None and k in accepted}
        return explainer(name, self.loaded.model, layer, upsample=False, **options)

    def _curves(self, x: Tensor, explanation: Explanation) -> tuple[Curve, Curve]:
        """The photo's Deletion and Insertion curves (RISE's protocol) and their AUCs."""
        height, width = x.shape[-2:]
        curves = []
        for metric in (Deletion(self.loaded.model), Insertion(self.loaded.model)):
            auc = metric.update(x, explanation.maps, explanation.target, score=explanation.scale)
            fractions = metric.pixel_counts(height, width).double() / (height * width)
            curves.append(Curve(fractions, metric.curves[0], float(auc[0])))
        return curves[0], curves[1]


class Models(LoadedOnce[str, Explorer]):
    """The models a page offers by name, each loaded (with its Explorer) once, when first
    chosen: the page's own (`first`, with `checkpoint`, loaded now), the `others` listed, and
    any name `load_model` takes, with its pretrained weights. At most `kept` stay loaded
    besides the first."""

    def __init__(
        self,
        first: LoadedModel | str | None,
        checkpoint: Path | None,
        others: Sequence[LoadedModel | str],
        device: torch.device,
        kept: int = 2,
    ) -> None:
        loaded = (
            first if isinstance(first, LoadedModel) else load_model(first, checkpoint=checkpoint)
        )
        listed = {_name(other): other for other in others if _name(other) != loaded.name}
        self.names = [loaded.name, *listed]

        def load(name: str) -> Explorer:
            source = listed.get(name)
            if isinstance(source, LoadedModel):
                return Explorer(source, device)
            return Explorer(load_model(name, weights=None if source else "DEFAULT"), device)

        first_explorer = Explorer(loaded, device)
        super().__init__(load, kept=kept, permanent={loaded.name: first_explorer})

    def __getitem__(self, name: str) -> Explorer:
        """The Explorer of model `name` ("": the first); a ModelError if it cannot load."""
        return super().__getitem__(name or self.names[0])


def _name(model: LoadedModel | str) -> str:
    return model if isinstance(model, str) else model.name
