"""Bad inputs, targets and options raise the library's own errors with messages that help."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import error_message, seeded
from torch import nn

import reciprocam
from reciprocam import InputError, ModelError, OptionError, ReciproCAM, ReciproCAMError, TargetError


@pytest.fixture(scope="module")
def cam(resnet18):
    return ReciproCAM(resnet18)


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (
            np.zeros((1, 3, 64, 64), np.float32),
            r"must be a torch.Tensor of shape \(batch, 3, height, width\), not ndarray",
        ),
        (torch.zeros(3, 64, 64), r"got \(3, 64, 64\); add a batch dimension with x.unsqueeze\(0\)"),
        (
            torch.zeros(64, 64),
            r"must have shape \(batch, channels, height, width\), got \(64, 64\)$",
        ),
        (torch.zeros(0, 3, 64, 64), r"the input is empty: shape \(0, 3, 64, 64\)"),
        (
            torch.zeros(1, 3, 64, 64, dtype=torch.uint8),
            r"has dtype torch.uint8; convert it to float",
        ),
        (
            torch.zeros(1, 3, 64, 64, dtype=torch.float64),
            r"has dtype torch.float64 but the model's parameters are torch.float32;"
            r" use x.to\(torch.float32\)",
        ),
        (
            torch.zeros(1, 3, 64, 64, device="meta"),
            r"the input is on meta but the model is on cpu; move both",
        ),
        (torch.full((1, 3, 64, 64), float("nan")), r"the input contains NaN or infinite values"),
        (
            torch.zeros(1, 1, 64, 64),
            r"the model failed on an input of shape \(1, 1, 64, 64\): .*channels",
        ),
    ],
)
def test_bad_inputs(resnet18, x, message):
    with pytest.raises(InputError, match=message) as raised:
        ReciproCAM(resnet18)(x)
    assert isinstance(raised.value, ReciproCAMError)
    assert isinstance(raised.value, ValueError)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        ([1, 2, 3], r"got 3 targets for a batch of 2 images; give one per image"),
        (1000, r"class 1000 is out of range: the model has 1000 classes \(0 to 999\)"),
        ([5, -1], r"class -1 is out of range"),
        (torch.tensor([1.0, 2.0]), r"targets must be integer class indices, not torch.float32"),
        (torch.tensor([[1, 2]]), r"got 1 targets for a batch of 2 images: image 1 has none"),
        (True, r"targets must be None, a class index, one per image or a list per image, not bool"),
        ("cat", r"targets must be classes, 'all', a Target or a function, not 'cat'"),
        ([1.5, 2], r"targets of image 0 must be integer class indices: \[1.5\]"),
    ],
)
def test_bad_targets(cam, targets, message):
    with pytest.raises(TargetError, match=message):
        cam(seeded((2, 3, 64, 64)), targets)


@pytest.mark.parametrize(
    "targets",
    [7, np.int64(7), torch.tensor(7), [7, 7], (7, 7), torch.tensor([7, 7]), np.array([7, 7])],
)
def test_every_form_of_targets(cam, targets):
    explanation = cam.explain(seeded((2, 3, 64, 64)), targets)
    assert explanation.targets.tolist() == [7, 7]


def test_per_image_targets_pick_each_images_class_map(cam):
    explanation = cam.explain(seeded((2, 3, 64, 64)), [3, 9])
    upsampled = cam.explain(seeded((2, 3, 64, 64)))
    torch.testing.assert_close(explanation.class_maps, upsampled.class_maps)
    assert explanation.targets.tolist() == [3, 9]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"score": "probability"},
            r"score must be 'softmax', 'logit' or 'sigmoid', not 'probability'",
        ),
        ({"mask": "box"}, r"mask must be 'pixel' or 'gaussian', not 'box'"),
        ({"batch_size": 0}, r'batch_size must be a positive integer, "all" or None, not 0'),
        ({"batch_size": 2.5}, r'batch_size must be a positive integer, "all" or None, not 2.5'),
        (
            {"batch_size": "every"},
            r"batch_size must be a positive integer, \"all\" or None, not 'every'",
        ),
    ],
)
def test_bad_options(resnet18, options, message):
    with pytest.raises(OptionError, match=message):
        ReciproCAM(resnet18, **options)


def test_model_that_is_not_a_module():
    with pytest.raises(ModelError, match=r"model must be a torch\.nn\.Module, not function"):
        ReciproCAM(lambda x: x)


def test_a_float64_model_gives_float64_maps():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )
    model = model.double().eval()
    maps = ReciproCAM(model)(seeded((1, 3, 12, 12)).double())
    assert maps.dtype == torch.float64


@pytest.mark.parametrize("name", ["reciprocam", "gradcam", "rise"])
def test_a_model_whose_output_is_nan_is_a_model_error(name):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()
    with torch.no_grad():
        model[4].bias[1] = float("nan")
    message = error_message(
        ModelError,
        reciprocam.explainer(name, model, **({"masks": 4} if name == "rise" else {})),
        seeded((1, 3, 16, 16)),
    )
    assert message.startswith("the model's output has NaN or infinite values for this")
