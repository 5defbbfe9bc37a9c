"""Pictures of explanations: a heatmap overlaid on the photo, and a grid of several."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from .files import make_folder
from .zoo.preprocessing import Box

MAX_OVERLAY_SIDE = 800
"""Overlays are drawn at the photo's resolution, scaled down to at most this many pixels a side."""


def overlay(
    image: Image.Image, saliency: Tensor, *, colormap: str = "jet", alpha: float = 0.5
) -> Image.Image:
    """Blend a colour-mapped (h, w) map in [0, 1] over `image`, resizing the map bilinearly."""
    scale = min(1.0, MAX_OVERLAY_SIDE / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    photo = (
        image.convert("RGB").resize(size, Image.Resampling.BICUBIC)
        if scale < 1
        else image.convert("RGB")
    )
    resized = F.interpolate(
        saliency.detach().to("cpu", torch.float32)[None, None],
        size=(photo.height, photo.width),
        mode="bilinear",
        align_corners=False,
    )[0, 0].clamp(0, 1)
    colours = matplotlib.colormaps[colormap](resized.numpy())[..., :3]
    blended = (1 - alpha) * np.asarray(photo, dtype=np.float64) / 255 + alpha * colours
    return Image.fromarray(np.rint(blended * 255).astype(np.uint8))


def outline(picture: Image.Image, region: Tensor, *, width: int = 2) -> Image.Image:
    """`picture` with the border of an (h, w) boolean region drawn in white over it."""
    mask = region.detach().to("cpu", torch.float32)[None, None]
    mask = F.interpolate(mask, size=(picture.height, picture.width), mode="nearest")
    reach = 2 * width + 1
    grown = F.max_pool2d(mask, reach, stride=1, padding=width)
    shrunk = -F.max_pool2d(-mask, reach, stride=1, padding=width)
    border = ((grown - shrunk)[0, 0] > 0) & (mask[0, 0] > 0)
    pixels = np.array(picture.convert("RGB"))
    pixels[border.numpy()] = 255
    return Image.fromarray(pixels)


@dataclass(frozen=True)
class Panel:
    """One photo of a grid: the photo, its overlay, and their captions."""

    photo: Image.Image
    overlay: Image.Image
    title: str
    caption: str


def crop_to_box(image: Image.Image, box: Box) -> Image.Image:
    """The region of `image` that a preprocessed input shows (at least one pixel a side)."""
    left, top, right, bottom = (round(v) for v in box)
    return image.crop((left, top, max(right, left + 1), max(bottom, top + 1)))


def save_grid(panels: Sequence[Panel], path: Path, *, columns: int = 2, heading: str = "") -> None:
    """Save a figure of photo | overlay pairs, `columns` pairs a row, captioned, as a PNG."""
    from matplotlib.figure import Figure  # the object API needs no display or global state

    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(4 * 2 * columns, 4.3 * rows + (0.6 if heading else 0)), dpi=100)
    axes = figure.subplots(rows, 2 * columns, squeeze=False)
    for axis in axes.flat:
        axis.set_axis_off()
    for index, panel in enumerate(panels):
        row, column = divmod(index, columns)
        left, right = axes[row, 2 * column], axes[row, 2 * column + 1]
        left.imshow(panel.photo)
        left.set_title(panel.title, fontsize=12)
        right.imshow(panel.overlay)
        right.set_title(panel.caption, fontsize=12)
    if heading:
        figure.suptitle(heading, fontsize=15)
    figure.tight_layout()
    make_folder(path.parent)
    figure.savefig(path, format="png")


def draw_boxes(
    picture: Image.Image,
    boxes: Sequence[Sequence[float]],
    captions: Sequence[str],
    *,
    scale: float = 1.0,
    colour: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """`picture` with each (x1, y1, x2, y2) box (in pixels of a photo `scale` times smaller or
    larger) outlined and captioned above its top-left corner."""
    from PIL import ImageDraw

    drawn = picture.convert("RGB")
    draw = ImageDraw.Draw(drawn)
    width = max(1, round(max(drawn.size) / 250))
    for box, caption in zip(boxes, captions, strict=True):
        x1, y1, x2, y2 = (v * scale for v in box)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        if caption:
            left, top, right, bottom = draw.textbbox((x1, y1), caption)
            lift = bottom - top + 2
            draw.rectangle((left, top - lift, right + 2, bottom - lift), fill=colour)
            draw.text((x1 + 1, y1 - lift), caption, fill=(0, 0, 0))
    return drawn
