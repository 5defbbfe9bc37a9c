"""The base of the detection explainers: one image, its target boxes, one map per box.

`DetectionExplainer.explain(image, boxes=None)` runs the model on a (3, H, W) image in [0, 1]
(torchvision's detector input), binds the targets (the detections scoring at least
`threshold`, or the boxes given; `reciprocam.detection.boxes`) and asks the method for one raw
map per target. The base owns what every method shares: the model in eval mode for the call
(each submodule's flag restored), no hooks (the model's parts are called as they are), the
batching of copies through the rest of the detector (`batch_size`, a progress bar), the
choice of the reference level, and the maps' way back to the image: a map over a feature grid
covers the transform's padded frame, so it is upsampled to that frame, cropped to the resized
image and resized to the original one, then min-max normalised per box.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from .._model import evaluation_mode
from ..errors import InputError, LayerError, OptionError
from ..explainer import normalize_maps
from ..options import positive_or_none
from .boxes import BoxSpec, BoxTargets, detected_targets, given_targets
from .detectors import Candidates, Detector, Levels, Prepared, as_detector

# The reference level is the coarsest whose grid has at least this many positions on its
# shorter side (ReciproCAM's 7x7 grid of a 224 classifier, a little finer for boxes).
REFERENCE_SIDE = 8
# Automatic batch_size: as many copies per pass as keep their pyramid levels within this.
_AUTO_BATCH_BYTES = 64 * 2**20


@dataclass(frozen=True)
class DetectionExplanation:
    """One map per target box of one image.

    maps: (T, H, W) in [0, 1] at the image's size.
    boxes, labels, scores: (T, 4) x1 y1 x2 y2 in pixels, (T,) labels, (T,) the detections'
        scores (NaN for boxes given).
    raw: (T, h, w) the method's raw maps, over the feature grid (or the image for D-RISE).
    detections: the model's own output on the image ({"boxes", "labels", "scores"}).
    reference_level: the name of the pyramid level whose grid the maps use ("" for D-RISE).
    """

    maps: Tensor
    boxes: Tensor
    labels: Tensor
    scores: Tensor
    raw: Tensor
    detections: dict[str, Tensor]
    reference_level: str


@dataclass(frozen=True)
class Context:
    """What a method is given: the image, its prepared form, levels, targets, candidates."""

    image: Tensor  # (3, H, W)
    prepared: Prepared
    levels: Levels  # the unmasked image's levels, (1, C, h, w) each
    reference: str  # the reference level's name
    targets: BoxTargets
    candidates: Candidates  # the unmasked image's


def check_image(image: object) -> Tensor:
    """A finite (3, H, W) float image (a (1, 3, H, W) batch of one is accepted)."""
    if not isinstance(image, Tensor):
        raise InputError(f"the image must be a torch.Tensor (3, H, W), not {type(image).__name__}")
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 3 or image.shape[0] != 3 or min(image.shape) == 0:
        raise InputError(
            f"a detector explains one (3, H, W) RGB image at a time, got {tuple(image.shape)}"
        )
    if not image.is_floating_point():
        raise InputError(
            f"the image has dtype {image.dtype}; give floats in [0, 1] (torchvision detectors"
            " normalise it themselves)"
        )
    if not bool(torch.isfinite(image).all()):
        raise InputError("the image contains NaN or infinite values")
    return image


def reference_level(levels: Levels, name: str | None) -> str:
    """`name`, or the coarsest level with >= REFERENCE_SIDE positions on its shorter side
    (the finest level if none has)."""
    if name is not None:
        if name not in levels:
            raise LayerError(
                f"the detector has no pyramid level {name!r}; its levels are {list(levels)}"
            )
        return name
    sides = {key: min(level.shape[-2:]) for key, level in levels.items()}
    large = [key for key, side in sides.items() if side >= REFERENCE_SIDE]
    if not large:
        return max(sides, key=lambda key: sides[key])
    return min(large, key=lambda key: sides[key])


def grid(level: Tensor) -> tuple[int, int]:
    """(h, w) of a (..., h, w) level."""
    return int(level.shape[-2]), int(level.shape[-1])


def stacked_levels(levels: Levels, size: tuple[int, int]) -> Tensor:
    """(n, sum C, h, w) every level resized bilinearly to `size` and concatenated on channels:
    pytorch-grad-cam's view of a feature pyramid as one layer."""
    resized = [
        level if grid(level) == size else F.interpolate(level, size, mode="bilinear")
        for level in levels.values()
    ]
    return torch.cat(resized, dim=1)


class DetectionExplainer(ABC):
    """Base class: `explainer.explain(image, boxes)` gives one map per box.

    Args:
        model: a torchvision detector (`reciprocam.detection.detectors`).
        threshold: the score a detection needs to be explained when no boxes are given.
        level: the reference pyramid level's name (None: the rule of `reference_level`).
        batch_size: copies per pass through the rest of the detector; None keeps each pass's
            levels within 64 MiB.
        progress: show a progress bar over the passes.
    """

    # Whether raw maps cover the image itself (D-RISE) rather than a feature grid.
    maps_on_image: ClassVar[bool] = False

    def __init__(
        self,
        model: nn.Module,
        *,
        threshold: float = 0.5,
        level: str | None = None,
        batch_size: int | None = None,
        progress: bool = False,
    ) -> None:
        self.detector: Detector = as_detector(model)
        if not 0 <= threshold <= 1:
            raise OptionError(f"threshold must be in [0, 1], not {threshold!r}")
        self.threshold = threshold
        self.level = level
        self.batch_size = positive_or_none("batch_size", batch_size)
        self.progress = progress

    @property
    def model(self) -> nn.Module:
        model: nn.Module = self.detector.model
        return model

    def __call__(self, image: Tensor, boxes: BoxSpec = None) -> Tensor:
        """(T, H, W) maps in [0, 1], one per target box."""
        return self.explain(image, boxes).maps

    def explain(self, image: Tensor, boxes: BoxSpec = None) -> DetectionExplanation:
        """Explain the detections of a (3, H, W) image in [0, 1] scoring >= threshold, or
        `boxes` (a list of (label, (x1, y1, x2, y2)) or a (T, 5) tensor)."""
        image = check_image(image)
        with evaluation_mode(self.model):
            with torch.no_grad():  # not inference mode: the gradient methods reuse the targets
                prepared = self.detector.prepare(image)
                levels = self.detector.features(prepared.images.tensors)
                candidates = self.detector.candidates(levels, prepared)
                # The model's own output, from the levels already computed.
                detections = self.detector.detections(levels, prepared)[0]
                if boxes is None:
                    targets = detected_targets(detections, candidates, self.threshold)
                else:
                    labels = candidates.probabilities.shape[-1]
                    targets = given_targets(
                        boxes, prepared.original_size, labels, candidates.first_label
                    ).to(image.device)
            reference = "" if self.maps_on_image else reference_level(levels, self.level)
            context = Context(image, prepared, levels, reference, targets, candidates)
            raw = self._raw_maps(context).detach()
        with torch.inference_mode():
            maps = normalize_maps(raw if self.maps_on_image else self._on_image(raw, prepared))
        return DetectionExplanation(
            maps=maps.clone(),
            boxes=targets.boxes.clone(),
            labels=targets.labels.clone(),
            scores=targets.scores.clone(),
            raw=raw.clone(),
            detections={key: value.clone() for key, value in detections.items()},
            reference_level=reference,
        )

    @abstractmethod
    def _raw_maps(self, context: Context) -> Tensor:
        """(T, h, w) raw maps over a grid covering the padded frame (or (T, H, W) on the image
        when `maps_on_image`)."""

    @staticmethod
    def _on_image(raw: Tensor, prepared: Prepared) -> Tensor:
        """Grid maps (T, h, w) over the padded frame -> (T, H, W) over the original image."""
        padded = F.interpolate(raw[None].float(), prepared.padded_size, mode="bilinear")
        height, width = prepared.resized_size
        cropped = padded[:, :, :height, :width]
        return F.interpolate(cropped, prepared.original_size, mode="bilinear")[0]

    def _copies_per_pass(self, levels: Levels, count: int) -> int:
        if self.batch_size is not None:
            return min(self.batch_size, count)
        per_copy = sum(level[0].numel() * level.element_size() for level in levels.values())
        return max(1, min(count, _AUTO_BATCH_BYTES // max(per_copy, 1)))

    def _score_copies(
        self, context: Context, count: int, copies: Callable[[int, int], Levels]
    ) -> Tensor:
        """(count, T) the targets' similarity in `count` copies of the levels, made by
        `copies(start, stop)` a pass at a time and run through the rest of the detector."""
        per_pass = self._copies_per_pass(context.levels, count)
        scores = []
        with torch.inference_mode():
            for start in tqdm(
                range(0, count, per_pass),
                desc=type(self).__name__,
                disable=not self.progress,
            ):
                levels = copies(start, min(start + per_pass, count))
                candidates = self.detector.candidates(levels, context.prepared)
                scores.append(context.targets.similarity(candidates))
        return torch.cat(scores)


def repeated_levels(levels: Levels, count: int) -> Levels:
    """`count` copies of (1, C, h, w) levels, each its own memory (to be modified)."""
    return OrderedDict((key, level.repeat(count, 1, 1, 1)) for key, level in levels.items())
