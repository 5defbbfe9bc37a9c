"""The files of a photo's detection explanation, as `reciprocam explain --task detection`
writes them (and `reciprocam app` shows them).

Into the output folder: `<stem>_detections.png` (the photo with the explained boxes),
`<stem>_<method>_box<i>.png` (each box's overlay), `<stem>_<method>_grid.png` (all of them),
`<stem>_<method>.npy` (the (T, H, W) maps, float32 in [0, 1] at the photo's size) and
`<stem>_<method>_boxes.json` (each map's label, name, score and box, in the maps' order; the
file `--boxes` reads).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..files import write_atomically
from ..photos import category_name, save_array, save_png
from ..visualize import Panel, draw_boxes, overlay, save_grid
from .explainer import DetectionExplanation


@dataclass(frozen=True)
class DetectionFiles:
    """What `write_detection_files` wrote, each box's caption, and the boxes file's rows."""

    detections: Path
    overlays: tuple[Path, ...]
    grid: Path
    maps: Path
    boxes: Path
    captions: tuple[str, ...]
    rows: tuple[dict[str, Any], ...]


def write_detection_files(
    path: Path,
    image: Image.Image,
    explanation: DetectionExplanation,
    output: Path,
    method: str,
    categories: Sequence[str],
    *,
    colormap: str = "jet",
    alpha: float = 0.5,
) -> DetectionFiles:
    """Write the files of the photo at `path` (the module docstring) into `output`."""
    stem = f"{path.stem}_{method}"
    boxes = explanation.boxes.tolist()
    captions = tuple(
        box_caption(int(label), float(score), categories)
        for label, score in zip(explanation.labels, explanation.scores, strict=True)
    )
    detections = output / f"{path.stem}_detections.png"
    write_atomically(detections, partial(save_png, draw_boxes(image, boxes, list(captions))))
    panels, overlays = [], []
    for index, (saliency, box, caption) in enumerate(
        zip(explanation.maps, boxes, captions, strict=True)
    ):
        picture = overlay(image, saliency, colormap=colormap, alpha=alpha)
        picture = draw_boxes(picture, [box], [caption], scale=picture.width / image.width)
        overlays.append(output / f"{stem}_box{index}.png")
        write_atomically(overlays[-1], partial(save_png, picture))
        panels.append(Panel(draw_boxes(image, [box], [""]), picture, caption, method))
    grid = output / f"{stem}_grid.png"
    save_grid(panels, grid, columns=min(2, len(panels)), heading=path.name)
    maps = output / f"{stem}.npy"
    write_atomically(maps, partial(save_array, explanation.maps.float().cpu().numpy()))
    rows = tuple(
        {"label": int(label), "name": category_name(int(label), categories), "score": _score(score),
         "box": box}
        for label, score, box in zip(explanation.labels, explanation.scores, boxes, strict=True)
    )  # fmt: skip
    listed = output / f"{stem}_boxes.json"
    write_atomically(listed, partial(_write_json, rows))
    return DetectionFiles(detections, tuple(overlays), grid, maps, listed, captions, rows)


def box_caption(label: int, score: float, categories: Sequence[str]) -> str:
    """A box's caption: its class name and score (the name alone for a given box)."""
    name = category_name(label, categories)
    return name if score != score else f"{name} {score:.2f}"


def _write_json(rows: Sequence[dict[str, object]], path: Path) -> None:
    path.write_text(json.dumps(list(rows), indent=1), encoding="utf-8")


def _score(score: torch.Tensor) -> float | None:
    value = float(score)
    return None if value != value else round(value, 4)  # NaN: a given box
