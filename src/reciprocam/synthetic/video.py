"""Moving Shapes: seeded clips whose evidence is known in space and in time.

Each clip is FRAMES frames of SIZE x SIZE RGB. Its class is a Shapes class (disk, square,
triangle, cross): the one target shape, which shows only during a window of a few consecutive
frames (WINDOW frames, at a random start) and moves along a straight line while it shows.
Distractors that never decide the class (rings, thin lines, dots, as in `shapes`) drift across
every frame over a cluttered background that drifts slowly too. The target is drawn last, so
its tube (its pixels in each frame) is exactly the evidence for the label, in space and time.
Clip i of a split is a pure function of (seed, i): nothing is downloaded or stored.
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
    TARGET_SCALES,
    SeededSplit,
    _background,
    _contrasting,
    _distractor,
    _draw_target,
    to_tensor,
)

FRAMES = 16
WINDOW = (4, 6)
"""The fewest and most frames the target shows in, consecutive."""

# Keeps these streams apart from the image Shapes' (which draw from [seed, index]).
_STREAM = 0x51D
_DRIFT = 8  # the background's largest shift over a clip, in pixels
_SPEED = 2.0  # the largest speed of a distractor, in pixels per frame
_TRAVEL = (0.1, 0.3)  # the target's path length while it shows, as a fraction of SIZE


@dataclass(frozen=True)
class ShapeClip:
    """One generated clip, its class, and where (and when) the class's evidence is."""

    frames: np.ndarray  # (FRAMES, SIZE, SIZE, 3) uint8
    label: int
    tube: np.ndarray  # (FRAMES, SIZE, SIZE) bool: the target's pixels, none outside `window`
    window: tuple[int, int]  # the first and last frame (inclusive) the target shows in


def render_clip(seed: int, index: int) -> ShapeClip:
    """Clip `index` of the stream `seed`."""
    rng = np.random.default_rng([_STREAM, seed, index])
    frames = _scenery(rng)
    label = int(rng.integers(len(CLASSES)))
    shown = int(rng.integers(WINDOW[0], WINDOW[1] + 1))
    first = int(rng.integers(FRAMES - shown + 1))
    window = (first, first + shown - 1)
    scale = rng.uniform(*TARGET_SCALES) * SIZE
    low, high = scale / 2 + 1, SIZE - scale / 2 - 1  # centres that keep it whole in the frame
    start = rng.uniform(low, high, 2)
    heading = rng.uniform(0, 2 * math.pi)
    travel = rng.uniform(*_TRAVEL) * SIZE * np.array([math.cos(heading), math.sin(heading)])
    end = (start + travel).clip(low, high)  # kept in the frame: still a line from start
    angle = rng.uniform(0, 2 * math.pi)
    middle = (start + end) / 2
    colour = _contrasting(frames[(window[0] + window[1]) // 2], (middle[0], middle[1]), scale)
    tube = np.zeros((FRAMES, SIZE, SIZE), dtype=bool)
    for step, frame in enumerate(range(window[0], window[1] + 1)):
        x, y = start + (end - start) * step / (shown - 1)
        tube[frame] = _draw_target(frames[frame], CLASSES[label], (x, y), scale, angle, colour)
    pixels = np.stack([np.asarray(frame) for frame in frames])
    return ShapeClip(pixels, label, tube, window)


def _scenery(rng: np.random.Generator) -> list[Image.Image]:
    """FRAMES frames of a slowly drifting background with distractors moving across it."""
    backdrop = _background(rng, SIZE + _DRIFT)
    first, last = rng.uniform(0, _DRIFT, (2, 2))  # where the view starts and ends in it
    layers = []  # each distractor on its own transparent layer, moved as a whole
    for _ in range(rng.integers(2, 6)):
        layer = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
        _distractor(ImageDraw.Draw(layer), rng, SIZE)
        layers.append((layer, rng.uniform(-_SPEED, _SPEED, 2)))
    frames = []
    for time in range(FRAMES):
        left, top = np.rint(first + (last - first) * time / (FRAMES - 1)).astype(int)
        frame = backdrop.crop((left, top, left + SIZE, top + SIZE))
        for layer, velocity in layers:
            dx, dy = np.rint(velocity * time).astype(int)
            frame.paste(layer, (int(dx), int(dy)), layer)
        frames.append(frame)
    return frames


class ShapesVideo(SeededSplit[ShapeClip, tuple[Tensor, int]]):
    """`count` clips of a split as normalised (3, FRAMES, SIZE, SIZE) tensors and labels."""

    def render(self, seed: int, index: int) -> ShapeClip:
        return render_clip(seed, index)

    def item(self, sample: ShapeClip) -> tuple[Tensor, int]:
        return clip_to_tensor(sample.frames), sample.label


def clip_to_tensor(frames: np.ndarray) -> Tensor:
    """(3, T, H, W) float32 of (T, H, W, 3) uint8 frames, normalised as `shapes.to_tensor`."""
    return torch.stack([to_tensor(frame) for frame in frames], dim=1)
