"""Shapes volumes: seeded one-channel 3-D scans whose evidence is known, voxel by voxel.

Each SIDE x SIDE x SIDE volume holds exactly one *target* solid, whose kind is the class
(ball, cube, rod, cross: three orthogonal bars), at a random position, size and orientation,
among distractors that never decide the class (small blobs, thin spherical shells, scattered
bright or dark voxels) on a smooth noisy background. The target is drawn last in one flat
intensity, so its mask is exactly the voxels that decide the label. Volume i of a split is a
pure function of (seed, i): nothing is downloaded or stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .shapes import MEAN, STD, TARGET_SCALES, SeededSplit

CLASSES_3D = ("ball", "cube", "rod", "cross")
SIDE = 32

# Keeps these streams apart from the image Shapes' (which draw from [seed, index]).
_STREAM = 0x3D
_BAR = 1 / 3  # a rod's or a cross bar's half width, as a fraction of the target's radius
_HALF_CUBE = 0.75  # a cube's half side, as a fraction of the target's radius
# How far each solid reaches from its centre, in target radii, whatever its orientation.
_REACH = {
    "ball": 1.0,
    "cube": _HALF_CUBE * math.sqrt(3),
    "rod": math.hypot(1, _BAR),
    "cross": math.hypot(1, _BAR, _BAR),
}
_GRID = np.moveaxis(np.indices((SIDE, SIDE, SIDE), dtype=np.float64), 0, -1)  # voxel centres


@dataclass(frozen=True)
class ShapeVolume:
    """One generated volume, its class, and where the class's evidence is."""

    volume: np.ndarray  # (SIDE, SIDE, SIDE) float32 in [0, 1]
    label: int
    mask: np.ndarray  # (SIDE, SIDE, SIDE) bool, the target's voxels


def render_volume(seed: int, index: int) -> ShapeVolume:
    """Volume `index` of the stream `seed`."""
    rng = np.random.default_rng([_STREAM, seed, index])
    volume = _background(rng)
    for _ in range(rng.integers(2, 6)):
        _distractor(volume, rng)
    label = int(rng.integers(len(CLASSES_3D)))
    kind = CLASSES_3D[label]
    radius = rng.uniform(*TARGET_SCALES) * SIDE / 2
    margin = _REACH[kind] * radius + 0.5
    centre = rng.uniform(margin, SIDE - 1 - margin, 3)
    mask = _solid(kind, _GRID - centre, radius, _rotation(rng))
    # Bright on a dark neighbourhood, dark on a bright one, so the target shows.
    reach = int(margin)
    low, high = np.floor(centre - reach).astype(int), np.ceil(centre + reach).astype(int) + 1
    around = volume[low[0] : high[0], low[1] : high[1], low[2] : high[2]].mean()
    volume[mask] = rng.uniform(0.85, 1.0) if around < 0.5 else rng.uniform(0.0, 0.15)
    return ShapeVolume(volume.astype(np.float32), label, mask)


def _solid(kind: str, offsets: np.ndarray, radius: float, rotation: np.ndarray) -> np.ndarray:
    """(SIDE, SIDE, SIDE) bool: the voxels of solid `kind` at `offsets` (..., 3) from its
    centre, its local axes the columns of `rotation`."""
    local = np.abs(offsets @ rotation) / radius  # coordinates along its own axes, in radii
    if kind == "ball":
        inside: np.ndarray = (local**2).sum(-1) <= 1
    elif kind == "cube":
        inside = local.max(-1) <= _HALF_CUBE
    elif kind == "rod":  # a cylinder along the first axis
        inside = (local[..., 0] <= 1) & (np.hypot(local[..., 1], local[..., 2]) <= _BAR)
    else:  # a cross: a square bar along each axis
        bars = [
            (local[..., axis] <= 1) & (np.delete(local, axis, -1).max(-1) <= _BAR)
            for axis in range(3)
        ]
        inside = bars[0] | bars[1] | bars[2]
    return inside


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation (QR of a Gaussian matrix, signs fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _background(rng: np.random.Generator) -> np.ndarray:
    """Low-pass filtered noise at a random level and contrast, plus voxel noise."""
    frequencies = np.meshgrid(
        np.fft.fftfreq(SIDE), np.fft.fftfreq(SIDE), np.fft.rfftfreq(SIDE), indexing="ij"
    )
    squared = sum(f**2 for f in frequencies)
    cutoff = rng.uniform(0.04, 0.1)  # cycles per voxel
    spectrum = np.fft.rfftn(rng.normal(size=(SIDE, SIDE, SIDE))) * np.exp(
        -squared / (2 * cutoff**2)
    )
    smooth = np.fft.irfftn(spectrum, s=(SIDE, SIDE, SIDE), axes=(0, 1, 2))
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    level, contrast = rng.uniform(0.0, 0.5), rng.uniform(0.2, 0.5)
    noise = rng.normal(0, rng.uniform(0.02, 0.06), smooth.shape)
    volume: np.ndarray = (level + contrast * smooth + noise).clip(0, 1)
    return volume


def _distractor(volume: np.ndarray, rng: np.random.Generator) -> None:
    kind = rng.integers(3)
    centre = rng.uniform(0, SIDE, 3)
    value = rng.uniform(0, 1)
    distance = np.linalg.norm(_GRID - centre, axis=-1)
    if kind == 0:  # a small blob, smaller than any ball
        volume[distance <= rng.uniform(1, 2)] = value
    elif kind == 1:  # a thin spherical shell: hollow, unlike a ball
        volume[np.abs(distance - rng.uniform(3, 6)) <= 0.5] = value
    else:  # a few scattered voxels
        spots = rng.integers(0, SIDE, (int(rng.integers(3, 10)), 3))
        volume[spots[:, 0], spots[:, 1], spots[:, 2]] = value


class ShapesVolume(SeededSplit[ShapeVolume, tuple[Tensor, int]]):
    """`count` volumes of a split as normalised (1, SIDE, SIDE, SIDE) tensors and labels."""

    def render(self, seed: int, index: int) -> ShapeVolume:
        return render_volume(seed, index)

    def item(self, sample: ShapeVolume) -> tuple[Tensor, int]:
        return volume_to_tensor(sample.volume), sample.label


def volume_to_tensor(volume: np.ndarray) -> Tensor:
    """(1, D, H, W) float32 of a (D, H, W) volume in [0, 1]: (x - MEAN) / STD, the Shapes
    images' normalisation of one channel."""
    return ((torch.from_numpy(volume) - MEAN[0]) / STD[0])[None]
