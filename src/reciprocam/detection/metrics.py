"""Scoring box maps: pointing game, energy-based pointing game, detection deletion/insertion.

- Pointing game and energy-based pointing game are the classification metrics
  (`reciprocam.metrics.pointing`) with each box's own region as the object: its ground-truth
  box (`box_regions`) or its mask, as ODAM's `eval_pointgame.py` counts "in box" and "in mask".
- Detection deletion/insertion (ODAM's `eval_delet.py`, with RISE's curves): pixels are ranked
  by the box's map; deletion replaces the top ones by the detector's mean colour (its
  transform's `image_mean`: zero after its normalisation, the classification metrics'
  substrate), insertion puts them back into the image blurred by RISE's kernel. After each of
  `steps` steps the detector runs on the image and the score is that of its best final
  detection of the box's label with IoU > 0.5 to the box (0 if none). AUC is the trapezoid
  rule on [0, 1] (`reciprocam.metrics.causal.area_under_curve`); ODAM also divides the curve by
  its first value, which `normalised=True` does.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from .._model import evaluation_mode
from ..errors import InputError
from ..metrics.batch import Batch
from ..metrics.causal import area_under_curve, rise_blur
from ..metrics.pointing import EnergyPointingGame, PointingGame, boxes_to_mask
from ..options import positive
from .boxes import pairwise_iou
from .detectors import as_detector


def box_regions(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """(T, H, W) bool: the pixels whose centres lie in each (x1, y1, x2, y2) box (x2, y2
    excluded: torchvision's continuous corners)."""
    regions = [
        boxes_to_mask([(x1, y1, x2 - 1, y2 - 1)], size, boxes.device)
        for x1, y1, x2, y2 in boxes.tolist()
    ]
    return torch.stack(regions)


def _batch(maps: Tensor, regions: Tensor) -> Batch:
    if maps.ndim != 3 or regions.shape != maps.shape:
        raise InputError(
            f"maps (T, H, W) and regions must have the same shape, got {tuple(maps.shape)}"
            f" and {tuple(regions.shape)}"
        )
    images = maps[:, None]  # the pointing metrics read only the maps and the regions
    return Batch(images=images, maps=maps, ground_truth=regions.bool())


def pointing_game(maps: Tensor, regions: Tensor) -> Tensor:
    """(T,) 1 where a maximum of map t lies in region t, else 0 (NaN for an empty region)."""
    return PointingGame().measure(_batch(maps, regions))


def energy_pointing_game(maps: Tensor, regions: Tensor) -> Tensor:
    """(T,) the share of map t's mass in region t."""
    return EnergyPointingGame().measure(_batch(maps, regions))


def best_matching_score(detections: dict[str, Tensor], box: Tensor, label: int) -> float:
    """The score of the best final detection of `label` with IoU > 0.5 to `box`, or 0."""
    same = detections["labels"] == label
    iou = pairwise_iou(detections["boxes"], box.to(detections["boxes"]))
    matching = detections["scores"][same & (iou > 0.5)]
    return float(matching.max()) if matching.numel() else 0.0


def detection_curve(
    model: nn.Module,
    image: Tensor,
    saliency: Tensor,
    box: Tensor,
    label: int,
    *,
    mode: Literal["deletion", "insertion"] = "deletion",
    steps: int = 20,
    batch_size: int = 8,
) -> Tensor:
    """(steps + 1,) the box's score as its map's top pixels are deleted or inserted."""
    positive("steps", steps)
    detector = as_detector(model)
    height, width = saliency.shape
    order = saliency.flatten().argsort(descending=True, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    rank = rank.view(height, width)
    mean = torch.tensor(detector.transform.image_mean).to(image)[:, None, None]
    if mode == "deletion":
        base, filler = image, mean.expand_as(image)
    else:
        base, filler = rise_blur(image), image
    counts = torch.tensor([t * height * width // steps for t in range(steps + 1)])
    scores = []
    with evaluation_mode(model), torch.inference_mode():
        for chunk in torch.split(counts.to(image.device), batch_size):
            changed = rank[None, None] < chunk[:, None, None, None]
            images = torch.where(changed, filler[None], base[None])
            for found in model(list(images)):
                scores.append(best_matching_score(found, box, label))
    return torch.tensor(scores, dtype=torch.float64)


def detection_auc(curve: Tensor, *, normalised: bool = False) -> float:
    """The curve's trapezoid AUC on [0, 1]; `normalised` divides it by its first value."""
    if normalised:
        curve = curve / curve[0] if float(curve[0]) > 0 else torch.zeros_like(curve)
    return float(area_under_curve(curve))
