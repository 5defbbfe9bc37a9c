"""The page's pictures besides the overlays: a raw grid, and the causal curves as a plot."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor

from ..visualize import overlay
from .explore import MethodResult

GRID_SIDE = 256
"""A raw grid is enlarged to about this many pixels a side, each cell a square block."""


def grid_picture(grid: Tensor, *, colormap: str = "jet") -> Image.Image:
    """The (h, w) map at the layer's grid, colour-mapped as overlays are (fully opaque), one
    block of pixels per cell."""
    height, width = grid.shape
    cells = overlay(Image.new("RGB", (width, height)), grid, colormap=colormap, alpha=1.0)
    scale = max(1, GRID_SIDE // max(height, width))
    return cells.resize((width * scale, height * scale), Image.Resampling.NEAREST)


def curves_figure(results: Sequence[MethodResult]) -> Figure:
    """Deletion and Insertion side by side: each method's curve, its AUC in the legend."""
    figure = Figure(figsize=(10, 3.6), dpi=100)
    deletion, insertion = figure.subplots(1, 2)
    for axis, title in (
        (deletion, "Deletion (lower is better)"),
        (insertion, "Insertion (higher is better)"),
    ):
        axis.set_title(title)
        axis.set_xlabel("share of pixels changed, most salient first")
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
    deletion.set_ylabel("probability of the class")
    for result in results:
        for axis, curve in ((deletion, result.deletion), (insertion, result.insertion)):
            if curve is not None:
                label = f"{result.method} (AUC {curve.auc:.3f})"
                axis.plot(curve.fractions.numpy(), curve.probabilities.numpy(), label=label)
    for axis in (deletion, insertion):
        axis.legend(fontsize=8)
    figure.tight_layout()
    return figure
