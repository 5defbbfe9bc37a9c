"""ReciproCAM equals its definition: mask the layer's output yourself, run the head, normalise."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import seeded
from oracle import explicit_scores, minmax, resnet_backbone, resnet_head, vgg_head
from torch import nn

from reciprocam import ReciproCAM


@pytest.mark.parametrize("score", ["softmax", "logit"])
@pytest.mark.parametrize("mask", ["pixel", "gaussian"])
@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnet_matches_definition(request, images, name, score, mask):
    model = request.getfixturevalue(name)
    expected = explicit_scores(
        resnet_backbone(model, images), resnet_head(model), mask=mask, score=score
    )
    explanation = ReciproCAM(model, score=score, mask=mask).explain(images)
    assert explanation.scores.shape == (2, 1000, 5, 5)
    torch.testing.assert_close(
        explanation.scores, expected, rtol=0, atol=1e-5 * expected.abs().max().item()
    )
    assert_maps_close(explanation, expected)


@pytest.mark.parametrize("score", ["softmax", "logit"])
@pytest.mark.parametrize("mask", ["pixel", "gaussian"])
def test_vgg16_matches_definition(vgg16, images, score, mask):
    features = vgg16.features(images).detach()
    expected = explicit_scores(features, vgg_head(vgg16), mask=mask, score=score)
    cam = ReciproCAM(vgg16, score=score, mask=mask)
    explanation = cam.explain(images)
    assert str(cam.target_layer) == "features"
    assert not cam.uses_gap_shortcut  # VGG's head is a 7x7 adaptive pool and an MLP
    torch.testing.assert_close(
        explanation.scores, expected, rtol=0, atol=1e-5 * expected.abs().max().item()
    )
    assert_maps_close(explanation, expected)


def assert_maps_close(explanation, expected):
    """Normalised class maps and upsampled target maps within 1e-5 of the definition's."""
    torch.testing.assert_close(explanation.class_maps, minmax(expected), rtol=0, atol=1e-5)
    targets = minmax(expected)[torch.arange(len(expected)), explanation.targets]
    upsampled = F.interpolate(targets[:, None], size=explanation.maps.shape[-2:], mode="bilinear")
    torch.testing.assert_close(explanation.maps, upsampled[:, 0].clamp(0, 1), rtol=0, atol=1e-5)


def test_maps_are_the_target_class_maps_upsampled(resnet18, images):
    explanation = ReciproCAM(resnet18).explain(images, targets=[3, 997])
    low = minmax(explicit_scores(resnet_backbone(resnet18, images), resnet_head(resnet18)))
    chosen = torch.stack([low[0, 3], low[1, 997]])
    expected = F.interpolate(
        chosen[:, None], size=(160, 160), mode="bilinear", align_corners=False
    )[:, 0]
    assert explanation.maps.shape == (2, 160, 160)
    torch.testing.assert_close(explanation.maps, expected.clamp(0, 1), rtol=0, atol=1e-5)
    assert explanation.targets.tolist() == [3, 997]
    assert ReciproCAM(resnet18, upsample=False)(images, targets=[3, 997]).shape == (2, 5, 5)
    torch.testing.assert_close(
        ReciproCAM(resnet18, upsample=False)(images, [3, 997]), chosen, rtol=0, atol=1e-5
    )


def test_default_target_is_top1_and_logits_are_the_models(resnet50, images):
    explanation = ReciproCAM(resnet50).explain(images)
    with torch.no_grad():
        logits = resnet50(images)
    torch.testing.assert_close(explanation.logits, logits, rtol=1e-4, atol=1e-4)
    assert explanation.targets.tolist() == logits.argmax(1).tolist()
    assert explanation.predictions.tolist() == logits.argmax(1).tolist()
    torch.testing.assert_close(explanation.probabilities, logits.softmax(1), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_gap_shortcut_equals_generic_path(request, images, name):
    model = request.getfixturevalue(name)
    fast, generic = ReciproCAM(model), ReciproCAM(model, fast_path=False)
    for mask in ("pixel", "gaussian"):
        fast.mask = generic.mask = mask
        a, b = fast.explain(images), generic.explain(images)
        assert fast.uses_gap_shortcut
        assert not generic.uses_gap_shortcut
        torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=1e-6)
        torch.testing.assert_close(a.maps, b.maps, rtol=0, atol=1e-5)


def test_batch_equals_each_image_alone(resnet18):
    batch = seeded((3, 3, 128, 128), seed=5)
    cam = ReciproCAM(resnet18, score="logit")
    together = cam.explain(batch)
    for index in range(3):
        alone = cam.explain(batch[index : index + 1])
        torch.testing.assert_close(together.scores[index], alone.scores[0], rtol=0, atol=1e-4)
        torch.testing.assert_close(together.maps[index], alone.maps[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize("batch_size", [1, 7, 25, 26, 49, 1000, "all"])
def test_every_batch_size_gives_the_same_maps(resnet18, images, batch_size, fast_path):
    reference = ReciproCAM(resnet18, fast_path=fast_path).explain(images)
    chunked = ReciproCAM(resnet18, batch_size=batch_size, fast_path=fast_path).explain(images)
    torch.testing.assert_close(chunked.scores, reference.scores, rtol=0, atol=1e-6)
    torch.testing.assert_close(chunked.maps, reference.maps, rtol=0, atol=1e-5)
    torch.testing.assert_close(chunked.logits, reference.logits, rtol=0, atol=1e-5)


class _TinyNet(nn.Module):
    """x -> 1x1 conv (weight 1: the features are the input) -> GAP -> linear(1 -> 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(1, 2)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.fc.weight.copy_(torch.tensor([[2.0], [-1.0]]))
            self.fc.bias.copy_(torch.tensor([0.5, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.conv(x)).flatten(1))


@pytest.mark.parametrize("fast_path", [True, False])
def test_hand_computed_two_class_case(fast_path):
    # Features [[1, 2], [3, 4]]; copy k keeps v_k, so GAP gives v/4 and the logits are
    # (2v/4 + 0.5, -v/4): softmax of class 0 = sigmoid(3v/4 + 0.5), its logit = v/2 + 0.5.
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    cam = ReciproCAM(_TinyNet(), "conv", score="softmax", upsample=False, fast_path=fast_path)
    explanation = cam.explain(x, targets=0)
    sigmoid = [1 / (1 + math.exp(-(0.75 * v + 0.5))) for v in (1, 2, 3, 4)]
    assert explanation.scores[0, 0].flatten().tolist() == pytest.approx(sigmoid, abs=1e-6)
    normalised = [(s - sigmoid[0]) / (sigmoid[3] - sigmoid[0]) for s in sigmoid]
    assert explanation.maps[0].flatten().tolist() == pytest.approx(normalised, abs=1e-6)
    logits = ReciproCAM(_TinyNet(), "conv", score="logit", fast_path=fast_path).explain(
        x, targets=1
    )
    assert logits.scores[0, 1].flatten().tolist() == pytest.approx([-0.25, -0.5, -0.75, -1.0])
    assert logits.maps.shape == (1, 2, 2)
    # class 1's logit falls as v grows: the map is 1 at v=1 and 0 at v=4
    assert logits.maps[0].flatten().tolist() == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0], abs=1e-6)


@pytest.mark.parametrize("fast_path", [True, False])
def test_hand_computed_gaussian_case(fast_path):
    # On a 2x2 map every 3x3 window keeps 4 + 2 + 2 + 1 = 9 of its 16 parts: GAP = v * 9/16 / 4.
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    cam = ReciproCAM(_TinyNet(), "conv", score="logit", mask="gaussian", fast_path=fast_path)
    scores = cam.explain(x, targets=0).scores[0, 0].flatten().tolist()
    assert scores == pytest.approx([2 * v * 9 / 64 + 0.5 for v in (1, 2, 3, 4)], abs=1e-6)


def test_constant_map_gives_zeros_not_nan(images):
    model = _zero_head_resnet()
    explanation = ReciproCAM(model).explain(images)
    assert not torch.isnan(explanation.maps).any()
    assert torch.equal(explanation.maps, torch.zeros_like(explanation.maps))
    assert torch.equal(explanation.class_maps, torch.zeros_like(explanation.class_maps))


def _zero_head_resnet() -> nn.Module:
    from helpers import build

    model = build("resnet18")
    with torch.no_grad():
        model.fc.weight.zero_()
    return model
