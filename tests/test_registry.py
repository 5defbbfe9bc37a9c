"""Methods by name: `reciprocam.methods()` and `reciprocam.explainer(name, model, ...)`."""

from __future__ import annotations

import pytest
from test_vit_reciprocam import tiny_torchvision

import reciprocam
from reciprocam import OptionError, ReciproCAM, ViTReciproCAM
from reciprocam.registry import canonical_name

NAMES = [
    "reciprocam", "vit-reciprocam", "cam", "gradcam", "gradcam++", "smooth-gradcam++", "xgradcam",
    "hirescam", "layercam", "scorecam", "ablationcam", "eigencam", "eigengradcam", "fullgrad",
    "rise", "guided-backprop", "guided-gradcam", "guided-gradcam++",
]  # fmt: skip


def test_methods_are_listed():
    assert reciprocam.methods() == NAMES


@pytest.mark.parametrize(
    ("spelling", "name"),
    [
        ("GradCAM", "gradcam"), ("Grad-CAM", "gradcam"), ("gradcam++", "gradcam++"),
        ("GradCAMPlusPlus", "gradcam++"), ("grad_cam_pp", "gradcam++"),
        ("Smooth Grad-CAM++", "smooth-gradcam++"), ("SmoothGradCAMpp", "smooth-gradcam++"),
        ("HiResCAM", "hirescam"), ("Score-CAM", "scorecam"), ("AblationCAM", "ablationcam"),
        ("XGradCAM", "xgradcam"), ("Eigen-CAM", "eigencam"), ("EigenGradCAM", "eigengradcam"),
        ("LayerCAM", "layercam"), ("FullGrad", "fullgrad"), ("RISE", "rise"),
        ("GuidedBackprop", "guided-backprop"), ("guided_gradcam", "guided-gradcam"),
        ("Guided-GradCAM++", "guided-gradcam++"), ("guidedgradcamplusplus", "guided-gradcam++"),
        ("ViT-ReciproCAM", "vit-reciprocam"), ("vitreciprocam", "vit-reciprocam"),
    ],
)  # fmt: skip
def test_the_usual_spellings(spelling, name):
    assert canonical_name(spelling) == name


@pytest.mark.parametrize("name", NAMES[2:])
def test_every_name_builds_its_method(resnet18, name):
    cam = reciprocam.explainer(name, resnet18)
    assert canonical_name(type(cam).__name__) == name


def test_explainer_passes_options(resnet18):
    cam = reciprocam.explainer("ReciproCAM", resnet18, "layer3", score="logit")
    assert type(cam) is ReciproCAM
    assert cam.score == "logit"
    vit = reciprocam.explainer("ViT_ReciproCAM", tiny_torchvision(), block=1)
    assert type(vit) is ViTReciproCAM
    assert vit.block == 1
    assert reciprocam.explainer("scorecam", resnet18, batch_size=7).batch_size == 7


def test_reciprocam_on_a_transformer_is_vit_reciprocam():
    assert type(reciprocam.explainer("reciprocam", tiny_torchvision())) is ViTReciproCAM


def test_unknown_method_and_option(resnet18):
    with pytest.raises(OptionError, match=r"unknown method 'gradcam3'; choose one of reciprocam,"):
        reciprocam.explainer("gradcam3", resnet18)
    with pytest.raises(OptionError, match=r"gradcam takes no option 'batch_size'; its options are"):
        reciprocam.explainer("gradcam", resnet18, batch_size=4)
