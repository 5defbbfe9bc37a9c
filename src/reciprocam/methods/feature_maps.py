"""The CAM family's base: methods that weight a layer's feature maps into a map.

A method reads the target layer's activations A (B, C, h, w), or (B, C, t, h, w) on video and
volumes, through the layer's layout
(`reciprocam.layout`: channels-last maps and token grids become channels-first, prefix tokens
dropped) and, if it `uses_gradients`, their gradients G = dy_t/dA of each image's target score
y_t (a class logit, a region's logits, `reciprocam.targets`), taken with `torch.autograd.grad`
(one backward pass per target): the model's `.grad` and `requires_grad` are never touched. A
method implements `_layer_maps`, its own mathematics; the base runs the passes and fuses the
maps of several layers.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from contextlib import ExitStack
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from .._model import OutputPart, autograd_on, differentiable, explained_output
from ..explainer import Evidence, Explainer, normalize_maps, upsample_maps
from ..grids import grid_rank
from ..layers import LayerSpecs, LayerTap, TargetLayer, resolve_layers
from ..layout import LayoutSpec, layout_kind
from ..options import one_of
from ..targets import BoundTarget, Target

Fuse = Literal["mean", "max"]


class FeatureMapExplainer(Explainer):
    """Base of the methods that combine a layer's activations (and gradients) into maps.

    `target_layer` may be a list: each layer's map is normalised, upsampled to the input, and
    the maps are fused by their mean (or maximum), as pytorch-grad-cam (or torchcam) does.
    `layout` forces how the layers' outputs are read ("nchw", "nhwc", "tokens"); None decides
    it from the model.
    """

    uses_gradients: ClassVar[bool] = True
    class_agnostic: ClassVar[bool] = False  # one map whatever the target (Eigen-CAM)

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpecs = None,
        *,
        fuse: Fuse = "mean",
        upsample: bool = True,
        layout: LayoutSpec = None,
        output: OutputPart = None,
    ) -> None:
        super().__init__(model, target_layer, upsample=upsample, output=output)
        self.fuse = one_of("fuse", fuse, ("mean", "max"))
        layout_kind(layout)  # a misspelt layout is refused now, not at the first call
        self.layout = layout

    def _resolve(self, image: Tensor) -> list[TargetLayer]:
        return resolve_layers(self.model, self._layer_spec, image, layout=self.layout)

    def _explain(self, x: Tensor, target: Target) -> Evidence:
        layers = self.target_layers or []
        activations, gradients, logits, bound = self._tapped_pass(
            layers, x, target, gradients=self.uses_gradients
        )
        with torch.inference_mode():
            per_layer = [
                self._maps_of_layer(x, logits, bound, layer, a, g)
                for layer, a, g in zip(layers, activations, gradients, strict=True)
            ]
        return self._evidence(x, logits, bound, per_layer)

    def _tapped_pass(
        self,
        layers: list[TargetLayer],
        x: Tensor,
        target: Target | BoundTarget,
        *,
        gradients: bool,
        images: Tensor | None = None,
    ) -> tuple[list[Tensor], list[Tensor | None], Tensor, BoundTarget]:
        """One forward pass with the layers tapped, and for `gradients` one backward pass per
        target (the graph is kept between them).

        Returns each layer's (B, C, h, w) activations and (B, T, C, h, w) gradients, the
        explained output and the target bound to it. A target already bound (to the batch
        that `images` numbers each row of x with) is used as it is. Each tap hands the rest
        of the network a copy of the layer's output, so later in-place operations change
        neither the recorded values nor their gradients.
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
                    logits = explained_output(self.model(differentiable(x)))
                    bound = bind(target, logits.detach())
                    grads = target_gradients(bound, logits, outputs, images)
            else:
                with torch.inference_mode():
                    logits = explained_output(self.model(x))
                bound = bind(target, logits)
        activations = [layer.features(o.detach()) for o, layer in zip(outputs, layers, strict=True)]
        if not gradients:
            return activations, [None] * len(layers), logits, bound
        per_layer: list[Tensor | None] = [
            torch.stack([layer.features(g) for g in by_target], dim=1)
            for layer, by_target in zip(layers, zip(*grads, strict=True), strict=True)
        ]
        return activations, per_layer, logits.detach(), bound

    def _maps_of_layer(
        self,
        x: Tensor,
        logits: Tensor,
        target: BoundTarget,
        layer: TargetLayer,
        activations: Tensor,
        gradients: Tensor | None,
    ) -> tuple[Tensor, Tensor | None]:
        """One layer's (B, T, h, w) maps of the targets, and the (B, T', h, w) maps of every
        score (`target.every()`) a method without gradients computes at once (else None).

        A gradient method gets one `_layer_maps` call per target's gradients; a class-agnostic
        method's one map serves every target."""
        if gradients is not None:
            maps = [
                self._layer_maps(x, logits, target, layer, activations, gradients[:, t])
                for t in range(gradients.shape[1])
            ]
            return torch.stack(maps, dim=1), None
        if self.class_agnostic:
            one = self._layer_maps(x, logits, target, layer, activations, None)
            return one[:, None].expand(-1, target.count, *one.shape[1:]), None
        every = self._layer_maps(x, logits, target.every(), layer, activations, None)
        return target.pick(every), every

    @abstractmethod
    def _layer_maps(
        self,
        x: Tensor,
        logits: Tensor,
        target: BoundTarget,
        layer: TargetLayer,
        activations: Tensor,
        gradients: Tensor | None,
    ) -> Tensor:
        """The raw maps of one layer: (B, h, w) for one target's (B, C, h, w) gradients, or a
        class-agnostic method's one map; (B, T, h, w) of each of `target`'s scores for a
        method without gradients."""

    def _evidence(
        self,
        x: Tensor,
        logits: Tensor,
        target: BoundTarget,
        per_layer: list[tuple[Tensor, Tensor | None]],
    ) -> Evidence:
        if len(per_layer) == 1:
            maps, every = per_layer[0]
            return Evidence(logits, target, maps, every)
        size, rank = tuple(x.shape[2:]), grid_rank(x)
        stacked = torch.stack(
            [upsample_maps(normalize_maps(maps, rank), size) for maps, _ in per_layer]
        )
        fused = stacked.mean(dim=0) if self.fuse == "mean" else stacked.amax(dim=0)
        return Evidence(logits, target, fused)


def bind(target: Target | BoundTarget, output: Tensor) -> BoundTarget:
    """The target bound to `output`, or the already bound one."""
    return target if isinstance(target, BoundTarget) else target.bind(output)


def target_gradients(
    target: BoundTarget, output: Tensor, tensors: list[Tensor], images: Tensor | None = None
) -> list[tuple[Tensor, ...]]:
    """d(sum over the batch of each target's logit-scale score)/d`tensors`, one backward per
    target (the images' scores are independent, so one sum gives every image's gradient); a
    tensor the score does not depend on (a segmenter's training head) gets zeros."""
    rows = torch.arange(output.shape[0], device=output.device) if images is None else images
    scores = target(output, rows, "logit")
    count = scores.shape[1]
    return [
        torch.autograd.grad(
            scores[:, t].sum(),
            tensors,
            retain_graph=t < count - 1,
            allow_unused=True,
            materialize_grads=True,
        )
        for t in range(count)
    ]
