"""Localisation against ground truth: the Pointing Game and the Energy-based Pointing Game.

Pointing Game (Zhang et al., IJCV 2018): a hit when a maximum of the map lies on the object
(within `tolerance` pixels of it; openvino_xai and Quantus use 0, Zhang et al. 15). Every
pixel that attains the maximum counts, as openvino_xai does.
Energy-based Pointing Game (Wang et al., Score-CAM, CVPRW 2020): the share of the map's mass on
the object, sum(L * G) / sum(L).

The object is a (B, H, W) mask at the input size; `boxes_to_mask` rasterises boxes. An image
whose mask is empty has no value (NaN), and summaries skip it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from .base import Metric, MetricInfo
from .batch import Batch


def _ground_truth(batch: Batch, metric: str) -> Tensor:
    if batch.ground_truth is None:
        raise InputError(f"{metric} needs ground-truth masks or boxes of the explained objects")
    return batch.ground_truth


class PointingGame(Metric):
    """1 if a maximum of the map is on the object (up to `tolerance` pixels away), else 0."""

    info = MetricInfo("pointing_game", "PG", higher_is_better=True, needs_ground_truth=True)

    def __init__(self, *, tolerance: int = 0) -> None:
        super().__init__()
        if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
            raise InputError(f"tolerance must be a whole number of pixels >= 0, not {tolerance!r}")
        self.tolerance = tolerance

    def measure(self, batch: Batch) -> Tensor:
        objects = _grow(_ground_truth(batch, "the pointing game"), self.tolerance)
        flat = batch.maps.flatten(1)
        peaks = flat == flat.amax(dim=1, keepdim=True)
        hits = (peaks & objects.flatten(1)).any(dim=1).double()
        return torch.where(objects.flatten(1).any(dim=1), hits, float("nan"))


class EnergyPointingGame(Metric):
    """sum(L * G) / sum(L): the share of saliency on the object (0 for an all-zero map)."""

    info = MetricInfo("energy_pointing_game", "EPG", higher_is_better=True, needs_ground_truth=True)

    def measure(self, batch: Batch) -> Tensor:
        objects = _ground_truth(batch, "the energy-based pointing game").flatten(1)
        flat = batch.maps.flatten(1).double()
        total = flat.sum(dim=1)
        inside = (flat * objects).sum(dim=1)
        share = torch.where(total > 0, inside / total.clamp_min(1e-300), 0.0)
        return torch.where(objects.any(dim=1), share, float("nan"))


def boxes_to_mask(
    boxes: Iterable[Sequence[float]], size: tuple[int, int], device: torch.device | None = None
) -> Tensor:
    """(H, W) bool mask of the union of boxes (x_min, y_min, x_max, y_max), bounds inclusive.

    Coordinates are pixel indices (column x, row y) of the input; boxes are clipped to it.
    openvino_xai's (x, y, w, h) is (x, y, x + w, y + h) here.
    """
    height, width = size
    mask = torch.zeros(height, width, dtype=torch.bool, device=device)
    for box in boxes:
        if len(box) != 4:
            raise InputError(f"a box is (x_min, y_min, x_max, y_max), got {list(box)}")
        x_min, y_min, x_max, y_max = (float(v) for v in box)
        if x_max < x_min or y_max < y_min:
            raise InputError(f"box {list(box)} has x_max < x_min or y_max < y_min")
        rows = slice(max(0, int(y_min + 0.5)), max(0, min(height, int(y_max + 0.5) + 1)))
        columns = slice(max(0, int(x_min + 0.5)), max(0, min(width, int(x_max + 0.5) + 1)))
        mask[rows, columns] = True
    return mask


def _grow(masks: Tensor, radius: int) -> Tensor:
    """(B, H, W) masks dilated by a disc of `radius` pixels (Euclidean distance <= radius)."""
    if radius == 0:
        return masks
    offsets = torch.arange(-radius, radius + 1, device=masks.device, dtype=torch.float32)
    disc = (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2).float()
    grown = F.conv2d(masks[:, None].float(), disc[None, None], padding=radius)
    return grown[:, 0] > 0
