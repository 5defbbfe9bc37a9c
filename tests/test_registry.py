"""Methods by name: `reciprocam.methods()` and `reciprocam.explainer(name, model, ...)`."""

from __future__ import annotations

import pytest
from test_vit_reciprocam import tiny_torchvision

import reciprocam
from reciprocam import OptionError, ReciproCAM, ViTReciproCAM


def test_methods_are_listed():
    assert reciprocam.methods() == ["reciprocam", "vit-reciprocam"]


def test_explainer_by_any_spelling(resnet18):
    cam = reciprocam.explainer("ReciproCAM", resnet18, "layer3", score="logit")
    assert type(cam) is ReciproCAM
    assert cam.score == "logit"
    for spelling in ("vit-reciprocam", "ViT_ReciproCAM", "vitreciprocam"):
        vit = reciprocam.explainer(spelling, tiny_torchvision(), block=1)
        assert type(vit) is ViTReciproCAM
        assert vit.block == 1


def test_reciprocam_on_a_transformer_is_vit_reciprocam():
    assert type(reciprocam.explainer("reciprocam", tiny_torchvision())) is ViTReciproCAM


def test_unknown_method():
    with pytest.raises(
        OptionError, match=r"unknown method 'gradcam'; choose one of reciprocam, vit-reciprocam"
    ):
        reciprocam.explainer("gradcam", tiny_torchvision())
