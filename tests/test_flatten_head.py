"""ReciproCAM's flatten + Linear shortcut (VGG, AlexNet): exact, and only where it applies."""

from __future__ import annotations

import torch
from helpers import seeded
from oracle import explicit_scores
from torch import nn

from reciprocam import ReciproCAM


class TinyVGG(nn.Module):
    """Convolutions to a 4x4 map, then VGG's head: fixed-size pooling, flatten, Linear stack."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 8, stride=8), nn.ReLU())
        self.avgpool = nn.AdaptiveAvgPool2d(4)
        self.classifier = nn.Sequential(
            nn.Dropout(), nn.Linear(8 * 16, 32), nn.ReLU(), nn.Linear(32, 6)
        )
        with torch.no_grad():
            self.classifier[3].weight.mul_(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def head(model: TinyVGG):
    return lambda features: model.classifier(torch.flatten(model.avgpool(features), 1))


def test_the_shortcut_equals_the_definition_and_the_generic_path():
    model, x = TinyVGG().eval(), seeded((3, 3, 32, 32), seed=1)
    cam = ReciproCAM(model)
    explanation = cam.explain(x)
    assert cam.uses_flatten_shortcut
    assert not cam.uses_gap_shortcut
    expected = explicit_scores(model.features(x), head(model))
    torch.testing.assert_close(explanation.scores, expected, atol=1e-6, rtol=1e-5)
    generic = ReciproCAM(model, fast_path=False, batch_size=5).explain(x)
    torch.testing.assert_close(explanation.scores, generic.scores, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(explanation.logits, model(x))


def test_the_gaussian_mask_takes_the_dense_path():
    model, x = TinyVGG().eval(), seeded((1, 3, 32, 32), seed=2)
    cam = ReciproCAM(model, mask="gaussian")
    explanation = cam.explain(x)
    assert not cam.uses_flatten_shortcut
    expected = explicit_scores(model.features(x), head(model), mask="gaussian")
    torch.testing.assert_close(explanation.scores, expected, atol=1e-6, rtol=1e-5)


def test_new_weights_are_read_again():
    model, x = TinyVGG().eval(), seeded((1, 3, 32, 32), seed=3)
    cam = ReciproCAM(model)
    cam(x)
    with torch.no_grad():
        model.classifier[1].weight.mul_(-1.5)  # in place: the regrouped copy is stale
    torch.testing.assert_close(cam.explain(x).scores, ReciproCAM(model).explain(x).scores)
    torch.testing.assert_close(
        cam.explain(x).scores, explicit_scores(model.features(x), head(model)),
        atol=1e-6, rtol=1e-5,
    )  # fmt: skip


def test_vgg16_at_224_takes_the_shortcut(vgg16):
    x = seeded((1, 3, 224, 224), seed=4)
    cam = ReciproCAM(vgg16)
    fast = cam.explain(x)
    assert cam.uses_flatten_shortcut
    generic = ReciproCAM(vgg16, fast_path=False).explain(x)
    torch.testing.assert_close(fast.scores, generic.scores, atol=1e-6, rtol=1e-4)
