"""Per-model image preprocessing: resize the shorter side, centre-crop, normalise."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch import Tensor
from torchvision.transforms import InterpolationMode

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Box = tuple[float, float, float, float]
"""(left, top, right, bottom) in the original image's pixel coordinates."""


@dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side to `resize`, centre-crop `crop` x `crop`, then (x - mean) / std."""

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: InterpolationMode = InterpolationMode.BILINEAR

    def at_size(self, crop: int | None) -> Preprocessing:
        """The same for a `crop` x `crop` input, keeping the resize/crop ratio (None: as it is)."""
        if crop is None:
            return self
        return replace(self, resize=round(crop * self.resize / self.crop), crop=crop)

    def crop_mask(self, mask: Image.Image) -> Tensor:
        """(crop, crop) bool: a mask image's nonzero pixels, resized and cropped as a photo of
        its size is (nearest neighbour, so it stays a mask)."""
        resized = TF.resize(mask.convert("L"), self.resize, interpolation=InterpolationMode.NEAREST)
        cropped = TF.center_crop(resized, [self.crop, self.crop])
        pixels: Tensor = TF.pil_to_tensor(cropped)[0]
        return pixels > 0

    def __call__(self, image: Image.Image) -> tuple[Tensor, Box]:
        """The (3, crop, crop) input tensor, and the region of `image` it shows."""
        resized = TF.resize(image, self.resize, interpolation=self.interpolation, antialias=True)
        cropped = TF.center_crop(resized, [self.crop, self.crop])
        tensor = TF.normalize(TF.to_tensor(cropped), list(self.mean), list(self.std))
        scale_x = resized.width / image.width
        scale_y = resized.height / image.height
        # torchvision's centre crop offsets: round((size - crop) / 2)
        left = round((resized.width - self.crop) / 2.0)
        top = round((resized.height - self.crop) / 2.0)
        box = (
            max(0.0, left / scale_x),
            max(0.0, top / scale_y),
            min(float(image.width), (left + self.crop) / scale_x),
            min(float(image.height), (top + self.crop) / scale_y),
        )
        return tensor.to(torch.float32), box
