"""Eigen-CAM (Muhammad & Yeasin 2020) and EigenGrad-CAM: principal components of feature maps.

Eigen-CAM projects each position's feature vector onto the first principal component of the
layer's activations A (positions as samples, channels as features, centred over positions).
EigenGrad-CAM does the same for the gradient-weighted activations G * A, which makes it class
discriminative. Eigen-CAM is class agnostic: every target gets the same map.

A principal component's sign is arbitrary (SVD returns v or -v), so the projection is turned
to correlate positively with the channel sum of the projected matrix (the activation map, or
HiResCAM's map for EigenGrad-CAM); pytorch-grad-cam keeps LAPACK's sign. As in the paper, the
projection is not passed through a ReLU before normalisation (pytorch-grad-cam applies one).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from ..layers import TargetLayer
from ..targets import BoundTarget
from .feature_maps import FeatureMapExplainer


def principal_projection(features: Tensor) -> Tensor:
    """(B, *grid) projection of (B, C, *grid) features onto their first principal component."""
    samples = features.flatten(2).transpose(1, 2)  # (B, K, C)
    centred = samples - samples.mean(dim=1, keepdim=True)
    _, _, components = torch.linalg.svd(centred.double(), full_matrices=False)
    projection = (centred.double() @ components[:, 0, :, None]).squeeze(2)  # (B, K)
    reference = centred.double().sum(dim=2)  # the channel sum, centred
    sign = torch.where((projection * reference).sum(dim=1) < 0, -1.0, 1.0).to(projection)
    oriented: Tensor = (projection * sign[:, None]).to(features.dtype)
    return oriented.view(features.shape[0], *features.shape[2:])


class EigenCAM(FeatureMapExplainer):
    """Eigen-CAM: the first principal component of the activations (no gradients, no class)."""

    uses_gradients: ClassVar[bool] = False
    class_agnostic: ClassVar[bool] = True

    def _layer_maps(
        self, x: Tensor, logits: Tensor, target: BoundTarget, layer: TargetLayer,
        activations: Tensor, gradients: Tensor | None,
    ) -> Tensor:  # fmt: skip
        return principal_projection(activations)


class EigenGradCAM(FeatureMapExplainer):
    """EigenGrad-CAM: the first principal component of the gradient-weighted activations."""

    def _layer_maps(
        self, x: Tensor, logits: Tensor, target: BoundTarget, layer: TargetLayer,
        activations: Tensor, gradients: Tensor | None,
    ) -> Tensor:  # fmt: skip
        assert gradients is not None
        return principal_projection(gradients * activations)
