"""A model loaded by name, with what it takes to use it on photos."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torchvision.models import ResNet50_Weights

from .preprocessing import Preprocessing

IMAGENET_CATEGORIES: tuple[str, ...] = tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


@dataclass(frozen=True)
class LoadedModel:
    """A model in eval mode with what it takes to use it on photos."""

    name: str
    model: nn.Module
    preprocessing: Preprocessing
    categories: tuple[str, ...]
    pretrained: bool
