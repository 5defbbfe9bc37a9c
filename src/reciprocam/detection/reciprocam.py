"""ReciproCAM for detectors: one batch of masked pyramids gives the maps of every box.

Let the detector's backbone and neck give the levels F_l (C_l, H_l, W_l) and pick a reference
level l* (`reference_level`: the coarsest with at least 8 positions on its shorter side) with
K = H* x W* positions. For each position k = i*W* + j, the masked copy keeps

    at l*:           F_l* * M_k          M_k one-hot at (i, j), or ReciproCAM's clipped 3x3
                                         Gaussian centred there (mask="gaussian")
    at every l:      F_l * R_l(M_k)      R_l(M)[r, c] = max of M over the reference cells whose
                                         image region overlaps cell (r, c) of level l

so every level keeps the same image region and none leaks the masked evidence. The K copies
run through the rest of the detector (RPN and box head, or the dense heads, and the box
decoding) before thresholds and NMS, and the map of target t is its D-RISE similarity in each
copy (`reciprocam.detection.boxes`):

    S[t, i, j] = max_j' IoU(b_t, B_j'(copy k)) * cos(P_t, P_j'(copy k)) * O_j'(copy k)

Every box of the image is scored from the same K copies: one backbone pass and K head passes
(`batch_size` at a time) whatever the number of boxes.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from ..methods.reciprocam import Mask, spatial_masks
from ..options import one_of
from .detectors import Levels
from .explainer import Context, DetectionExplainer


def overlap(fine: int, reference: int, like: Tensor) -> Tensor:
    """(fine, reference) 1 where cell r of a `fine`-cell axis and cell i of a `reference`-cell
    axis cover overlapping parts of the same image side (both split evenly), else 0."""
    r = torch.arange(fine)[:, None]
    i = torch.arange(reference)[None]
    overlapping = (r * reference < (i + 1) * fine) & (i * fine < (r + 1) * reference)
    return overlapping.to(like)


def level_masks(masks: Tensor, rows: Tensor, columns: Tensor) -> Tensor:
    """(n, H_l, W_l) R_l(M) of (n, H*, W*) reference masks, given the rows' (H_l, H*) and
    columns' (W_l, W*) overlaps: the largest mask value over overlapping reference cells."""
    across = (masks[:, :, None, :] * columns).amax(dim=-1)  # (n, H*, W_l)
    return (across[:, None] * rows[None, :, :, None]).amax(dim=2)  # (n, H_l, W_l)


class DetReciproCAM(DetectionExplainer):
    """ReciproCAM for torchvision detectors (the module docstring gives the definition).

    Args:
        mask: "pixel" (one-hot) or "gaussian" (the 3x3 kernel of ReciproCAM's variant).

    The other options (threshold, level, batch_size, progress) are `DetectionExplainer`'s.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        mask: Mask = "pixel",
        threshold: float = 0.5,
        level: str | None = None,
        batch_size: int | None = None,
        progress: bool = False,
    ) -> None:
        super().__init__(
            model, threshold=threshold, level=level, batch_size=batch_size, progress=progress
        )
        self.mask: Mask = one_of("mask", mask, ("pixel", "gaussian"))

    def _raw_maps(self, context: Context) -> Tensor:
        levels = context.levels
        height, width = levels[context.reference].shape[-2:]
        reference = spatial_masks(height, width, self.mask, levels[context.reference])[:, 0]
        overlaps = {
            key: (overlap(level.shape[-2], height, level), overlap(level.shape[-1], width, level))
            for key, level in levels.items()
        }

        def copies(start: int, stop: int) -> Levels:
            masks = reference[start:stop]
            return OrderedDict(
                (key, level * level_masks(masks, *overlaps[key])[:, None])
                for key, level in levels.items()
            )

        scores = self._score_copies(context, height * width, copies)  # (K, T)
        return scores.T.reshape(-1, height, width)
