"""Shapes segmentation: several class shapes per image, with a per-pixel label mask.

The segmentation variant of `shapes`: each SIZE x SIZE image holds 2 to 4 target shapes, each
of one of the Shapes classes (disk, square, triangle, cross) at its own position, scale,
rotation and colour, on the same cluttered background with distractors (rings, thin lines,
dots) that belong to no class. Shapes are placed apart from each other (they may touch or
overlap a little); a shape drawn later covers earlier ones, in the image and in the mask alike.

The label mask is (SIZE, SIZE) int64: 0 for the background (distractors included), 1 + the
class index for the pixels of each shape, so there are `SEGMENTATION_CLASSES` = 5 classes.
Image i of a split is a pure function of (seed, split, i): nothing is downloaded or stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from .shapes import (
    CLASSES,
    SIZE,
    SeededSplit,
    _background,
    _contrasting,
    _distractor,
    _draw_target,
    to_tensor,
)

SEGMENTATION_CLASSES = 1 + len(CLASSES)
"""Classes of the label mask: 0 the background, 1 + i the Shapes class i."""
LABELS = ("background", *CLASSES)
"""The name of each label of the mask."""

# Keeps these streams apart from the classification Shapes' (which draw from [seed, index]).
_STREAM = 0x5E6
_SHAPES = (2, 4)  # the fewest and most shapes per image
_SCALES = (0.2, 0.34)  # a shape's diameter, as a fraction of the image's side
_APART = 0.8  # two shapes' centres are at least this times the sum of their radii apart
_TRIES = 50  # positions tried for a shape before it is left out


@dataclass(frozen=True)
class SegmentationImage:
    """One generated image, its label mask and the shapes drawn on it, in drawing order."""

    image: Image.Image  # RGB, SIZE x SIZE
    mask: np.ndarray  # (SIZE, SIZE) int64: 0 background, 1 + class index
    shapes: tuple[int, ...]  # the class index of each shape drawn, first drawn first
    instances: np.ndarray  # (SIZE, SIZE) int64: 0 background, 1 + the index of the shape seen

    @property
    def boxes(self) -> list[tuple[int, tuple[int, int, int, int]]]:
        """(class index, (x_min, y_min, x_max, y_max) inclusive) of each shape still visible,
        in drawing order: every object's box, for detection."""
        found = []
        for number, label in enumerate(self.shapes, start=1):
            rows, columns = np.nonzero(self.instances == number)
            if len(rows):
                box = (int(columns.min()), int(rows.min()), int(columns.max()), int(rows.max()))
                found.append((label, box))
        return found

    @property
    def classes(self) -> tuple[int, ...]:
        """The class indices (0 to 3, not mask labels) present in the image, ascending."""
        return tuple(sorted(set(self.shapes)))

    @property
    def class_masks(self) -> np.ndarray:
        """(len(CLASSES), SIZE, SIZE) bool: the visible pixels of each class's shapes."""
        masks: np.ndarray = self.mask[None] == np.arange(1, SEGMENTATION_CLASSES)[:, None, None]
        return masks


def render_segmentation(seed: int, index: int, size: int = SIZE) -> SegmentationImage:
    """Image `index` of the segmentation stream `seed`."""
    rng = np.random.default_rng([_STREAM, seed, index])
    image = _background(rng, size)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(2, 6)):
        _distractor(draw, rng, size)
    mask = np.zeros((size, size), dtype=np.int64)
    instances = np.zeros((size, size), dtype=np.int64)
    placed: list[tuple[float, float, float]] = []  # (x, y, radius) of each shape drawn
    shapes: list[int] = []
    for _ in range(rng.integers(_SHAPES[0], _SHAPES[1] + 1)):
        label = int(rng.integers(len(CLASSES)))
        spot = _place(rng, size, placed)
        if spot is None:
            continue
        x, y, radius = spot
        angle = rng.uniform(0, 2 * math.pi)
        colour = _contrasting(image, (x, y), 2 * radius)
        drawn = _draw_target(image, CLASSES[label], (x, y), 2 * radius, angle, colour)
        mask[drawn] = 1 + label
        placed.append(spot)
        shapes.append(label)
        instances[drawn] = len(shapes)
    return SegmentationImage(image, mask, tuple(shapes), instances)


def _place(
    rng: np.random.Generator, size: int, placed: list[tuple[float, float, float]]
) -> tuple[float, float, float] | None:
    """A (x, y, radius) inside the image and apart from the shapes placed, or None."""
    for _ in range(_TRIES):
        radius = rng.uniform(*_SCALES) * size / 2
        margin = radius + 1
        x, y = rng.uniform(margin, size - margin, 2)
        if all(math.hypot(x - u, y - v) >= _APART * (radius + r) for u, v, r in placed):
            return float(x), float(y), float(radius)
    return None


class ShapesSegmentation(SeededSplit[SegmentationImage, tuple[Tensor, Tensor]]):
    """`count` images of a split as normalised (3, SIZE, SIZE) tensors and (SIZE, SIZE) int64
    label masks (`shapes.to_tensor`'s normalisation); `sample(i)` is the PIL image, its label
    mask, its shapes and (`class_masks`) per-class masks."""

    def render(self, seed: int, index: int) -> SegmentationImage:
        return render_segmentation(seed, index)

    def item(self, sample: SegmentationImage) -> tuple[Tensor, Tensor]:
        return to_tensor(sample.image), torch.from_numpy(sample.mask)
