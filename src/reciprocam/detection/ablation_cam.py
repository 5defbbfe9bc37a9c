"""Ablation-CAM (Desai & Ramaswamy, WACV 2020) of a box, over the pyramid's channels.

Each channel c of each level l is zeroed in its own copy of the pyramid, the copies run
through the rest of the detector, and the box's similarity y_lc in each is read (the same
score as ReciproCAM's, `reciprocam.detection.boxes`). With y the unmasked image's similarity,
w_lc = (y - y_lc) / y and S = ReLU(sum_lc w_lc A_lc), A the pyramid stacked at the reference
grid (`stacked_levels`): pytorch-grad-cam's AblationCAM with its Faster R-CNN ablation layer,
on every channel (its `ratio_channels_to_ablate` = 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .detectors import Levels
from .explainer import Context, DetectionExplainer, grid, repeated_levels, stacked_levels


class DetAblationCAM(DetectionExplainer):
    """Ablation-CAM of each box: one copy per channel of the pyramid (sum C_l copies)."""

    def _raw_maps(self, context: Context) -> Tensor:
        levels = context.levels
        channels = [
            (key, channel) for key, level in levels.items() for channel in range(level.shape[1])
        ]

        def copies(start: int, stop: int) -> Levels:
            ablated = repeated_levels(levels, stop - start)
            for row, (key, channel) in enumerate(channels[start:stop]):
                ablated[key][row, channel] = 0
            return ablated

        ablated = self._score_copies(context, len(channels), copies)  # (sum C, T)
        unmasked = context.targets.similarity(context.candidates)  # (1, T)
        weights = (unmasked - ablated) / unmasked.clamp_min(torch.finfo(unmasked.dtype).tiny)
        size = grid(levels[context.reference])
        activations = stacked_levels(levels, size)[0]
        return F.relu(torch.einsum("kt,khw->thw", weights, activations))
