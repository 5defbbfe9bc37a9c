"""The gradient CAMs: Grad-CAM, HiResCAM, XGrad-CAM, LayerCAM, Grad-CAM++, Smooth Grad-CAM++.

All read the target layer's activations A (B, C, h, w) and the gradients G = dy_c/dA of the
target class logit y_c, and differ only in how they combine them (sums and means run over the
h x w positions, or the t x h x w ones of a video or volume; divisions by zero give zero):

    Grad-CAM (Selvaraju et al. 2017)     ReLU(sum_k w_k A_k),  w_k = mean(G_k)
    HiResCAM (Draelos & Carin 2020)      ReLU(sum_k G_k * A_k)
    XGrad-CAM (Fu et al. 2020)           ReLU(sum_k w_k A_k),  w_k = sum(G_k * A_k) / sum(A_k)
    LayerCAM (Jiang et al. 2021)         ReLU(sum_k ReLU(G_k) * A_k)
    Grad-CAM++ (Chattopadhyay et al. 2018)
        ReLU(sum_k w_k A_k),  w_k = sum(alpha_k * ReLU(G_k)),
        alpha_k = G_k^2 / (2 G_k^2 + sum(A_k) * G_k^3)
    Smooth Grad-CAM++ (Omeiza et al. 2019)
        Grad-CAM++ with G, G^2, G^3 replaced by their means D1, D2, D3 over `samples` copies of
        the input with Gaussian noise of standard deviation `std` added; A from the clean input.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from tqdm import tqdm

from .._model import OutputPart
from ..explainer import Evidence
from ..grids import grid_axes
from ..layers import LayerSpecs, TargetLayer
from ..layout import LayoutSpec
from ..options import positive
from ..targets import BoundTarget, Target
from .feature_maps import FeatureMapExplainer, Fuse


def safe_divide(numerator: Tensor, denominator: Tensor) -> Tensor:
    """numerator / denominator, and 0 where the denominator is 0."""
    zero = denominator == 0
    return torch.where(zero, 0.0, numerator / torch.where(zero, 1.0, denominator))


def weighted_sum(weights: Tensor, activations: Tensor) -> Tensor:
    """ReLU(sum_k w_k A_k) for (B, C) weights and (B, C, *grid) activations: (B, *grid)."""
    return torch.relu(torch.einsum("bc,bc...->b...", weights, activations))


def plus_plus_map(activations: Tensor, d1: Tensor, d2: Tensor, d3: Tensor) -> Tensor:
    """Grad-CAM++ from the first three gradient powers (or their means, for Smooth Grad-CAM++)."""
    grid = grid_axes(activations)
    total = activations.sum(dim=grid, keepdim=True)
    alpha = safe_divide(d2, 2 * d2 + total * d3)
    weights = (alpha * torch.relu(d1)).sum(dim=grid)
    return weighted_sum(weights, activations)


class GradCAM(FeatureMapExplainer):
    """Grad-CAM: channel weights are the spatial means of the gradients."""

    def _layer_maps(
        self, x: Tensor, logits: Tensor, target: BoundTarget, layer: TargetLayer,
        activations: Tensor, gradients: Tensor | None,
    ) -> Tensor:  # fmt: skip
        assert gradients is not None
        return weighted_sum(gradients.mean(dim=grid_axes(gradients)), activations)


class HiResCAM(FeatureMapExplainer):
    """HiResCAM: the element-wise product of gradients and activations, summed over channels."""

    def _layer_maps(
        self, x: Tensor, logits: Tensor, target: BoundTarget, layer: TargetLayer,
        activations: Tensor, gradients: Tensor | None,
    ) -> Tensor:  # fmt: skip
        assert gradients is not None
        return torch.relu((gradients * activations).sum(dim=1))


class XGradCAM(FeatureMapExplainer):
    """XGrad-CAM: channel weights are the gradients averaged with the activations as weights."""

    def _layer_maps(
        self, x: Tensor, logits: Tensor, target: BoundTarget, layer: TargetLayer,
        activations: Tensor, gradients: Tensor | None,
    ) -> Tensor:  # fmt: skip
        assert gradients is not None
        grid = grid_axes(activations)
        weights = safe_divide((gradients * activations).sum(dim=grid), activations.sum(dim=grid))
        return weighted_sum(weights, activations)


class LayerCAM(FeatureMapExplainer):
    """LayerCAM: activations weighted position by position by their positive gradients."""

    def _layer_maps(
        self, x: Tensor, logits: Tensor, target: BoundTarget, layer: TargetLayer,
        activations: Tensor, gradients: Tensor | None,
    ) -> Tensor:  # fmt: skip
        assert gradients is not None
        return torch.relu((torch.relu(gradients) * activations).sum(dim=1))


class GradCAMPlusPlus(FeatureMapExplainer):
    """Grad-CAM++: positive gradients weighted by the closed-form alpha of the paper (eq. 19)."""

    def _layer_maps(
        self, x: Tensor, logits: Tensor, target: BoundTarget, layer: TargetLayer,
        activations: Tensor, gradients: Tensor | None,
    ) -> Tensor:  # fmt: skip
        assert gradients is not None
        return plus_plus_map(activations, gradients, gradients**2, gradients**3)


class SmoothGradCAMPlusPlus(GradCAMPlusPlus):
    """Smooth Grad-CAM++: Grad-CAM++ with gradient powers averaged over noisy inputs.

    Args:
        samples: noisy copies of each image (default 4).
        std: standard deviation of the Gaussian noise, in the model's input units (default 0.3).
        batch_size: noisy copies per forward and backward pass (default 16).
        seed: seed of the noise, so results are reproducible.
        progress: show a progress bar.
    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpecs = None,
        *,
        samples: int = 4,
        std: float = 0.3,
        batch_size: int = 16,
        seed: int = 0,
        progress: bool = False,
        fuse: Fuse = "mean",
        upsample: bool = True,
        layout: LayoutSpec = None,
        output: OutputPart = None,
    ) -> None:
        super().__init__(
            model, target_layer, fuse=fuse, upsample=upsample, output=output, layout=layout
        )
        self.samples = positive("samples", samples)
        self.batch_size = positive("batch_size", batch_size)
        self.std = std
        self.seed = seed
        self.progress = progress

    def noise(self, x: Tensor) -> Tensor:
        """The (B * samples, C, *grid) noise added to x, image-major, from `seed`."""
        generator = torch.Generator().manual_seed(self.seed)
        shape = (x.shape[0] * self.samples, *x.shape[1:])
        return (torch.randn(shape, generator=generator) * self.std).to(x)

    def _explain(self, x: Tensor, target: Target) -> Evidence:
        layers = self.target_layers or []
        activations, _, logits, bound = self._tapped_pass(layers, x, target, gradients=False)
        noisy = x.repeat_interleave(self.samples, dim=0) + self.noise(x)
        images = torch.arange(noisy.shape[0], device=x.device) // self.samples
        count = bound.count
        moments = [
            torch.zeros((3, a.shape[0], count, *a.shape[1:]), dtype=a.dtype, device=a.device)
            for a in activations
        ]
        starts = range(0, noisy.shape[0], self.batch_size)
        for start in tqdm(starts, desc="Smooth Grad-CAM++", disable=not self.progress):
            stop = min(start + self.batch_size, noisy.shape[0])
            _, gradients, _, _ = self._tapped_pass(
                layers, noisy[start:stop], bound, gradients=True, images=images[start:stop]
            )
            for moment, g in zip(moments, gradients, strict=True):
                assert g is not None
                for power in range(3):
                    moment[power].index_add_(0, images[start:stop], g ** (power + 1) / self.samples)
        with torch.inference_mode():
            per_layer: list[tuple[Tensor, Tensor | None]] = [
                (torch.stack([plus_plus_map(a, *m[:, :, t]) for t in range(count)], dim=1), None)
                for a, m in zip(activations, moments, strict=True)
            ]
        return self._evidence(x, logits, bound, per_layer)
