"""Spatial grids of any rank: images (H, W), video clips (T, H, W) and volumes (D, H, W).

Inputs are (B, C, *grid) and maps (..., *grid); every method reduces and resizes over the grid
axes these helpers name, so one code path serves the three ranks.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .errors import InputError

GRID_RANKS = (2, 3)
"""Grid ranks the methods explain: 2 (images) and 3 (video clips and volumes)."""

_LINEAR_MODES = {2: "bilinear", 3: "trilinear"}


def grid_rank(x: Tensor) -> int:
    """The rank of a (B, C, *grid) input's grid."""
    return x.ndim - 2


def grid_axes(values: Tensor) -> tuple[int, ...]:
    """The grid axes of (B, C, *grid) values: every axis after (B, C)."""
    return tuple(range(2, values.ndim))


def resize(maps: Tensor, size: tuple[int, ...], *, align_corners: bool | None = False) -> Tensor:
    """Linearly resize (..., *grid) maps to `size` (bilinear for 2-D grids, trilinear for 3-D)."""
    rank = len(size)
    mode = _LINEAR_MODES.get(rank)
    if mode is None:
        raise InputError(f"cannot resize a {rank}-D grid; grids have 2 or 3 axes")
    flat = maps.reshape(-1, 1, *maps.shape[-rank:])
    resized = F.interpolate(flat, size=size, mode=mode, align_corners=align_corners)
    return resized.view(*maps.shape[:-rank], *size)
