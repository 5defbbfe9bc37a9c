"""ReciproCAM computed from its definition, one masked copy at a time, for the tests.

Deliberately naive and independent of the library: the masks are written with loops, every
masked copy runs through the head alone, and normalisation is spelled out.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

GAUSSIAN = [[1 / 16, 2 / 16, 1 / 16], [2 / 16, 4 / 16, 2 / 16], [1 / 16, 2 / 16, 1 / 16]]


def masked_copy(features: Tensor, i: int, j: int, mask: str) -> Tensor:
    """(1, C, H, W): the copy of one image's (C, H, W) features that keeps position (i, j)."""
    channels, height, width = features.shape
    copy = torch.zeros(1, channels, height, width, dtype=features.dtype)
    if mask == "pixel":
        copy[0, :, i, j] = features[:, i, j]
        return copy
    for u in (-1, 0, 1):
        for v in (-1, 0, 1):
            if 0 <= i + u < height and 0 <= j + v < width:
                copy[0, :, i + u, j + v] = features[:, i, j] * GAUSSIAN[u + 1][v + 1]
    return copy


def explicit_scores(
    features: Tensor,
    head: Callable[[Tensor], Tensor],
    *,
    mask: str = "pixel",
    score: str = "softmax",
) -> Tensor:
    """(B, N, H, W) class scores of every masked copy of (B, C, H, W) features."""
    batch, _, height, width = features.shape
    rows = []
    with torch.no_grad():
        for b in range(batch):
            per_position = []
            for i in range(height):
                for j in range(width):
                    logits = head(masked_copy(features[b], i, j, mask))[0]
                    per_position.append(logits.softmax(0) if score == "softmax" else logits)
            rows.append(torch.stack(per_position, dim=1).view(-1, height, width))
    return torch.stack(rows)


def minmax(maps: Tensor) -> Tensor:
    """Min-max normalise each (H, W) map of a (..., H, W) tensor; a flat map becomes zeros."""
    low = maps.amin(dim=(-2, -1), keepdim=True)
    high = maps.amax(dim=(-2, -1), keepdim=True)
    spread = high - low
    return torch.where(spread > 0, (maps - low) / torch.where(spread > 0, spread, 1), 0)


def resnet_backbone(model: torch.nn.Module, x: Tensor) -> Tensor:
    """A torchvision ResNet's layer4 output, by calling its stages one by one."""
    with torch.no_grad():
        x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        return model.layer4(model.layer3(model.layer2(model.layer1(x))))


def resnet_head(model: torch.nn.Module) -> Callable[[Tensor], Tensor]:
    return lambda f: model.fc(torch.flatten(model.avgpool(f), 1))


def vgg_head(model: torch.nn.Module) -> Callable[[Tensor], Tensor]:
    return lambda f: model.classifier(torch.flatten(model.avgpool(f), 1))
