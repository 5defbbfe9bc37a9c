"""A small FCOS detector for Shapes detection, with trained weights shipped in the package.

`shapes_detector_model()` is torchvision's FCOS on a small backbone: ResNet-style stages
(`models.BasicBlock`) at strides 8, 16 and 32 (16x16, 8x8 and 4x4 grids of a 128 x 128 image)
under a torchvision FeaturePyramidNetwork, without the extra P6/P7 levels (the boxes are 19 to
47 pixels across). FCOS gives a point to the level whose range holds its largest distance to
the box's sides (under 64 pixels, 8 times the anchor size, on level "0"), so every shape is
learnt and found on level "0" (16x16); levels "1" and "2" only ever learn background.
`benchmarks/train_shapes_detector.py` trains it on a 2-core CPU in minutes with FCOS's own
losses; `shapes_detector()` loads the shipped weights.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import FeaturePyramidNetwork

from .detection import DETECTION_LABELS, DETECTION_SIZE
from .models import BasicBlock, load_shipped
from .shapes import MEAN, STD

CHECKPOINT = "shapes_detector.pt"
FPN_CHANNELS = 64
"""The channels of every pyramid level (the backbone's `out_channels`)."""


class ShapesDetectorBackbone(nn.Module):
    """(B, 3, 128, 128) -> stem (64x64) -> layer1 (32x32) -> layer2 (16x16) -> layer3 (8x8)
    -> layer4 (4x4); the FPN over layer2..layer4 returns {"0": (B, 64, 16, 16),
    "1": (B, 64, 8, 8), "2": (B, 64, 4, 4)}, strides 8, 16, 32."""

    def __init__(self, width: int = 16, out_channels: int = FPN_CHANNELS) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.layer1 = BasicBlock(width, 2 * width, 2)
        self.layer2 = BasicBlock(2 * width, 4 * width, 2)
        self.layer3 = BasicBlock(4 * width, 6 * width, 2)
        self.layer4 = BasicBlock(6 * width, 8 * width, 2)
        self.fpn = FeaturePyramidNetwork([4 * width, 6 * width, 8 * width], out_channels)
        self.out_channels = out_channels  # FCOS reads this

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        c3 = self.layer2(self.layer1(self.stem(x)))
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        levels: OrderedDict[str, Tensor] = self.fpn(OrderedDict([("0", c3), ("1", c4), ("2", c5)]))
        return levels


def shapes_detector_model() -> FCOS:
    """An untrained FCOS for Shapes detection: 5 labels (`DETECTION_LABELS`), one anchor point
    per cell of each level (sizes 8, 16, 32: the strides), images kept at 128 x 128 and
    normalised with the Shapes mean and std."""
    backbone = ShapesDetectorBackbone()
    anchors = AnchorGenerator(sizes=((8,), (16,), (32,)), aspect_ratios=((1.0,),) * 3)
    return FCOS(
        backbone,
        num_classes=len(DETECTION_LABELS),
        min_size=DETECTION_SIZE,
        max_size=DETECTION_SIZE,
        image_mean=list(MEAN),
        image_std=list(STD),
        anchor_generator=anchors,
        # Low, so the detections rank far enough down for average precision; callers keep
        # the confident ones (e.g. score >= 0.5).
        score_thresh=0.05,
        nms_thresh=0.6,
        detections_per_img=100,
    )


def shapes_detector() -> FCOS:
    """The trained Shapes FCOS (`shapes_detector_model`), in eval mode."""
    return load_shipped(
        shapes_detector_model(), CHECKPOINT, "Shapes detector", "train_shapes_detector.py"
    )
