"""Shapes detection: the segmentation images at 128 x 128, with a box, label and mask per shape.

Each DETECTION_SIZE x DETECTION_SIZE image is a Shapes segmentation image
(`segmentation.render_segmentation`): 2 to 4 shapes of the Shapes classes among distractors
that belong to no class. Its target follows torchvision's detection convention: label 0 is the
background, a shape of class i has label 1 + i (`DETECTION_LABELS`); boxes are (x1, y1, x2, y2)
with x2 = x_max + 1 and y2 = y_max + 1 of the shape's visible pixels, so a one-pixel box has a
width of 1. Image i of a split is a pure function of (seed, split, i), drawn from streams of
its own, apart from `ShapesSegmentation`'s.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torchvision.transforms.functional as TF
from torch import Tensor

from .segmentation import SegmentationImage, render_segmentation
from .shapes import CLASSES, SeededSplit

DETECTION_SIZE = 128
"""The side of a detection image, in pixels."""
DETECTION_LABELS = ("background", *CLASSES)
"""The name of each detection label: 0 the background, 1 + i the Shapes class i."""

# Added to the dataset's stream seed, so its images are not ShapesSegmentation's (whose seeds
# are seed * len(SPLITS) + split, far below this) drawn larger.
_STREAM = 0xDE7 << 32

Target = dict[str, Tensor]


def detection_target(sample: SegmentationImage) -> Target:
    """The torchvision target of an image: "boxes" (N, 4) float32 (x1, y1, x2, y2), x2 and y2
    exclusive; "labels" (N,) int64, 1 + class; "masks" (N, H, W) uint8, each shape's visible
    pixels; one row per visible shape, in drawing order."""
    boxes = sample.boxes
    numbers = [n for n in range(1, len(sample.shapes) + 1) if (sample.instances == n).any()]
    corners = [(x0, y0, x1 + 1, y1 + 1) for _, (x0, y0, x1, y1) in boxes]
    height, width = sample.instances.shape
    masks = sample.instances[None] == np.array(numbers, dtype=np.int64).reshape(-1, 1, 1)
    return {
        "boxes": torch.tensor(corners, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor([1 + kind for kind, _ in boxes], dtype=torch.int64),
        "masks": torch.from_numpy(masks.astype(np.uint8)).reshape(-1, height, width),
    }


class ShapesDetection(SeededSplit[SegmentationImage, tuple[Tensor, Target]]):
    """`count` images of a split as (3, 128, 128) float32 tensors in [0, 1] and their
    `detection_target`s; `sample(i)` is the PIL image, its label and instance masks, its
    shapes and (`boxes`) their boxes."""

    stream = _STREAM

    def render(self, seed: int, index: int) -> SegmentationImage:
        return render_segmentation(seed, index, size=DETECTION_SIZE)

    def item(self, sample: SegmentationImage) -> tuple[Tensor, Target]:
        # Pixels in [0, 1], not normalised: torchvision detectors normalise in their transform.
        return TF.to_tensor(sample.image), detection_target(sample)


def collate(
    batch: Sequence[tuple[Tensor, Target]],
) -> tuple[list[Tensor], list[Target]]:
    """A DataLoader's `collate_fn` for detection: the images and the targets as two lists
    (images may differ in size and targets in length, so nothing is stacked)."""
    return [image for image, _ in batch], [target for _, target in batch]
