"""FullGrad (Srinivas & Fleuret 2019), as the authors' code computes it.

The full-gradient decomposition of a ReLU network's output is the input-gradient term plus one
bias-gradient term per bias: with g = dy_c/dx and g_l = dy_c/dz_l at each convolution or
batch-norm output z_l (bias b_l; a batch norm's bias is b - mean * weight / sqrt(var + eps)),

    map = psi(g * x).sum(channels) + sum_l upsample(psi(g_l * b_l)).sum(channels)

where psi takes absolute values and min-max normalises each image over all its channels and
positions (the authors' code; pytorch-grad-cam normalises each channel instead), and upsample
is bilinear with align_corners=True (trilinear for a video or volume network's Conv3d and
BatchNorm3d layers). FullGrad uses every bias layer; it takes no target layer.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._model import OutputPart, autograd_on, differentiable, explained_output, removing
from ..errors import ModelError, OptionError
from ..explainer import Evidence, Explainer
from ..grids import resize
from ..layers import LayerSpecs, TargetLayer
from ..targets import Target
from .feature_maps import target_gradients

_BATCH_NORMS = (nn.BatchNorm2d, nn.BatchNorm3d)
_CONVOLUTIONS = (nn.Conv2d, nn.Conv3d)


def effective_bias(module: nn.Module) -> Tensor:
    """The bias a convolution adds, or the one an eval-mode batch norm adds."""
    if isinstance(module, _BATCH_NORMS):
        if module.running_mean is None or module.running_var is None:
            raise ModelError("FullGrad needs batch norms with running statistics")
        scale = torch.ones_like(module.running_mean) if module.weight is None else module.weight
        shift = torch.zeros_like(module.running_mean) if module.bias is None else module.bias
        return shift - module.running_mean * scale / torch.sqrt(module.running_var + module.eps)
    bias: Tensor = module.bias  # type: ignore[assignment]
    return bias


def postprocess(values: Tensor) -> Tensor:
    """|values| min-max normalised per image over channels and positions (eps as the authors')."""
    magnitude = values.abs().flatten(1)
    magnitude = magnitude - magnitude.amin(dim=1, keepdim=True)
    magnitude = magnitude / (magnitude.amax(dim=1, keepdim=True) + 1e-6)
    return magnitude.view_as(values)


def _has_bias(module: nn.Module) -> bool:
    return isinstance(module, _BATCH_NORMS) or (
        isinstance(module, _CONVOLUTIONS) and module.bias is not None
    )


class FullGrad(Explainer):
    """FullGrad: input gradients and every bias's gradients, aggregated into one map."""

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpecs = None,
        *,
        upsample: bool = True,
        output: OutputPart = None,
    ) -> None:
        if target_layer is not None:
            raise OptionError("FullGrad uses every bias layer and takes no target_layer")
        super().__init__(model, None, upsample=upsample, output=output)

    def _resolve(self, image: Tensor) -> list[TargetLayer]:
        super()._resolve(image)
        layers = [TargetLayer(n, m) for n, m in self.model.named_modules() if _has_bias(m)]
        if not layers:
            raise ModelError("FullGrad needs convolutions with biases or batch norms; found none")
        return layers

    def _explain(self, x: Tensor, target: Target) -> Evidence:
        records: list[tuple[nn.Module, Tensor]] = []

        def record(module: nn.Module, inputs: object, output: Tensor) -> Tensor:
            records.append((module, output))
            return output.clone()  # later in-place operations must not reach the recorded output

        hooks = [layer.module.register_forward_hook(record) for layer in self.target_layers or []]
        with removing(*hooks), autograd_on():
            inputs = differentiable(x)
            logits = explained_output(self.model(inputs))
            bound = target.bind(logits.detach())
            tensors = [inputs, *(output for _, output in records)]
            per_target = target_gradients(bound, logits, tensors)
        with torch.inference_mode():
            maps = torch.stack([self._saliency(x, records, g) for g in per_target], dim=1)
        return Evidence(logits.detach(), bound, maps)

    @staticmethod
    def _saliency(
        x: Tensor, records: list[tuple[nn.Module, Tensor]], gradients: tuple[Tensor, ...]
    ) -> Tensor:
        """(B, *grid) FullGrad of one target from its input and bias-layer gradients."""
        size = tuple(x.shape[2:])
        saliency = postprocess(gradients[0] * x).sum(dim=1)
        for (module, _), gradient in zip(records, gradients[1:], strict=True):
            bias = effective_bias(module).view(1, -1, *(1,) * (gradient.ndim - 2))
            # Upsampling is linear: summing the channels first gives the same map, cheaply.
            summed = postprocess(gradient * bias).sum(dim=1)
            saliency += resize(summed, size, align_corners=True)
        return saliency
