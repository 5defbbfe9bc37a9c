"""Eigen-CAM (Muhammad & Yeasin 2020) of a detector: the pyramid's first principal component.

The levels are stacked at the reference grid (`stacked_levels`, as pytorch-grad-cam's Faster
R-CNN tutorial does) and each position's feature vector is projected on their first principal
component (`reciprocam.methods.eigen_cam.principal_projection`). It knows no target: every box
of the image gets the same map.
"""

from __future__ import annotations

from torch import Tensor

from ..methods.eigen_cam import principal_projection
from .explainer import Context, DetectionExplainer, grid, stacked_levels


class DetEigenCAM(DetectionExplainer):
    """Eigen-CAM of the stacked pyramid: one map, given to every box."""

    def _raw_maps(self, context: Context) -> Tensor:
        levels = context.levels
        size = grid(levels[context.reference])
        projection = principal_projection(stacked_levels(levels, size))[0]
        return projection.expand(context.targets.count, -1, -1)
