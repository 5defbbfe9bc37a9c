"""Gradient maps of a box: Grad-CAM over the pyramid, and ODAM (Zhao & Chan, ICLR 2023).

The box's score y_t is differentiated with respect to every pyramid level F_l: by default its
D-RISE similarity in the unmasked image's candidates (`box_score="similarity"`, the same score
the masking methods read), or pytorch-grad-cam's `FasterRCNNBoxScoreTarget` for that box
(`box_score="iou+score"`: IoU + score of the best-overlapping final detection of its label).

Grad-CAM sees the pyramid as one layer, as pytorch-grad-cam's Faster R-CNN tutorial does: each
level and its gradient are resized bilinearly to the reference grid and concatenated,
A (sum C, h, w) and G, and S_t = ReLU(sum_c mean_hw(G_c) A_c). (The tutorial also takes |A|;
here the activations keep their sign, as Grad-CAM's definition has them.)

ODAM keeps the gradient element-wise: H_t = ReLU(sum_l up(sum_c G_l,c * F_l,c)), each level's
map upsampled to the finest level's grid. The paper reads the one level that produced the
box; every other level's gradient is zero for a one-stage detector's box, so the sum is that
level's map.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._model import autograd_on
from ..options import one_of
from .detectors import Levels
from .explainer import Context, DetectionExplainer, grid, stacked_levels

BoxScore = Literal["similarity", "iou+score"]


class BoxGradientExplainer(DetectionExplainer):
    """A method built on each target's gradient with respect to the pyramid levels.

    Args:
        box_score: "similarity" (D-RISE's) or "iou+score" (pytorch-grad-cam's).

    The other options (threshold, level, progress) are `DetectionExplainer`'s.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        box_score: BoxScore = "similarity",
        threshold: float = 0.5,
        level: str | None = None,
        progress: bool = False,
    ) -> None:
        super().__init__(model, threshold=threshold, level=level, progress=progress)
        self.box_score: BoxScore = one_of("box_score", box_score, ("similarity", "iou+score"))

    def _gradients(self, context: Context) -> tuple[Levels, list[Levels]]:
        """The levels (1, C, h, w) and, per target, their gradients (zero where unused)."""
        with autograd_on():
            tensors = context.prepared.images.tensors.clone()
            levels = OrderedDict(
                (key, level.detach().requires_grad_(True))
                for key, level in self.detector.features(tensors).items()
            )
            if self.box_score == "similarity":
                candidates = self.detector.candidates(levels, context.prepared)
                scores = context.targets.similarity(candidates)[0]
            else:
                detections = self.detector.detections(levels, context.prepared)
                scores = context.targets.iou_plus_score(detections)[0]
            gradients = []
            for index in range(context.targets.count):
                found = torch.autograd.grad(
                    scores[index],
                    list(levels.values()),
                    retain_graph=index + 1 < context.targets.count,
                    allow_unused=True,
                    materialize_grads=True,
                )
                gradients.append(OrderedDict(zip(levels, found, strict=True)))
        detached = OrderedDict((key, level.detach()) for key, level in levels.items())
        return detached, gradients


class DetGradCAM(BoxGradientExplainer):
    """Grad-CAM of each box over the stacked pyramid (the module docstring)."""

    def _raw_maps(self, context: Context) -> Tensor:
        levels, gradients = self._gradients(context)
        size = grid(context.levels[context.reference])
        activations = stacked_levels(levels, size)[0]  # (sum C, h, w)
        maps = []
        for gradient in gradients:
            weights = stacked_levels(gradient, size)[0].mean(dim=(1, 2))
            maps.append(F.relu(torch.einsum("c,chw->hw", weights, activations)))
        return torch.stack(maps)


class ODAM(BoxGradientExplainer):
    """ODAM: each box's element-wise gradient x activation, summed over levels."""

    def _raw_maps(self, context: Context) -> Tensor:
        levels, gradients = self._gradients(context)
        finest = grid(next(iter(levels.values())))
        maps = []
        for gradient in gradients:
            products = OrderedDict(
                (key, (gradient[key] * level).sum(dim=1, keepdim=True))
                for key, level in levels.items()
            )
            maps.append(F.relu(stacked_levels(products, finest)[0].sum(dim=0)))
        return torch.stack(maps)
