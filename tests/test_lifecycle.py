"""The user's model is never changed: weights, buffers, modes, gradients, hooks, even on errors."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_unchanged, build, seeded, snapshot
from torch import nn

from reciprocam import LayerError, ReciproCAM, TargetError


@pytest.fixture
def busy_model() -> nn.Module:
    """A ResNet-18 in a user's mid-training state: train mode (one block in eval), some
    gradients already accumulated, a frozen stem, and a hook of the user's own."""
    model = build("resnet18").train()
    model.layer2.eval()
    model.conv1.weight.requires_grad_(False)
    model.fc.weight.grad = torch.full_like(model.fc.weight, 0.5)
    model.layer4[0].conv1.weight.grad = torch.ones_like(model.layer4[0].conv1.weight)
    model.layer4.register_forward_hook(lambda module, inputs, output: None)
    return model


@pytest.mark.parametrize("fast_path", [True, False])
def test_a_normal_call_leaves_the_model_unchanged(busy_model, fast_path):
    before = snapshot(busy_model)
    with ReciproCAM(busy_model, fast_path=fast_path, batch_size=10) as cam:
        maps = cam(seeded((2, 3, 96, 96)))
        cam(seeded((1, 3, 64, 64)))
    assert maps.shape == (2, 96, 96)
    assert_unchanged(busy_model, before)
    assert busy_model.training
    assert not busy_model.layer2.training


def test_the_explanation_uses_eval_mode_and_matches_an_eval_model(busy_model):
    x = seeded((2, 3, 96, 96))
    in_training = ReciproCAM(busy_model).explain(x)
    evaluated = build("resnet18")  # the same seed: the same weights, in eval mode
    expected = ReciproCAM(evaluated).explain(x)
    torch.testing.assert_close(in_training.scores, expected.scores, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("layer", "targets", "error"),
    [
        ("layer4", 1000, TargetError),  # raised after the forward passes
        ("layer4.1.bn2", None, LayerError),  # raised while checking the layer
        ("layer9", None, LayerError),  # raised before any forward pass
    ],
)
def test_a_failing_call_leaves_the_model_unchanged(busy_model, layer, targets, error):
    before = snapshot(busy_model)
    cam = ReciproCAM(busy_model, layer)
    with pytest.raises(error):
        cam(seeded((2, 3, 96, 96)), targets)
    assert_unchanged(busy_model, before)


def test_an_error_inside_the_forward_pass_removes_the_hook():
    class Fragile(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)
            self.fail = False

        def forward(self, x):
            features = self.conv(x)
            if self.fail:
                raise RuntimeError("out of memory")
            return self.fc(features.mean(dim=(2, 3)))

    model = Fragile()
    cam = ReciproCAM(model)
    cam(seeded((1, 3, 16, 16)))
    model.fail = True
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="out of memory"):
        cam(seeded((1, 3, 16, 16)))
    assert_unchanged(model, before)


def test_no_gradient_is_computed_and_outputs_are_ordinary_tensors(resnet18):
    x = seeded((1, 3, 64, 64)).requires_grad_(True)
    explanation = ReciproCAM(resnet18).explain(x)
    assert x.grad is None
    assert all(p.grad is None for p in resnet18.parameters())
    for tensor in (
        explanation.maps,
        explanation.scores,
        explanation.class_maps,
        explanation.logits,
    ):
        assert not tensor.requires_grad
        assert not torch.is_inference(tensor)
    explanation.maps.mul_(2)  # the caller owns the results and may change them in place


def test_closing_forgets_the_resolved_layer(resnet18):
    with ReciproCAM(resnet18) as cam:
        cam(seeded((1, 3, 64, 64)))
        assert str(cam.target_layer) == "layer4"
    assert cam.target_layer is None
