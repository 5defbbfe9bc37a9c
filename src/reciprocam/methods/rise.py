"""RISE (Petsiuk et al. 2018): saliency from randomly masked inputs, as the official code does.

Each of `masks` random masks is a `cells` x `cells` grid of cells kept with `probability`,
upsampled bilinearly to (cells + 1) cells of the input's size over cells and cropped at a random
offset (so the cells fall anywhere); a video or volume gets 3-D masks, `cells` cells along each
of its (T, H, W) axes, upsampled trilinearly and cropped at a random 3-D offset. The model
scores every masked input x * M_i, and the map of class c is
sum_i softmax(f(x * M_i))_c M_i / (masks * probability); any other target's score
(`reciprocam.targets`) takes the softmax's place. Masks are drawn from `seed` and made
`batch_size` at a time, so memory stays bounded for any number of masks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm import tqdm

from .._model import OutputPart, explained_output
from ..errors import OptionError
from ..explainer import Evidence, Explainer
from ..grids import resize
from ..layers import LayerSpecs
from ..options import one_of, positive
from ..targets import Scale, Target


@dataclass(frozen=True)
class MaskDraws:
    """The random part of RISE masks, drawn at once (small), so masks do not depend on batching."""

    grids: Tensor  # (M, 1, cells, cells) or (M, 1, cells, cells, cells): kept (1) or not (0)
    offsets: Tensor  # (M, rank) the crop's offset along each axis (row, column for images)

    @staticmethod
    def draw(
        count: int, size: tuple[int, ...], cells: int, probability: float, seed: int
    ) -> MaskDraws:
        generator = torch.Generator().manual_seed(seed)
        cell = _cell(size, cells)
        shape = (count, 1, *(cells,) * len(size))
        grids = (torch.rand(shape, generator=generator) < probability).float()
        offsets = torch.stack(
            [torch.randint(0, side, (count,), generator=generator) for side in cell], dim=1
        )
        return MaskDraws(grids, offsets)

    def masks(self, start: int, stop: int, size: tuple[int, ...]) -> Tensor:
        """(stop - start, *size) masks in [0, 1]: grids upsampled (bi- or trilinearly), then
        cropped."""
        cells = self.grids.shape[-1]
        larger = tuple((cells + 1) * side for side in _cell(size, cells))
        upsampled = resize(self.grids[start:stop, 0], larger)
        crops = [
            upsampled[i][_window(offset, size)]
            for i, offset in enumerate(self.offsets[start:stop].tolist())
        ]
        return torch.stack(crops)


def _window(offset: list[int], size: tuple[int, ...]) -> tuple[slice, ...]:
    """The crop of `size` at `offset`, one slice per axis."""
    return tuple(slice(at, at + side) for at, side in zip(offset, size, strict=True))


def _cell(size: tuple[int, ...], cells: int) -> tuple[int, ...]:
    return tuple(math.ceil(side / cells) for side in size)


class RISE(Explainer):
    """RISE: a black-box method; it needs the model's outputs only, and no target layer.

    Args:
        masks: number of random masks (default 4000, the paper's for ImageNet).
        cells: mask grid size (default 7).
        probability: chance a cell is kept (default 0.5).
        batch_size: masked inputs per forward pass (default 64).
        seed: seed of the masks.
        score: how class targets are scored: "softmax" (the paper), "logit" or "sigmoid"
            (multi-label).
        progress: show a progress bar.
    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpecs = None,
        *,
        masks: int = 4000,
        cells: int = 7,
        probability: float = 0.5,
        batch_size: int = 64,
        seed: int = 0,
        score: Scale = "softmax",
        progress: bool = False,
        upsample: bool = True,
        output: OutputPart = None,
    ) -> None:
        if target_layer is not None:
            raise OptionError("RISE masks the input and takes no target_layer")
        super().__init__(model, None, upsample=upsample, output=output)
        self.masks = positive("masks", masks)
        self.cells = positive("cells", cells)
        if not 0 < probability <= 1:
            raise OptionError(f"probability must be in (0, 1], not {probability!r}")
        self.probability = probability
        self.batch_size = positive("batch_size", batch_size)
        self.seed = seed
        self.score: Scale = one_of("score", score, ("softmax", "logit", "sigmoid"))
        self.progress = progress

    def _explain(self, x: Tensor, target: Target) -> Evidence:
        size = tuple(x.shape[2:])
        draws = MaskDraws.draw(self.masks, size, self.cells, self.probability, self.seed)
        with torch.inference_mode():
            logits = explained_output(self.model(x))
            bound = target.bind(logits)
            dtype = torch.promote_types(x.dtype, torch.float32)
            saliency = x.new_zeros(x.shape[0], bound.count, *size, dtype=dtype)
            for start in tqdm(
                range(0, self.masks, self.batch_size), desc="RISE", disable=not self.progress
            ):
                stop = min(start + self.batch_size, self.masks)
                masks = draws.masks(start, stop, size).to(x)
                for image in range(x.shape[0]):
                    output = explained_output(self.model(x[image] * masks[:, None]))
                    images = torch.full((stop - start,), image, device=x.device)
                    weights = bound(output, images, self.score)  # (n, T)
                    saliency[image] += torch.einsum("nt,n...->t...", weights, masks.to(weights))
            saliency /= self.masks * self.probability
        return Evidence(logits, bound, saliency)

    @property
    def multilabel(self) -> bool:
        return self.score == "sigmoid"
