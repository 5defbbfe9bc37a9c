"""Tiny torchvision detectors with random weights, for the detection tests (64 x 64 images)."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign

SIZE = 64
LABELS = 4  # background and three classes
CHANNELS = 32


class TinyBackbone(nn.Module):
    """Three stages at strides 4, 8 and 16 (16x16, 8x8, 4x4 at 64 px) and an FPN."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(3, width, 3, 4, 1), nn.ReLU()),
                nn.Sequential(nn.Conv2d(width, width, 3, 2, 1), nn.ReLU()),
                nn.Sequential(nn.Conv2d(width, width, 3, 2, 1), nn.ReLU()),
            ]
        )
        self.fpn = FeaturePyramidNetwork([width] * 3, CHANNELS)
        self.out_channels = CHANNELS

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        levels: OrderedDict[str, Tensor] = OrderedDict()
        for index, stage in enumerate(self.stages):
            x = stage(x)
            levels[str(index)] = x
        return self.fpn(levels)


def _anchors(ratios: tuple[float, ...]) -> AnchorGenerator:
    return AnchorGenerator(((8,), (16,), (32,)), (ratios,) * 3)


def tiny_fcos(seed: int = 0) -> FCOS:
    torch.manual_seed(seed)
    model = FCOS(
        TinyBackbone(), LABELS, min_size=SIZE, max_size=SIZE, anchor_generator=_anchors((1.0,)),
        score_thresh=0.0, topk_candidates=50,
    )  # fmt: skip
    return model.eval()


def tiny_retinanet(seed: int = 0) -> RetinaNet:
    torch.manual_seed(seed)
    model = RetinaNet(
        TinyBackbone(), LABELS, min_size=SIZE, max_size=SIZE,
        anchor_generator=_anchors((0.5, 1.0, 2.0)), score_thresh=0.0, topk_candidates=50,
    )  # fmt: skip
    return model.eval()


def tiny_faster_rcnn(seed: int = 0) -> FasterRCNN:
    torch.manual_seed(seed)
    model = FasterRCNN(
        TinyBackbone(), LABELS, min_size=SIZE, max_size=SIZE,
        rpn_anchor_generator=_anchors((0.5, 1.0, 2.0)),
        box_roi_pool=MultiScaleRoIAlign(["0", "1", "2"], 7, 2),
        rpn_pre_nms_top_n_test=60, rpn_post_nms_top_n_test=24, box_score_thresh=0.0,
        box_detections_per_img=30,
    )  # fmt: skip
    return model.eval()
