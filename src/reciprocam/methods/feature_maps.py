"""The CAM family's base: methods that weight a layer's feature maps into a map.

A method reads the target layer's activations A (B, C, h, w) through the layer's layout
(`reciprocam.layout`: channels-last maps and token grids become channels-first, prefix tokens
dropped) and, if it `uses_gradients`, their gradients
G = dy_c/dA of each image's target-class logit y_c, taken with `torch.autograd.grad`: the
model's `.grad` and `requires_grad` are never touched. A method implements `_layer_maps`, its
own mathematics; the base runs the passes and fuses the maps of several layers.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from contextlib import ExitStack
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from .._model import autograd_on, class_scores, differentiable
from ..explainer import (
    Evidence,
    Explainer,
    choose_targets,
    normalize_maps,
    upsample_maps,
)
from ..layers import LayerSpecs, LayerTap, TargetLayer, resolve_layers
from ..layout import LayoutSpec, layout_kind
from ..options import one_of

Fuse = Literal["mean", "max"]


class FeatureMapExplainer(Explainer):
    """Base of the methods that combine a layer's activations (and gradients) into maps.

    `target_layer` may be a list: each layer's map is normalised, upsampled to the input, and
    the maps are fused by their mean (or maximum), as pytorch-grad-cam (or torchcam) does.
    `layout` forces how the layers' outputs are read ("nchw", "nhwc", "tokens"); None decides
    it from the model.
    """

    uses_gradients: ClassVar[bool] = True

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpecs = None,
        *,
        fuse: Fuse = "mean",
        upsample: bool = True,
        layout: LayoutSpec = None,
    ) -> None:
        super().__init__(model, target_layer, upsample=upsample)
        self.fuse = one_of("fuse", fuse, ("mean", "max"))
        layout_kind(layout)  # a misspelt layout is refused now, not at the first call
        self.layout = layout

    def _resolve(self, image: Tensor) -> list[TargetLayer]:
        return resolve_layers(self.model, self._layer_spec, image, layout=self.layout)

    def _explain(self, x: Tensor, requested: Tensor | None) -> Evidence:
        layers = self.target_layers or []
        activations, gradients, logits, targets = self._tapped_pass(
            layers, x, requested, gradients=self.uses_gradients
        )
        with torch.inference_mode():
            per_layer = [
                self._layer_maps(x, logits, targets, layer, a, g)
                for layer, a, g in zip(layers, activations, gradients, strict=True)
            ]
        return self._evidence(x, logits, targets, per_layer)

    def _tapped_pass(
        self, layers: list[TargetLayer], x: Tensor, requested: Tensor | None, *, gradients: bool
    ) -> tuple[list[Tensor], list[Tensor | None], Tensor, Tensor]:
        """One forward pass with the layers tapped, and for `gradients` one backward pass.

        Returns the (B, C, h, w) activations and gradients of each layer, the logits and the
        targets. Each tap hands the rest of the network a copy of the layer's output, so later
        in-place operations change neither the recorded values nor their gradients.
        """
        outputs: list[Tensor] = []

        def recorder(index: int) -> Callable[[Tensor], Tensor]:
            def record(output: Tensor) -> Tensor:
                outputs[index] = output
                return output.clone()

            return record

        with ExitStack() as taps:
            for index, layer in enumerate(layers):
                outputs.append(torch.empty(0))
                taps.enter_context(LayerTap(layer, recorder(index)))
            if gradients:
                with autograd_on():
                    logits = class_scores(self.model(differentiable(x)))
                    # A copy: targets made in inference mode cannot index a graph.
                    targets = choose_targets(logits, requested).clone()
                    score = logits.gather(1, targets[:, None]).sum()
                    grads = torch.autograd.grad(score, outputs)
            else:
                with torch.inference_mode():
                    logits = class_scores(self.model(x))
                    targets = choose_targets(logits, requested)
        activations = [layer.features(o.detach()) for o, layer in zip(outputs, layers, strict=True)]
        if not gradients:
            return activations, [None] * len(layers), logits, targets
        return (
            activations,
            [layer.features(g) for g, layer in zip(grads, layers, strict=True)],
            logits.detach(),
            targets,
        )

    @abstractmethod
    def _layer_maps(
        self,
        x: Tensor,
        logits: Tensor,
        targets: Tensor,
        layer: TargetLayer,
        activations: Tensor,
        gradients: Tensor | None,
    ) -> Tensor:
        """The raw maps of one layer: (B, h, w) of the targets, or (B, N, h, w) of every class."""

    def _evidence(
        self, x: Tensor, logits: Tensor, targets: Tensor, per_layer: list[Tensor]
    ) -> Evidence:
        rows = torch.arange(x.shape[0], device=x.device)
        chosen = [maps[rows, targets] if maps.ndim == 4 else maps for maps in per_layer]
        if len(per_layer) == 1:
            scores = per_layer[0] if per_layer[0].ndim == 4 else None
            return Evidence(logits, targets, chosen[0], scores)
        size = (x.shape[2], x.shape[3])
        stacked = torch.stack([upsample_maps(normalize_maps(maps), size) for maps in chosen])
        fused = stacked.mean(dim=0) if self.fuse == "mean" else stacked.amax(dim=0)
        return Evidence(logits, targets, fused)
