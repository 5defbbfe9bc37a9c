"""Score-CAM (Wang et al. 2020), as Algorithm 1 of the paper defines it.

Each channel k of the target layer's activations A is upsampled to the input size (bilinear,
align_corners=True as pytorch-grad-cam does; the paper does not specify), min-max normalised to
a mask H_k (a constant channel gives a zero mask), and the model scores the masked input
x * H_k. The weights are the softmax over channels of the masked inputs' logits,
alpha_k^c = softmax_k(y^c(x * H_k)) (the paper's baseline score y^c(x_b) cancels in it), and
the map is ReLU(sum_k alpha_k^c A_k). Every class (or every target's score y^t, on the logit
scale) comes from the same forward passes.

Cost: one forward pass per channel (512 on ResNet-18's layer4), `batch_size` masked inputs at a
time, so memory stays bounded whatever the number of channels; constant channels (dead ReLUs)
all mask the input to zero and share one pass.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn
from tqdm import tqdm

from .._model import OutputPart, explained_output
from ..grids import grid_axes, resize
from ..layers import LayerSpecs, TargetLayer
from ..layout import LayoutSpec
from ..options import positive
from ..targets import BoundTarget
from .feature_maps import FeatureMapExplainer, Fuse


def channel_masks(channels: Tensor, size: tuple[int, ...]) -> Tensor:
    """(n, *size) masks in [0, 1] from (n, *grid) channels: upsampled (bilinearly, or
    trilinearly for a video or volume), then min-max normalised."""
    flat = resize(channels, size, align_corners=True).flatten(1)
    low = flat.amin(dim=1, keepdim=True)
    spread = flat.amax(dim=1, keepdim=True) - low
    masks = torch.where(spread > 0, (flat - low) / torch.where(spread > 0, spread, 1.0), 0.0)
    return masks.view(-1, *size)


class ScoreCAM(FeatureMapExplainer):
    """Score-CAM: channels weighted by the scores of the input they mask; no gradients.

    Args:
        batch_size: masked inputs per forward pass (default 32).
        progress: show a progress bar.
    """

    uses_gradients: ClassVar[bool] = False

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpecs = None,
        *,
        batch_size: int = 32,
        progress: bool = False,
        fuse: Fuse = "mean",
        upsample: bool = True,
        layout: LayoutSpec = None,
        output: OutputPart = None,
    ) -> None:
        super().__init__(
            model, target_layer, fuse=fuse, upsample=upsample, output=output, layout=layout
        )
        self.batch_size = positive("batch_size", batch_size)
        self.progress = progress

    def _layer_maps(
        self, x: Tensor, logits: Tensor, target: BoundTarget, layer: TargetLayer,
        activations: Tensor, gradients: Tensor | None,
    ) -> Tensor:  # fmt: skip
        batch, channels = activations.shape[:2]
        size = tuple(x.shape[2:])
        dtype = torch.promote_types(activations.dtype, torch.float32)
        scores = activations.new_empty(batch, channels, target.count, dtype=dtype)
        # A constant channel masks the whole input to zero: one pass scores them all.
        grid = grid_axes(activations)
        flat = activations.amax(dim=grid) == activations.amin(dim=grid)
        if bool(flat.any()):
            blank = explained_output(self.model(torch.zeros_like(x[:1])))
            each = target(
                blank.expand(batch, *blank.shape[1:]), torch.arange(batch, device=x.device)
            )
            scores[flat] = each[torch.nonzero(flat)[:, 0]]
        varying = [(b, torch.nonzero(~flat[b])[:, 0]) for b in range(batch)]
        step = self.batch_size
        chunks = [(b, k[s : s + step]) for b, k in varying for s in range(0, len(k), step)]
        for image, indices in tqdm(chunks, desc="Score-CAM", disable=not self.progress):
            masks = channel_masks(activations[image, indices], size)
            output = explained_output(self.model(x[image] * masks[:, None]))
            scores[image, indices] = target(output, torch.full_like(indices, image))
        weights = scores.softmax(dim=1).to(activations)  # over channels, for every target
        return torch.relu(torch.einsum("bkn,bk...->bn...", weights, activations))
