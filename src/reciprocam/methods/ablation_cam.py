"""Ablation-CAM (Desai & Ramaswamy 2020): channels weighted by the score drop their removal causes.

For each channel k of the target layer's output, the channel is set to zero on the grid (in
any layout; a token layout's prefix tokens are kept) and the rest of the network runs: with y^c the
logit of class c and y_k^c the logit with channel k ablated, w_k^c = (y^c - y_k^c) / y^c and the
map is ReLU(sum_k w_k^c A_k). Every class (or every target's logit-scale score) comes from the
same passes.

When the layer is the only path to the prediction (checked on the first call), only the layers
after it run on the ablated copies, once per `batch_size` copies; otherwise each copy runs the
whole network, as in pytorch-grad-cam. pytorch-grad-cam ablates with a large negative value
instead of zero when the layer's output has no zero; this follows the paper.
"""

from __future__ import annotations

from functools import partial
from typing import ClassVar

import torch
from torch import Tensor, nn
from tqdm import tqdm

from .._model import OutputPart, explained_output
from ..layers import LayerSpecs, TargetLayer, copies_entry, run_tapped
from ..layout import LayoutSpec
from ..options import positive_or_none
from ..targets import BoundTarget
from .feature_maps import FeatureMapExplainer, Fuse
from .gradient_cams import safe_divide
from .reciprocam import WHOLE_NETWORK_ROWS, automatic_rows


def ablate(output: Tensor, layer: TargetLayer, channels: Tensor) -> Tensor:
    """Copies of a layer's (1 or n, ...) output, copy i with channel channels[i] set to zero
    on the grid (a token layout's prefix tokens are kept)."""
    copies = output.expand(len(channels), *output.shape[1:]).clone()
    rows = torch.arange(len(channels), device=output.device)
    layer.features(copies)[rows, channels] = 0  # a view of the copies in the layer's layout
    return copies


class AblationCAM(FeatureMapExplainer):
    """Ablation-CAM: channels weighted by the relative drop of the class score without them.

    Args:
        batch_size: ablated copies per forward pass; None runs as many as fit in 256 MiB when
            only the head runs (the layers before it run once per pass), else 32.
        progress: show a progress bar.
    """

    uses_gradients: ClassVar[bool] = False

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpecs = None,
        *,
        batch_size: int | None = None,
        progress: bool = False,
        fuse: Fuse = "mean",
        upsample: bool = True,
        layout: LayoutSpec = None,
        output: OutputPart = None,
    ) -> None:
        super().__init__(
            model, target_layer, fuse=fuse, upsample=upsample, output=output, layout=layout
        )
        self.batch_size = positive_or_none("batch_size", batch_size)
        self.progress = progress
        self._head_only: dict[str, bool] = {}

    def _resolve(self, image: Tensor) -> list[TargetLayer]:
        layers = super()._resolve(image)
        logits = explained_output(self.model(image))
        self._head_only = {
            layer.name: copies_entry(self.model, image, logits, layer) == "layer"
            for layer in layers
        }
        return layers

    def _layer_maps(
        self, x: Tensor, logits: Tensor, target: BoundTarget, layer: TargetLayer,
        activations: Tensor, gradients: Tensor | None,
    ) -> Tensor:  # fmt: skip
        batch, channels = activations.shape[:2]
        dtype = torch.promote_types(activations.dtype, torch.float32)
        ablated = activations.new_empty(batch, channels, target.count, dtype=dtype)
        head_only = self._head_only[layer.name]
        step = self.batch_size or (
            automatic_rows(activations[0].numel() * activations.element_size())
            if head_only
            else WHOLE_NETWORK_ROWS
        )
        chunks = [(b, s) for b in range(batch) for s in range(0, channels, step)]
        for image, start in tqdm(chunks, desc="Ablation-CAM", disable=not self.progress):
            indices = torch.arange(start, min(start + step, channels), device=x.device)
            # Head only: the image's own output, copied; else each copy runs the whole network.
            source = x[image : image + 1]
            inputs = source if head_only else source.expand(len(indices), *source.shape[1:])
            replace = partial(ablate, layer=layer, channels=indices)
            output = run_tapped(self.model, inputs, layer, replace)
            ablated[image, indices] = target(output, torch.full_like(indices, image))
        original = target(logits, torch.arange(batch, device=x.device))[:, None, :]
        weights = safe_divide(original - ablated, original.expand_as(ablated)).to(activations)
        return torch.relu(torch.einsum("bkn,bk...->bn...", weights, activations))
