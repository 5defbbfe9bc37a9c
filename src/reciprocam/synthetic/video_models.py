"""Small 3-D CNNs for Moving Shapes clips and Shapes volumes, with trained weights.

Both are ResNet-style (`models.BasicBlock` made 3-D) and end in layer3 -> global average pool
-> fc, so ReciproCAM's GAP shortcut applies. `train_shapes_3d.py` in benchmarks/ trains them on
a 2-core CPU in minutes, the clip model starting from the trained 2-D ShapesCNN's weights
inflated over time (Carreira & Zisserman 2017); the weights ship in this package.
"""

from __future__ import annotations

from torch import Tensor, nn

from .models import BasicBlock, ShapesCNN, load_shipped
from .shapes import CLASSES
from .volume import CLASSES_3D

Stride = int | tuple[int, int, int]
_SCRIPT = "train_shapes_3d.py"


class _ShapesNet3d(nn.Module):
    """stem (one strided convolution) -> layer1 -> layer2 -> layer3 -> mean -> fc: the
    ShapesCNN's layout over 3-D grids, each layer a BasicBlock of (width, stride, kernel)."""

    def __init__(
        self,
        channels: int,
        classes: int,
        stem: tuple[int, Stride],
        layers: list[tuple[int, Stride, tuple[int, int, int]]],
    ) -> None:
        super().__init__()
        width, stride = stem
        self.stem = nn.Sequential(
            nn.Conv3d(channels, width, 3, stride, 1, bias=False), nn.BatchNorm3d(width), nn.ReLU()
        )
        blocks = []
        for outputs, stride, kernel in layers:
            blocks.append(BasicBlock(width, outputs, stride, kernel=kernel))
            width = outputs
        self.layer1, self.layer2, self.layer3 = blocks
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        features = self.layer3(self.layer2(self.layer1(self.stem(x))))
        logits: Tensor = self.fc(self.pool(features).flatten(1))
        return logits


class ShapesVideoCNN(_ShapesNet3d):
    """(B, 3, 16, 64, 64) -> stem (8 x 32 x 32) -> layer1 -> layer2 (4 x 16 x 16) -> layer3
    (B, 128, 4, 8, 8) -> mean -> fc. Only the stem and layer2 mix neighbouring time steps:
    layer1 and layer3 convolve each step alone, which keeps it fast and under 2 MB."""

    def __init__(self, classes: int = len(CLASSES), width: int = 32) -> None:
        super().__init__(
            3,
            classes,
            (width, 2),
            [(width, 1, (1, 3, 3)), (2 * width, 2, (3, 3, 3)), (4 * width, (1, 2, 2), (1, 3, 3))],
        )


class ShapesVolumeCNN(_ShapesNet3d):
    """(B, 1, 32, 32, 32) -> stem (16^3) -> layer1 -> layer2 (8^3) -> layer3 (B, 64, 8, 8, 8)
    -> mean -> fc."""

    def __init__(self, classes: int = len(CLASSES_3D), width: int = 16) -> None:
        super().__init__(
            1,
            classes,
            (width, 2),
            [(width, 1, (3, 3, 3)), (2 * width, 2, (3, 3, 3)), (4 * width, 1, (3, 3, 3))],
        )


def inflate(video: ShapesVideoCNN, image: ShapesCNN) -> ShapesVideoCNN:
    """`video` with the weights of the 2-D `image` model spread evenly over each kernel's
    time taps: on a still clip (one frame repeated) it computes the image model's features,
    but near the first and last frames."""
    weights = video.state_dict()
    for name, value in image.state_dict().items():
        taps = weights[name].shape[2] if weights[name].dim() == 5 else 0
        weights[name] = value[:, :, None].expand_as(weights[name]) / taps if taps else value
    video.load_state_dict(weights)
    return video


def shapes_video_model() -> ShapesVideoCNN:
    """The trained Moving Shapes classifier (`video.ShapesVideo`), in eval mode."""
    return load_shipped(ShapesVideoCNN(), "shapes_video.pt", "Shapes video CNN", _SCRIPT)


def shapes_volume_model() -> ShapesVolumeCNN:
    """The trained Shapes volume classifier (`volume.ShapesVolume`), in eval mode."""
    return load_shipped(ShapesVolumeCNN(), "shapes_volume.pt", "Shapes volume CNN", _SCRIPT)
