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
import torch.nn.functional as F
from torch import Tensor, nn

from .._model import autograd_on, class_scores, differentiable, removing
from ..errors import OptionError
from ..explainer import Evidence, Explainer, choose_targets
from ..layers import LayerSpecs
from .feature_maps import FeatureMapExplainer
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
    model: nn.Module, x: Tensor, requested: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """The guided input gradients (B, C, H, W) of the targets, the logits and the targets."""
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    with removing(*(m.register_forward_hook(_guide) for m in relus)), autograd_on():
        inputs = differentiable(x)
        logits = class_scores(model(inputs))
        targets = choose_targets(logits, requested)
        (gradients,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), inputs)
    return gradients, logits.detach(), targets


def channel_magnitude(attributions: Tensor) -> Tensor:
    """(B, H, W): the largest magnitude over the channels of (B, C, H, W) attributions."""
    return attributions.abs().amax(dim=1)


class GuidedBackprop(Explainer):
    """Guided Backprop: pixel attributions; no target layer."""

    def __init__(
        self, model: nn.Module, target_layer: LayerSpecs = None, *, upsample: bool = True
    ) -> None:
        if target_layer is not None:
            raise OptionError("Guided Backprop works on the input and takes no target_layer")
        super().__init__(model, None, upsample=upsample)

    def _explain(self, x: Tensor, requested: Tensor | None) -> Evidence:
        attributions, logits, targets = guided_gradients(self.model, x, requested)
        return Evidence(logits, targets, channel_magnitude(attributions), None, attributions)


class _Guided(FeatureMapExplainer):
    """Guided backprop times the class map of the CAM it is mixed with (first in the bases)."""

    def _explain(self, x: Tensor, requested: Tensor | None) -> Evidence:
        cam = super()._explain(x, requested)
        guided, _, _ = guided_gradients(self.model, x, cam.targets)
        size = (x.shape[2], x.shape[3])
        with torch.inference_mode():
            upsampled = F.interpolate(cam.maps[:, None], size=size, mode="bilinear")
            attributions = guided * upsampled
        return Evidence(
            cam.logits, cam.targets, channel_magnitude(attributions), None, attributions
        )


class GuidedGradCAM(_Guided, GradCAM):
    """Guided Grad-CAM: Guided Backprop times the upsampled Grad-CAM map."""


class GuidedGradCAMPlusPlus(_Guided, GradCAMPlusPlus):
    """Guided Grad-CAM++: Guided Backprop times the upsampled Grad-CAM++ map."""
