"""A small segmenter for Shapes segmentation, with trained weights shipped in the package.

`ShapesSegmenter` is an encoder (ResNet-style blocks, 64x64 -> a 16x16 grid) and a decoder
that upsamples back to 64x64, returning {"out": (B, 5, 64, 64) logits} as torchvision's
segmentation models do. The encoder's last block is the only path from the input to the
output (no skip connections from earlier stages into the decoder), so methods that mask that
grid (ReciproCAM, Score-CAM) see everything the output depends on; the automatic target layer
is found inside `encoder`. `benchmarks/train_shapes_segmenter.py` trains it on a 2-core CPU in
minutes; `shapes_segmenter()` loads the shipped weights.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .models import BasicBlock, load_shipped
from .segmentation import SEGMENTATION_CLASSES

CHECKPOINT = "shapes_segmenter.pt"


def _conv(inputs: int, outputs: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU()
    )


class ShapesSegmenter(nn.Module):
    """64x64 -> encoder: stem (32x32) -> layer1 (16x16) -> layer2 -> layer3 (dilated, 16x16)
    -> decoder: 16x16 -> 32x32 -> 5 classes, upsampled to 64x64: {"out": logits}."""

    def __init__(self, classes: int = SEGMENTATION_CLASSES, width: int = 32) -> None:
        super().__init__()
        self.encoder = nn.Sequential()
        self.encoder.add_module("stem", nn.Sequential(_conv(3, width, 2), _conv(width, width)))
        self.encoder.add_module("layer1", BasicBlock(width, 2 * width, 2))
        self.encoder.add_module("layer2", BasicBlock(2 * width, 2 * width))
        self.encoder.add_module("layer3", BasicBlock(2 * width, 2 * width, dilation=2))
        self.decoder = nn.Sequential(
            _conv(2 * width, 2 * width),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            _conv(2 * width, width),
        )
        self.classifier = nn.Conv2d(width, classes, 1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        logits = self.classifier(self.decoder(self.encoder(x)))
        out = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return {"out": out}


def shapes_segmenter() -> ShapesSegmenter:
    """The trained ShapesSegmenter, in eval mode."""
    return load_shipped(
        ShapesSegmenter(), CHECKPOINT, "Shapes segmenter", "train_shapes_segmenter.py"
    )
