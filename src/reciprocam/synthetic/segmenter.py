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

from importlib import resources

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ModelError
from .segmentation import SEGMENTATION_CLASSES

CHECKPOINT = "shapes_segmenter.pt"


class _Block(nn.Module):
    """A ResNet basic block (two 3x3 convolutions, dilated by `dilation`, and a skip)."""

    def __init__(self, inputs: int, outputs: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, dilation, dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.skip = (
            nn.Identity()
            if stride == 1 and inputs == outputs
            else nn.Sequential(
                nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs)
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.skip(x))


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
        self.encoder.add_module("layer1", _Block(width, 2 * width, 2))
        self.encoder.add_module("layer2", _Block(2 * width, 2 * width))
        self.encoder.add_module("layer3", _Block(2 * width, 2 * width, dilation=2))
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
    model = ShapesSegmenter()
    source = resources.files(__package__).joinpath(f"checkpoints/{CHECKPOINT}")
    if not source.is_file():
        raise ModelError(
            "the trained Shapes segmenter is missing; run benchmarks/train_shapes_segmenter.py"
        )
    with resources.as_file(source) as path:
        model.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
    return model.eval()
