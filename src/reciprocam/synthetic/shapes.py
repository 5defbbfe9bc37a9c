"""Shapes: a seeded image dataset whose evidence is known, for checking where maps point.

Each image holds exactly one *target* shape, whose kind is the class (disk, square, triangle,
cross), at a random position, scale, rotation and colour, among distractors that never decide
the class (rings, thin lines, dots) on a cluttered background (a colour gradient, blotches and
noise). The target is drawn last, so its mask (and box) is exactly the pixels that decide the
label. Image i of a split is a pure function of (seed, i): nothing is downloaded or stored.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from torch import Tensor
from torch.utils.data import Dataset

CLASSES = ("disk", "square", "triangle", "cross")
SIZE = 64
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
SPLITS = {"train": 0, "validation": 1, "test": 2}
TARGET_SCALES = (0.25, 0.45)
"""The smallest and largest target diameter, as a fraction of the image's side."""

Point = tuple[float, float]


@dataclass(frozen=True)
class ShapeImage:
    """One generated image: the picture, its class, and where the class's evidence is."""

    image: Image.Image  # RGB, SIZE x SIZE
    label: int
    mask: np.ndarray  # (SIZE, SIZE) bool, the target's pixels
    box: tuple[int, int, int, int]  # (x_min, y_min, x_max, y_max), inclusive


def render(seed: int, index: int, size: int = SIZE) -> ShapeImage:
    """Image `index` of the stream `seed`."""
    rng = np.random.default_rng([seed, index])
    image = _background(rng, size)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(2, 6)):
        _distractor(draw, rng, size)
    label = int(rng.integers(len(CLASSES)))
    scale = rng.uniform(*TARGET_SCALES) * size  # the target's diameter
    margin = scale / 2 + 1
    centre = (rng.uniform(margin, size - margin), rng.uniform(margin, size - margin))
    angle = rng.uniform(0, 2 * math.pi)
    colour = _contrasting(image, centre, scale)
    mask = _draw_target(image, CLASSES[label], centre, scale, angle, colour)
    rows, columns = np.nonzero(mask)
    box = (int(columns.min()), int(rows.min()), int(columns.max()), int(rows.max()))
    return ShapeImage(image, label, mask, box)


Sample = TypeVar("Sample")
Item = TypeVar("Item")


class SeededSplit(Dataset[Item], Generic[Sample, Item], ABC):
    """`count` generated samples of a split ("train", "validation", "test"): sample i is
    `render(seed, i)`, a pure function of the split's seed and i, and item i is its tensors."""

    stream = 0
    """Added to the seed, to keep a dataset's streams apart from another's of the same render."""

    def __init__(self, split: str, count: int, seed: int = 0) -> None:
        self.seed = self.stream + seed * len(SPLITS) + SPLITS[split]
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Item:
        return self.item(self.sample(index))

    def sample(self, index: int) -> Sample:
        """Sample `index`, as rendered (pictures, labels and masks)."""
        if not 0 <= index < self.count:
            raise IndexError(index)
        return self.render(self.seed, index)

    @abstractmethod
    def render(self, seed: int, index: int) -> Sample:
        """Sample `index` of the stream `seed`."""

    @abstractmethod
    def item(self, sample: Sample) -> Item:
        """What the dataset gives for `sample`: its input tensor and its target."""


class ShapesDataset(SeededSplit[ShapeImage, tuple[Tensor, int]]):
    """`count` images of a split as normalised (3, SIZE, SIZE) tensors and labels."""

    def render(self, seed: int, index: int) -> ShapeImage:
        return render(seed, index)

    def item(self, sample: ShapeImage) -> tuple[Tensor, int]:
        return to_tensor(sample.image), sample.label


def to_tensor(image: Image.Image | np.ndarray) -> Tensor:
    """(3, H, W) float32 of an RGB image or (H, W, 3) uint8 array: pixels in [0, 1], then
    (x - MEAN) / STD."""
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
    mean = torch.tensor(MEAN)[:, None, None]
    std = torch.tensor(STD)[:, None, None]
    return (pixels - mean) / std


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return (int(rng.integers(0, 256)), int(rng.integers(0, 256)), int(rng.integers(0, 256)))


def _contrasting(image: Image.Image, centre: Point, scale: float) -> tuple[int, int, int]:
    """The colour opposite to the background's mean around `centre`, so the target shows."""
    x, y = centre
    region = image.crop(
        (int(x - scale / 2), int(y - scale / 2), int(x + scale / 2) + 1, int(y + scale / 2) + 1)
    )
    mean = np.asarray(region, dtype=np.float64).reshape(-1, 3).mean(axis=0)
    red, green, blue = (
        int(255 - v) if abs(255 - 2 * v) > 96 else (0 if v > 127 else 255) for v in mean
    )
    return red, green, blue


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    ramp = np.linspace(0, 1, size)
    start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    direction = rng.uniform(0, 2 * math.pi)
    along = (np.cos(direction) * ramp[None, :] + np.sin(direction) * ramp[:, None] + 1) / 2
    pixels = start + (end - start) * along[..., None]
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    blotches = ImageDraw.Draw(image)
    for _ in range(rng.integers(3, 8)):
        x, y = rng.uniform(0, size, 2)
        radius = rng.uniform(3, size / 4)
        blotches.ellipse((x - radius, y - radius, x + radius, y + radius), fill=_colour(rng))
    image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(2, 5))))
    noise = rng.normal(0, rng.uniform(4, 16), (size, size, 3))
    return Image.fromarray((np.asarray(image) + noise).clip(0, 255).astype(np.uint8))


def _distractor(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int) -> None:
    kind = rng.integers(3)
    x, y = rng.uniform(0, size, 2)
    colour = _colour(rng)
    if kind == 0:  # a ring
        radius = rng.uniform(3, size / 7)
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), outline=colour, width=1)
    elif kind == 1:  # a thin line
        length, angle = rng.uniform(size / 6, size / 2), rng.uniform(0, math.pi)
        end = (x + length * math.cos(angle), y + length * math.sin(angle))
        draw.line((x, y, *end), fill=colour, width=1)
    else:  # a few dots
        for _ in range(rng.integers(2, 6)):
            dx, dy = rng.uniform(-size / 8, size / 8, 2)
            draw.point((x + dx, y + dy), fill=colour)


def _draw_target(
    image: Image.Image, kind: str, centre: Point, scale: float, angle: float, colour: object
) -> np.ndarray:
    """Draw a target shape on `image` in `colour`; return its (H, W) bool mask."""
    mask = Image.new("L", image.size, 0)
    for canvas, fill in ((ImageDraw.Draw(image), colour), (ImageDraw.Draw(mask), 255)):
        _target(canvas, kind, centre, scale, angle, fill)
    return np.asarray(mask) > 0


def _target(
    draw: ImageDraw.ImageDraw, kind: str, centre: Point, scale: float, angle: float, fill: object
) -> None:
    x, y = centre
    radius = scale / 2
    if kind == "disk":
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fill)  # type: ignore[arg-type]
    elif kind == "square":
        draw.polygon(_polygon(centre, radius, angle, 4), fill=fill)  # type: ignore[arg-type]
    elif kind == "triangle":
        draw.polygon(_polygon(centre, radius, angle, 3), fill=fill)  # type: ignore[arg-type]
    else:  # a cross: two bars a third of its size wide
        for turn in (0.0, math.pi / 2):
            draw.polygon(_bar(centre, radius, radius / 3, angle + turn), fill=fill)  # type: ignore[arg-type]


def _polygon(centre: Point, radius: float, angle: float, corners: int) -> list[Point]:
    x, y = centre
    return [
        (
            x + radius * math.cos(angle + 2 * math.pi * k / corners),
            y + radius * math.sin(angle + 2 * math.pi * k / corners),
        )
        for k in range(corners)
    ]


def _bar(centre: Point, half_length: float, half_width: float, angle: float) -> list[Point]:
    x, y = centre
    along = (math.cos(angle), math.sin(angle))
    across = (-along[1], along[0])
    return [
        (
            x + s * half_length * along[0] + t * half_width * across[0],
            y + s * half_length * along[1] + t * half_width * across[1],
        )
        for s, t in ((1, 1), (1, -1), (-1, -1), (-1, 1))
    ]
