"""`reciprocam demo` on the real ImageNet EfficientNet-Lite0 and real photos, offline."""

from __future__ import annotations

import importlib.metadata
import sys

import numpy as np
import pytest
from PIL import Image

from reciprocam import ModelError
from reciprocam.cli import main
from reciprocam.zoo import load_model


def top1(out: str, photo: str) -> str:
    line = next(line for line in out.splitlines() if line.startswith(f"{photo}: "))
    return line.split(": ", 1)[1].split(", ")[0].rsplit(" ", 1)[0]


def test_demo(tmp_path, capsys):
    assert main(["demo", "--output", str(tmp_path), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert top1(out, "chelsea.png") == "tiger cat"
    assert top1(out, "coffee.png") == "espresso"
    assert top1(out, "imagenet_17_22.jpg") == "bald eagle"
    with Image.open(tmp_path / "demo.png") as grid:
        assert grid.format == "PNG"
        assert grid.size == (1600, 1780)
    assert len(list(tmp_path.glob("*_reciprocam.png"))) == 8
    for photo in ("coffee", "imagenet_17_22"):  # the cup and the eagle sit in the middle
        saliency = np.load(tmp_path / f"{photo}_reciprocam.npy")
        assert saliency.shape == (224, 224)
        assert saliency.min() >= 0
        assert saliency.max() <= 1
        row, column = np.unravel_index(saliency.argmax(), saliency.shape)
        assert 45 <= row < 180
        assert 45 <= column < 180


def test_demo_photos_without_the_demo_extra(monkeypatch, tmp_path, capsys):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    assert main(["demo", "--output", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == (
        "reciprocam: error: the demo photo skimage/data/chelsea.png is missing; install the demo"
        " extra: pip install 'reciprocam[demo]'"
    )


def test_demo_model_without_the_demo_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "reciprocam.zoo.efficientnet_lite", None)  # import fails
    with pytest.raises(ModelError) as raised:
        load_model()
    assert str(raised.value) == (
        "the efficientnet_lite0 demo model needs the demo extra: pip install 'reciprocam[demo]'"
    )
