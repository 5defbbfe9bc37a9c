"""Targets: every kind, for every method, against an independent computation.

The independent computation is the issue's: the map of target t equals the map of class 0 of a
model wrapped so that its one output *is* that target's score, computed here from its
definition (a softmax read by hand, a region summed by hand, a cosine by hand), explained on
the raw scale. Forward-only methods give every target of a batch from the same passes; the
tests check that too, and that bad targets are one-line errors.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from helpers import error_message, seeded
from torch import Tensor, nn

import reciprocam
from reciprocam import ModelError, ReciproCAM, TargetError
from reciprocam.metrics import AverageDrop, Deletion
from reciprocam.registry import explainer as build_explainer
from reciprocam.targets import (
    Classes,
    Custom,
    OutputIndex,
    Region,
    Similarity,
    TopClasses,
)

CLASSES = 5
SIZE = 16


def two_stages() -> nn.Sequential:
    """conv (bias) -> BN -> ReLU -> conv -> ReLU: a 16x16 input to a 4x4 grid of 12 channels."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 12, 3, 2, 1), nn.ReLU()
    )


class TinyClassifier(nn.Module):
    """`two_stages` -> GAP -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.features = two_stages()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


class TinySegmenter(nn.Module):
    """An encoder to a 4x4 grid and a decoder back to the input, torchvision's dict output."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = two_stages()
        self.decoder = nn.Sequential(
            nn.Conv2d(12, 12, 3, 1, 1), nn.ReLU(), nn.Conv2d(12, CLASSES, 1)
        )
        self.aux = nn.Conv2d(8, CLASSES, 1)  # a training head on an earlier stage, as FCN's

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = self.encoder(x)
        out = F.interpolate(self.decoder(features), size=x.shape[-2:], mode="bilinear")
        aux = F.interpolate(self.aux(self.encoder[:3](x)), size=x.shape[-2:], mode="bilinear")
        return {"out": out, "aux": aux}


class ScoreModel(nn.Module):
    """The wrapped model: one output, the score `score(model(x))` computed in the test."""

    def __init__(self, model: nn.Module, score: Callable[[object], Tensor]) -> None:
        super().__init__()
        self.model = model
        self.score = score

    def forward(self, x: Tensor) -> Tensor:
        return self.score(self.model(x))[:, None]


def trained(model: nn.Module, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):  # non-trivial running statistics
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def classifier() -> nn.Module:
    return trained(TinyClassifier(), 1)


@pytest.fixture(scope="module")
def segmenter() -> nn.Module:
    return trained(TinySegmenter(), 2)


# Every method but CAM (whose classifier a wrapped model hides; checked on its own below) and
# ViT-ReciproCAM (test_vit_reciprocam), with options that keep the tests small.
METHODS = [name for name in reciprocam.methods() if name not in ("cam", "vit-reciprocam")]
OPTIONS: dict[str, dict[str, object]] = {
    "rise": {"masks": 40, "cells": 4, "batch_size": 16},
    "smooth-gradcam++": {"samples": 2},
}
# The scale a method reads class targets on; the wrapped model outputs the target's score on
# it, and is explained on the raw scale.
SOFTMAX_METHODS = ("reciprocam", "rise")


LAYERLESS = ("rise", "fullgrad", "guided-backprop")


def explain_with(
    name: str,
    model: nn.Module,
    x: Tensor,
    target: object,
    raw: bool = False,
    layer: str | None = None,
):
    options = dict(OPTIONS.get(name, {}))
    if raw and name in SOFTMAX_METHODS:
        options["score"] = "logit"
    layer = None if name in LAYERLESS else layer
    return build_explainer(name, model, layer, **options).explain(x, target)


def scale(name: str, output: Tensor) -> Tensor:
    return output.softmax(dim=1) if name in SOFTMAX_METHODS else output


def region_of(segmenter: nn.Module, x: Tensor, cls: int) -> Tensor:
    with torch.no_grad():
        return (segmenter(x)["out"].argmax(dim=1) == cls).float()


def common_class(segmenter: nn.Module, x: Tensor) -> int:
    with torch.no_grad():
        return int(segmenter(x)["out"].argmax(dim=1).flatten().mode().values)


def classifier_cases(x: Tensor) -> list[tuple[str, object, list[Callable[[str, Tensor], Tensor]]]]:
    """(kind, target, one score function per target t of the one image x)."""
    reference = seeded((2, CLASSES), 7)

    def cls(c: int) -> Callable[[str, Tensor], Tensor]:
        return lambda method, out: scale(method, out)[:, c]

    def cosine(t: int) -> Callable[[str, Tensor], Tensor]:
        return lambda method, out: F.cosine_similarity(out, reference[t][None], dim=1)

    return [
        ("classes", [[3, 1]], [cls(3), cls(1)]),
        ("one class", 2, [cls(2)]),
        ("output index", OutputIndex([4, 0]), [lambda m, o: o[:, 4], lambda m, o: o[:, 0]]),
        ("similarity", Similarity(reference), [cosine(0), cosine(1)]),
        (
            "custom",
            Custom(lambda out: out[:, 1] - out[:, 2]),
            [lambda m, o: o[:, 1] - o[:, 2]],
        ),
    ]


@pytest.mark.parametrize("method", METHODS)
def test_each_classifier_target_equals_the_wrapped_model(method, classifier):
    x = seeded((1, 3, SIZE, SIZE), 3)
    for kind, target, scores in classifier_cases(x):
        maps = explain_with(method, classifier, x, target).maps
        maps = maps.view(1, len(scores), SIZE, SIZE)
        for t, score in enumerate(scores):
            wrapped = ScoreModel(classifier, lambda out, s=score: s(method, out))
            expected = explain_with(method, wrapped, x, 0, raw=True).maps
            torch.testing.assert_close(maps[:, t], expected, atol=2e-5, rtol=0, msg=kind)


def test_top_classes_are_the_classes_of_the_largest_logits(classifier):
    x = seeded((2, 3, SIZE, SIZE), 4)
    explanation = ReciproCAM(classifier).explain(x, TopClasses(3))
    expected = classifier(x).topk(3, dim=1).indices
    assert torch.equal(explanation.targets, expected)
    by_classes = ReciproCAM(classifier).explain(x, expected.tolist())
    torch.testing.assert_close(explanation.maps, by_classes.maps, atol=0, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_each_region_target_equals_the_wrapped_model(method, segmenter):
    x = seeded((1, 3, SIZE, SIZE), 5)
    cls = common_class(segmenter, x)
    predicted = region_of(segmenter, x, cls)[0]
    box = torch.zeros(SIZE, SIZE)
    box[2:9, 4:13] = 1.0  # x0=4, y0=2, x1=13, y1=9
    weights = seeded((SIZE, SIZE), 6).sigmoid()
    for kind, target, mask, reduce in (
        ("predicted", cls, predicted, "mean"),
        ("predicted, summed", Region(cls, reduce="sum"), predicted, "sum"),
        ("a box", Region(cls, region=(4, 2, 13, 9)), box, "mean"),
        ("weights", Region(cls, region=weights), weights, "mean"),
    ):

        def score(out: dict[str, Tensor], mask: Tensor = mask, reduce: str = reduce) -> Tensor:
            total = (scale(method, out["out"])[:, cls] * mask).sum(dim=(1, 2))
            return total / mask.sum() if reduce == "mean" else total

        # The wrapped model's output is no grid: its layer is named (the segmenter's automatic one).
        maps = explain_with(method, segmenter, x, target, layer="encoder").maps
        wrapped = ScoreModel(segmenter, score)
        expected = explain_with(method, wrapped, x, 0, raw=True, layer="model.encoder").maps
        torch.testing.assert_close(maps, expected, atol=2e-5, rtol=0, msg=kind)


def test_reciprocam_region_equals_the_explicit_definition(segmenter):
    """Mask one position of the encoder's output, run the decoder, read the region's mean
    class probability: one copy per position, by hand."""
    x = seeded((1, 3, SIZE, SIZE), 5)
    cls = common_class(segmenter, x)
    region = region_of(segmenter, x, cls)
    explainer = ReciproCAM(segmenter)
    explanation = explainer.explain(x, cls)
    assert explainer.target_layer.name == "encoder"
    features = segmenter.encoder(x)
    height, width = features.shape[-2:]
    expected = torch.zeros(height, width)
    for i in range(height):
        for j in range(width):
            masked = torch.zeros_like(features)
            masked[..., i, j] = features[..., i, j]
            out = F.interpolate(segmenter.decoder(masked), size=x.shape[-2:], mode="bilinear")
            expected[i, j] = (out.softmax(dim=1)[0, cls] * region[0]).sum() / region.sum()
    torch.testing.assert_close(explanation.scores[0, 0], expected, atol=1e-6, rtol=0)
    assert explanation.logits.shape == (1, CLASSES, SIZE, SIZE)
    assert torch.equal(explanation.target.regions[0, 0], region[0])


FORWARD_ONLY = ["reciprocam", "scorecam", "ablationcam", "rise", "eigencam", "cam"]


@pytest.mark.parametrize("method", FORWARD_ONLY)
def test_all_targets_of_a_batch_equal_one_at_a_time(method, classifier):
    x = seeded((2, 3, SIZE, SIZE), 8)
    table = [[4, 0, 2], [1, 3, 3]]
    together = explain_with(method, classifier, x, table)
    assert together.maps.shape == (2, 3, SIZE, SIZE)
    assert torch.equal(together.targets, torch.tensor(table))
    for t in range(3):
        alone = explain_with(method, classifier, x, [row[t] for row in table])
        torch.testing.assert_close(together.maps[:, t], alone.maps, atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", ["reciprocam", "scorecam", "ablationcam", "rise"])
def test_several_targets_cost_the_passes_of_one(method, classifier):
    x = seeded((1, 3, SIZE, SIZE), 9)
    calls: list[int] = []
    handle = classifier.register_forward_hook(lambda *_: calls.append(0))
    try:
        explain_with(method, classifier, x, 1)
        one = len(calls)
        explain_with(method, classifier, x, [[1, 2, 3, 4]])
    finally:
        handle.remove()
    assert len(calls) - one == one


def test_region_targets_of_a_batch_equal_one_at_a_time(segmenter):
    x = seeded((2, 3, SIZE, SIZE), 10)
    masks = torch.stack([region_of(segmenter, x[b : b + 1], 1)[0] for b in range(2)])
    masks[:, 0, 0] = 1.0  # never empty
    explainer = ReciproCAM(segmenter)
    together = explainer.explain(x, Region([[1, 2], [3, 1]], region=masks))
    for b, row in enumerate([[1, 2], [3, 1]]):
        for t, cls in enumerate(row):
            alone = explainer.explain(x[b : b + 1], Region(cls, region=masks[b]))
            torch.testing.assert_close(together.maps[b, t], alone.maps[0], atol=1e-6, rtol=0)


def test_cam_reads_several_classes_and_refuses_other_targets(classifier):
    x = seeded((1, 3, SIZE, SIZE), 11)
    explanation = reciprocam.CAM(classifier).explain(x, [[2, 4]])
    activations = classifier.features(x)
    for t, cls in enumerate((2, 4)):
        raw = torch.einsum("c,chw->hw", classifier.fc.weight[cls], activations[0])
        expected = (raw - raw.min()) / (raw.max() - raw.min())
        expected = F.interpolate(expected[None, None], size=(SIZE, SIZE), mode="bilinear")
        torch.testing.assert_close(
            explanation.maps[0, t], expected[0, 0].clamp(0, 1), atol=1e-6, rtol=0
        )
    message = error_message(TargetError, reciprocam.CAM(classifier), x, OutputIndex(0))
    assert "Grad-CAM" in message


def test_torchvision_segmentation_models_need_no_wrapper():
    x = seeded((1, 3, 64, 64), 12)
    for build, layer in (
        (torchvision.models.segmentation.fcn_resnet50, "backbone.layer4"),
        (torchvision.models.segmentation.deeplabv3_mobilenet_v3_large, "backbone.16"),
        (torchvision.models.segmentation.lraspp_mobilenet_v3_large, "backbone.4"),
    ):
        torch.manual_seed(0)
        model = build(weights=None, weights_backbone=None, num_classes=4).eval()
        cls = common_class(model, x)
        for method in ("reciprocam", "gradcam"):
            explainer = build_explainer(method, model)
            explanation = explainer.explain(x, cls)
            assert explainer.target_layer.name == layer, build.__name__
            region = region_of(model, x, cls)
            assert torch.equal(explanation.target.regions[:, 0], region)
            assert explanation.predictions.shape == (1, 64, 64)


def test_the_output_rule_and_its_override(classifier):
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = classifier

        def forward(self, x: Tensor) -> dict[str, Tensor]:
            logits = self.inner(x)
            return {"first": logits, "second": logits.flip(1)}

    x = seeded((1, 3, SIZE, SIZE), 13)
    message = error_message(ModelError, ReciproCAM(TwoHeads()), x)
    assert "output=" in message
    second = ReciproCAM(TwoHeads(), output="second").explain(x, 0)
    flipped = ReciproCAM(classifier).explain(x, CLASSES - 1)
    # The softmax sums the flipped logits in another order: float rounding only.
    torch.testing.assert_close(second.maps, flipped.maps, atol=1e-4, rtol=0)
    by_function = ReciproCAM(TwoHeads(), output=lambda out: out["first"]).explain(x, 0)
    torch.testing.assert_close(by_function.maps, ReciproCAM(classifier).explain(x, 0).maps)


def test_multi_label_scores_each_class_with_its_sigmoid(classifier):
    x = seeded((1, 3, SIZE, SIZE), 14)
    explanation = ReciproCAM(classifier, score="sigmoid").explain(x, [[0, 3]])
    for t, cls in enumerate((0, 3)):
        wrapped = ScoreModel(classifier, lambda out, c=cls: out[:, c].sigmoid())
        expected = ReciproCAM(wrapped, score="logit").explain(x, 0).maps
        torch.testing.assert_close(explanation.maps[:, t], expected, atol=5e-5, rtol=0)
    assert explanation.multilabel
    torch.testing.assert_close(explanation.probabilities, classifier(x).sigmoid())


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (7, "class 7 is out of range: the model has 5 classes"),
        ([1, 2], "got 2 targets for a batch of 3 images: image 2 has none"),
        ([[1, 2], [3], [0, 1]], "image 1 has 1 classes but image 0 has 2"),
        ([[1], 2, [3]], "targets of image 1 is 2"),
        ([1.5, 2, 3], "targets of image 0 must be integer class indices"),
        (TopClasses(9), "top 9 of a model with 5 classes"),
        (OutputIndex(5), "output index 5 is out of range: each image's output has 5 values"),
        (Similarity(torch.ones(4)), "has 4 values but the model's output has 5 per image"),
        (Region(1), "a Region reads a segmentation output"),
        (Custom(lambda out: out[:2]), "must return (3,) or (3, T) scores"),
        ("every", "targets must be classes, 'all', a Target or a function"),
    ],
)
def test_bad_classifier_targets_are_one_line_errors(classifier, target, expected):
    x = seeded((3, 3, SIZE, SIZE), 15)
    assert expected in error_message(TargetError, ReciproCAM(classifier), x, target)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (Region(9), "class 9 is out of range"),
        (Region(1, region=torch.ones(8, 8)), "the region mask has shape (8, 8) but the model's"),
        (Region(1, region=torch.zeros(SIZE, SIZE)), "in image 0 is empty: the given region"),
        (Region(1, region=torch.full((SIZE, SIZE), 2.0)), "booleans or weights in [0, 1]"),
        (Region(1, region=(3, 3, 2, 9)), "is not inside the 16x16 output"),
        (None, "a segmentation output has no top-1 class to explain"),
        (TopClasses(2), "reads class scores of shape (batch, classes)"),
    ],
)
def test_bad_region_targets_are_one_line_errors(segmenter, target, expected):
    x = seeded((1, 3, SIZE, SIZE), 16)
    assert expected in error_message(TargetError, ReciproCAM(segmenter), x, target)


def test_an_empty_predicted_region_names_the_class_and_the_image(segmenter):
    x = seeded((2, 3, SIZE, SIZE), 17)
    with torch.no_grad():
        present = set(segmenter(x[1:])["out"].argmax(dim=1).unique().tolist())
    absent = next(c for c in range(CLASSES) if c not in present)
    with torch.no_grad():
        first = set(segmenter(x[:1])["out"].argmax(dim=1).unique().tolist())
    cls = next(iter(first))
    message = error_message(TargetError, ReciproCAM(segmenter), x, [cls, absent])
    assert f"the region of class {absent} in image 1 is empty: the model predicts no pixel" in (
        message
    )


def test_metrics_read_the_region_score(segmenter):
    x = seeded((1, 3, SIZE, SIZE), 18)
    cls = common_class(segmenter, x)
    region = region_of(segmenter, x, cls)
    explanation = ReciproCAM(segmenter).explain(x, cls)

    def region_probability(images: Tensor) -> Tensor:
        with torch.no_grad():
            probabilities = segmenter(images)["out"].softmax(dim=1)[:, cls]
        return (probabilities * region).sum(dim=(1, 2)) / region.sum()

    y = region_probability(x)
    o = region_probability(x * explanation.maps[:, None])
    expected = ((y - o).clamp_min(0) / y).item()
    drop = AverageDrop(segmenter).update(x, explanation.maps, explanation.target)
    assert drop.item() == pytest.approx(expected, abs=1e-6)
    deletion = Deletion(segmenter, steps=2)
    deletion.update(x, explanation.maps, explanation.target)
    order = explanation.maps.flatten().argsort(descending=True, stable=True)
    half = torch.ones(SIZE * SIZE)
    half[order[: SIZE * SIZE // 2]] = 0
    points = [y, region_probability(x * half.view(1, 1, SIZE, SIZE)), region_probability(0 * x)]
    torch.testing.assert_close(deletion.curves[0], torch.cat(points).double(), atol=1e-6, rtol=0)


def test_metrics_read_a_multi_label_head_with_sigmoids(classifier):
    x = seeded((2, 3, SIZE, SIZE), 19)
    explanation = ReciproCAM(classifier, score="sigmoid").explain(x, [1, 4])
    with torch.no_grad():
        y = classifier(x).sigmoid()[[0, 1], [1, 4]]
        o = classifier(x * explanation.maps[:, None]).sigmoid()[[0, 1], [1, 4]]
    drop = AverageDrop(classifier).update(x, explanation.maps, [1, 4], score="sigmoid")
    torch.testing.assert_close(drop, ((y - o).clamp_min(0) / y).double(), atol=1e-6, rtol=0)
    several = explanation = ReciproCAM(classifier).explain(x, [[1, 2], [3, 4]])
    message = error_message(
        TargetError, AverageDrop(classifier).update, x, several.maps[:, 0], several.target
    )
    assert "one map per image, but the target gives 2" in message


def test_targets_accept_numpy_and_tensors(classifier):
    x = seeded((2, 3, SIZE, SIZE), 20)
    by_list = ReciproCAM(classifier).explain(x, [[1, 2], [3, 0]]).maps
    for given in (
        np.array([[1, 2], [3, 0]]),
        torch.tensor([[1, 2], [3, 0]]),
        Classes([[1, 2], [3, 0]]),
    ):
        torch.testing.assert_close(ReciproCAM(classifier).explain(x, given).maps, by_list)


class TinyUNet(nn.Module):
    """A U-Net: the stem's 8x8 output feeds both the bottleneck and, by a skip, the decoder."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.ModuleDict(
            {
                "stem": nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU()),
                "down": nn.Sequential(nn.Conv2d(8, 12, 3, 2, 1), nn.ReLU()),
            }
        )
        self.up = nn.Conv2d(12, 8, 1)
        self.head = nn.Conv2d(16, CLASSES, 3, 1, 1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        skip = self.encoder["stem"](x)
        deep = F.interpolate(self.up(self.encoder["down"](skip)), size=skip.shape[-2:])
        out = self.head(torch.cat([skip, deep], dim=1))
        return {"out": F.interpolate(out, size=x.shape[-2:], mode="bilinear")}


def test_a_unet_is_masked_where_one_path_remains(classifier):
    torch.manual_seed(3)
    unet = TinyUNet().eval()
    x = seeded((1, 3, SIZE, SIZE), 21)
    cls = common_class(unet, x)
    for method in ("reciprocam", "gradcam"):
        explainer = build_explainer(method, unet)
        explainer.explain(x, cls)
        assert explainer.target_layer.name == "encoder.stem", method
    # The bottleneck: any layer for the gradient methods, a bypassed one for the masking ones.
    grad = build_explainer("gradcam", unet, "encoder.down").explain(x, Region(cls, reduce="sum"))
    region = region_of(unet, x, cls)
    wrapped = ScoreModel(unet, lambda out: (out["out"][:, cls] * region).sum((1, 2)))
    expected = build_explainer("gradcam", wrapped, "model.encoder.down").explain(x, 0)
    torch.testing.assert_close(grad.maps, expected.maps, atol=2e-5, rtol=0)
    message = error_message(reciprocam.LayerError, ReciproCAM(unet, "encoder.down"), x, cls)
    assert "is bypassed" in message


def test_vit_reciprocam_gives_several_targets_from_one_pass():
    torch.manual_seed(4)
    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
        num_classes=CLASSES,
    ).eval()  # fmt: skip
    x = seeded((2, 3, 32, 32), 22)
    table = [[1, 4], [2, 0]]
    for fast_path in (True, False):
        cam = reciprocam.ViTReciproCAM(vit, fast_path=fast_path)
        together = cam.explain(x, table)
        for t in range(2):
            alone = cam.explain(x, [row[t] for row in table])
            torch.testing.assert_close(together.maps[:, t], alone.maps, atol=1e-6, rtol=0)


def test_target_probabilities_are_each_target_score_on_the_image(classifier, segmenter):
    x = seeded((2, 3, SIZE, SIZE), 23)
    explanation = ReciproCAM(classifier).explain(x, [[1, 3], [0, 2]])
    with torch.no_grad():
        probabilities = classifier(x).softmax(dim=1)
    expected = probabilities.gather(1, torch.tensor([[1, 3], [0, 2]]))
    torch.testing.assert_close(explanation.target_probabilities, expected)
    assert explanation.scale == "softmax"
    sigmoid = ReciproCAM(classifier, score="sigmoid").explain(x, [1, 0])
    with torch.no_grad():
        expected = classifier(x).sigmoid()[[0, 1], [1, 0]][:, None]
    torch.testing.assert_close(sigmoid.target_probabilities, expected)
    assert sigmoid.scale == "sigmoid"
    one = x[:1]
    cls = common_class(segmenter, one)
    region = region_of(segmenter, one, cls)
    with torch.no_grad():
        mean = (segmenter(one)["out"].softmax(dim=1)[:, cls] * region).sum() / region.sum()
    region_explanation = ReciproCAM(segmenter).explain(one, cls)
    torch.testing.assert_close(region_explanation.target_probabilities, mean.view(1, 1))
