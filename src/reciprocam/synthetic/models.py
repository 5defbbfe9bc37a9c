"""Small classifiers for the Shapes dataset: a ResNet-style CNN and a ViT, with trained weights.

`train_shapes_models.py` in benchmarks/ trains them on a 2-core CPU in minutes; the weights
ship in this package (`checkpoints/`), so `shapes_model("cnn")` needs no download.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import TypeVar

import torch
from torch import Tensor, nn
from torchvision.models import VisionTransformer
from torchvision.models.vision_transformer import ConvStemConfig

from ..errors import ModelError
from .shapes import CLASSES, SIZE

KINDS = ("cnn", "vit")
# The convolution and batch norm of each rank of a block's input grid.
_LAYERS: dict[int, tuple[Callable[..., nn.Module], Callable[..., nn.Module]]] = {
    2: (nn.Conv2d, nn.BatchNorm2d),
    3: (nn.Conv3d, nn.BatchNorm3d),
}


class BasicBlock(nn.Module):
    """A ResNet basic block: two `kernel` convolutions (dilated by `dilation`) and a (projected)
    skip connection. A 3-tuple `kernel` makes it 3-D, over (T, H, W) or (D, H, W): (1, 3, 3)
    convolves each frame alone, and `stride` may be a 3-tuple too."""

    def __init__(
        self,
        inputs: int,
        outputs: int,
        stride: int | tuple[int, ...] = 1,
        dilation: int = 1,
        kernel: tuple[int, ...] = (3, 3),
    ) -> None:
        super().__init__()
        conv, norm = _LAYERS[len(kernel)]
        padding = tuple(dilation * (side // 2) for side in kernel)
        self.conv1 = conv(inputs, outputs, kernel, stride, padding, dilation, bias=False)
        self.bn1 = norm(outputs)
        self.conv2 = conv(outputs, outputs, kernel, 1, padding, dilation, bias=False)
        self.bn2 = norm(outputs)
        self.skip = (
            nn.Identity()
            if stride in (1, (1,) * len(kernel)) and inputs == outputs
            else nn.Sequential(conv(inputs, outputs, 1, stride, bias=False), norm(outputs))
        )

    def forward(self, x: Tensor) -> Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.skip(x))


class ShapesCNN(nn.Module):
    """64x64 -> stem (32x32) -> layer1 -> layer2 (16x16) -> layer3 (8x8) -> mean -> fc."""

    def __init__(self, classes: int = len(CLASSES), width: int = 32) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.layer1 = BasicBlock(width, width, 1)
        self.layer2 = BasicBlock(width, 2 * width, 2)
        self.layer3 = BasicBlock(2 * width, 4 * width, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, classes)

    def forward(self, x: Tensor) -> Tensor:
        features = self.layer3(self.layer2(self.layer1(self.stem(x))))
        logits: Tensor = self.fc(self.pool(features).flatten(1))
        return logits


def build_shapes_model(kind: str) -> nn.Module:
    """An untrained model: "cnn" (ShapesCNN) or "vit" (torchvision's ViT, 8x8 patches, 4 blocks)."""
    if kind == "cnn":
        return ShapesCNN()
    if kind == "vit":
        # A convolutional stem (Xiao et al. 2021) instead of one 8x8 patch projection: the
        # same 8x8 token grid, but it trains in minutes where the plain one takes far longer.
        vit: nn.Module = VisionTransformer(
            image_size=SIZE,
            patch_size=8,
            num_layers=4,
            num_heads=4,
            hidden_dim=96,
            mlp_dim=192,
            num_classes=len(CLASSES),
            conv_stem_configs=[
                ConvStemConfig(out_channels=24, kernel_size=3, stride=2),
                ConvStemConfig(out_channels=48, kernel_size=3, stride=2),
                ConvStemConfig(out_channels=96, kernel_size=3, stride=2),
            ],
        )
        return vit
    raise ModelError(f"unknown Shapes model '{kind}'; choose one of {', '.join(KINDS)}")


def checkpoint_name(kind: str) -> str:
    return f"shapes_{kind}.pt"


def shapes_model(kind: str) -> nn.Module:
    """The trained model `kind` ("cnn" or "vit"), in eval mode."""
    model = build_shapes_model(kind)
    return load_shipped(model, checkpoint_name(kind), f"Shapes {kind}", "train_shapes_models.py")


_M = TypeVar("_M", bound=nn.Module)


def load_shipped(model: _M, checkpoint: str, what: str, script: str) -> _M:
    """`model` with the weights of the package's `checkpoints/<checkpoint>`, in eval mode; a
    ModelError naming the benchmarks `script` that trains it if the file is missing."""
    source = resources.files(__package__).joinpath(f"checkpoints/{checkpoint}")
    if not source.is_file():
        raise ModelError(f"the trained {what} is missing; run benchmarks/{script}")
    with resources.as_file(source) as path:
        model.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
    return model.eval()
