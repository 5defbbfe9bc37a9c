"""The offline demo: real photos explained with the real ImageNet EfficientNet-Lite0."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator
from pathlib import Path

import torch

from .errors import ModelError
from .files import write_atomically
from .methods import ReciproCAM
from .names import DEMO_GRID
from .photos import ExplainedPhoto, SkippedPhoto, explain_photos
from .visualize import Panel, save_grid
from .zoo import load_model

# (distribution, file inside it, title): CC0 photos of scikit-image, ImageNet photos of foolbox.
DEMO_PHOTOS = (
    ("scikit-image", "skimage/data/chelsea.png", "Chelsea the cat"),
    ("scikit-image", "skimage/data/coffee.png", "coffee"),
    ("foolbox", "foolbox/data/imagenet_16_251.jpg", "ImageNet photo of a dalmatian"),
    ("foolbox", "foolbox/data/imagenet_17_22.jpg", "ImageNet photo of a bald eagle"),
    ("foolbox", "foolbox/data/imagenet_04_949.jpg", "ImageNet photo of strawberries"),
    ("foolbox", "foolbox/data/imagenet_15_99.jpg", "ImageNet photo of geese"),
    ("foolbox", "foolbox/data/imagenet_13_471.jpg", "ImageNet photo of a cannon"),
    ("foolbox", "foolbox/data/imagenet_08_915.jpg", "ImageNet photo of yurts"),
)


def demo_photos() -> list[Path]:
    """The demo's photo files, as installed by the `demo` extra."""
    photos = []
    for distribution, file, _ in DEMO_PHOTOS:
        try:
            path = Path(str(importlib.metadata.distribution(distribution).locate_file(file)))
        except importlib.metadata.PackageNotFoundError:
            path = Path(file)
        if not path.is_file():
            raise ModelError(
                f"the demo photo {file} is missing; install the demo extra:"
                " pip install 'reciprocam[demo]'"
            )
        photos.append(path)
    return photos


def run_demo(output: Path, device: torch.device) -> Iterator[ExplainedPhoto | SkippedPhoto]:
    """Explain the demo photos into `output`, then draw them all in `output/demo.png`."""
    loaded = load_model()
    loaded.model.to(device)
    explained = []
    with ReciproCAM(loaded.model) as explainer:
        for result in explain_photos(
            demo_photos(),
            explainer,
            output,
            preprocessing=loaded.preprocessing,
            categories=loaded.categories,
            method="reciprocam",
            device=device,
        ):
            if isinstance(result, ExplainedPhoto):
                explained.append(result)
            yield result
    titles = {Path(file).name: title for _, file, title in DEMO_PHOTOS}
    panels = [
        Panel(
            r.photo, m.overlay, titles[r.path.name], f"{m.target.name} ({m.target.probability:.0%})"
        )
        for r in explained
        for m in r.maps
    ]
    heading = "ReciproCAM on ImageNet EfficientNet-Lite0: each photo and the map of its top-1 class"
    write_atomically(output / DEMO_GRID, lambda path: save_grid(panels, path, heading=heading))
