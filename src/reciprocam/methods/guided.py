"""Guided Backprop (Springenberg et al. 2015) and Guided Grad-CAM / Grad-CAM++ (Selvaraju et al.).

Guided Backprop takes the gradient of the target logit with respect to the input, with every
ReLU module passing back only positive gradients where its input was positive. Guided Grad-CAM
multiplies those pixel attributions by the (raw, ReLU'd) Grad-CAM map upsampled bilinearly to
the input; Guided Grad-CAM++ uses Grad-CAM++'s map. Their `attributions` are these signed
(B, C, H, W) values; `maps` is their largest magnitude over channels (the saliency convention of
Simonyan et al. 2014), normalised. Only ReLU modules are guided: a functional F.relu in a
model's forward is not (as in Captum and pytorch-grad-cam).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .._model import OutputPart, autograd_on, differentiable, explained_output, removing
from ..errors import OptionError
from ..explainer import Evidence, Explainer
from ..grids import resize
from ..layers import LayerSpecs
from ..targets import BoundTarget, Target
from .feature_maps import FeatureMapExplainer, bind, target_gradients
from .gradient_cams import GradCAM, GradCAMPlusPlus


class _PositiveGradient(torch.autograd.Function):
    """Identity forward; backward lets through only positive gradients."""

    @staticmethod
    def forward(ctx: Any, values: Tensor) -> Tensor:
        return values.clone()

    @staticmethod
    def backward(ctx: Any, gradient: Tensor) -> Tensor:
        return gradient.clamp(min=0)


def _guide(module: nn.Module, inputs: object, output: Tensor) -> Tensor:
    # The ReLU's own backward keeps positions whose input was positive; this keeps positive
    # gradients: together, guided backpropagation.
    result: Tensor = _PositiveGradient.apply(output)
    return result


def guided_gradients(
    model: nn.Module, x: Tensor, target: Target | BoundTarget
) -> tuple[Tensor, Tensor, BoundTarget]:
    """The guided input gradients (B, T, C, H, W) of the targets, the explained output and the
    target bound to it."""
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    with removing(*(m.register_forward_hook(_guide) for m in relus)), autograd_on():
        inputs = differentiable(x)
        logits = explained_output(model(inputs))
        bound = bind(target, logits.detach())
        per_target = target_gradients(bound, logits, [inputs])
    return torch.stack([g for (g,) in per_target], dim=1), logits.detach(), bound


def channel_magnitude(attributions: Tensor) -> Tensor:
    """(B, T, *grid): the largest magnitude over the channels of (B, T, C, *grid) attributions."""
    return attributions.abs().amax(dim=2)


class GuidedBackprop(Explainer):
    """Guided Backprop: pixel attributions; no target layer."""

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpecs = None,
        *,
        upsample: bool = True,
        output: OutputPart = None,
    ) -> None:
        if target_layer is not None:
            raise OptionError("Guided Backprop works on the input and takes no target_layer")
        super().__init__(model, None, upsample=upsample, output=output)

    def _explain(self, x: Tensor, target: Target) -> Evidence:
        attributions, logits, bound = guided_gradients(self.model, x, target)
        return Evidence(logits, bound, channel_magnitude(attributions), None, attributions)


class _Guided(FeatureMapExplainer):
    """Guided backprop times the class map of the CAM it is mixed with (first in the bases)."""

    def _explain(self, x: Tensor, target: Target) -> Evidence:
        cam = super()._explain(x, target)
        guided, _, _ = guided_gradients(self.model, x, cam.target)
        with torch.inference_mode():
            upsampled = resize(cam.maps, tuple(x.shape[2:]))  # (B, T, *grid)
            attributions = guided * upsampled[:, :, None]
        return Evidence(cam.logits, cam.target, channel_magnitude(attributions), None, attributions)


class GuidedGradCAM(_Guided, GradCAM):
    """Guided Grad-CAM: Guided Backprop times the upsampled Grad-CAM map."""


class GuidedGradCAMPlusPlus(_Guided, GradCAMPlusPlus):
    """Guided Grad-CAM++: Guided Backprop times the upsampled Grad-CAM++ map."""
