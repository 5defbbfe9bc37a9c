"""Shared fixtures: random-weight models built once per session, small seeded inputs."""

from __future__ import annotations

import pytest
import torch
from helpers import build, seeded
from torch import nn


@pytest.fixture(scope="session")
def resnet18() -> nn.Module:
    return build("resnet18")


@pytest.fixture(scope="session")
def resnet50() -> nn.Module:
    return build("resnet50")


@pytest.fixture(scope="session")
def vgg16() -> nn.Module:
    # A random VGG-16's softmax is nearly uniform (maps flat to 1e-5, below float32's resolution
    # after min-max); a larger last layer makes it as peaked as a trained model's.
    model = build("vgg16")
    with torch.no_grad():
        model.classifier[6].weight.mul_(30)
    return model


@pytest.fixture(scope="session")
def demo_model() -> nn.Module:
    from reciprocam.zoo import load_model

    return load_model().model


@pytest.fixture(scope="session")
def images() -> torch.Tensor:
    """Two 160x160 images: a 5x5 feature map on the ResNets and VGG-16."""
    return seeded((2, 3, 160, 160))
