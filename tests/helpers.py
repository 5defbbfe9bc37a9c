"""Small helpers the tests share."""

from __future__ import annotations

import torch
import torchvision
from torch import nn


def seeded(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """A standard-normal float32 tensor from its own generator."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def build(name: str, seed: int = 0, **kwargs: object) -> nn.Module:
    """A torchvision model with random weights from `seed`, in eval mode."""
    torch.manual_seed(seed)
    return torchvision.models.get_model(name, weights=None, **kwargs).eval()
