"""The metrics against values derived by hand and against their explicit definitions.

Most cases use a two-class linear model on 1 x 2 x 2 images whose logits are (sum of pixels, 0),
so every probability is a sigmoid of a sum that can be read off the masked image.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import assert_unchanged, error_message, seeded, snapshot
from scipy.ndimage import gaussian_filter
from torch import Tensor, nn

from reciprocam import GradCAM, InputError, OptionError, ReciproCAM, TargetError
from reciprocam.explainer import Evidence, Explainer
from reciprocam.metrics import (
    ADCC,
    AverageDrop,
    Coherency,
    Complexity,
    Deletion,
    EnergyPointingGame,
    IncreaseInConfidence,
    Insertion,
    MetricOptions,
    MetricSuite,
    PointingGame,
    boxes_to_mask,
    metric_info,
    resolve_metric_names,
    rise_blur,
    rise_kernel,
    summarize,
)
from reciprocam.targets import Target


def sigmoid(value: float) -> float:
    return 1 / (1 + math.exp(-value))


class PixelSum(nn.Module):
    """Logits (sum of the pixels, 0): p_0 = sigmoid(sum), p_1 = sigmoid(-sum)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: Tensor) -> Tensor:
        total = x.flatten(1).sum(dim=1) * self.scale
        return torch.stack([total, torch.zeros_like(total)], dim=1)


class InputEnergy(Explainer):
    """A test explainer: the map is the input's absolute value summed over channels."""

    def _explain(self, x: Tensor, target: Target) -> Evidence:
        logits = self.model(x)
        return Evidence(logits, target.bind(logits), x.abs().sum(dim=1))


def image(*rows: list[float]) -> Tensor:
    return torch.tensor([list(rows)], dtype=torch.float32)


ONES = image([1, 1], [1, 1])
GRADED = torch.tensor([[[1.0, 0.5], [0.25, 0.0]]])  # saliency order: (0,0), (0,1), (1,0), (1,1)


@pytest.fixture
def model() -> nn.Module:
    return PixelSum()


def test_average_drop_and_increase_in_confidence_by_hand(model: nn.Module) -> None:
    images = torch.stack([ONES, image([2, -1], [-1, -1])])
    maps = torch.tensor([[[1.0, 0.0], [0.5, 0.0]], [[0.0, 1.0], [1.0, 1.0]]])
    # Image 0: class 0, Y = s(4), E sums to 1.5. Image 1: top-1 is class 1 (sum -1),
    # Y = s(1), E sums to -3 so O = s(3) > Y: no drop, an increase.
    drop = AverageDrop(model)
    values = drop.update(images, maps)
    expected = (sigmoid(4) - sigmoid(1.5)) / sigmoid(4)
    assert values.tolist() == pytest.approx([expected, 0.0], abs=1e-6)
    increase = IncreaseInConfidence(model)
    assert increase.update(images, maps).tolist() == [0.0, 1.0]
    assert drop.compute() == pytest.approx(expected / 2, abs=1e-6)
    assert increase.compute() == 0.5


def test_targets_override_the_top_1(model: nn.Module) -> None:
    # Class 1 of the ones image: Y = s(-4), O = s(-1.5) > Y.
    maps = torch.tensor([[[1.0, 0.0], [0.5, 0.0]]])
    assert AverageDrop(model).update(ONES[None], maps, targets=1).tolist() == [0.0]
    assert IncreaseInConfidence(model).update(ONES[None], maps, targets=[1]).tolist() == [1.0]
    message = error_message(TargetError, AverageDrop(model).update, ONES[None], maps, targets=2)
    assert "class 2 is out of range" in message


def test_a_probability_that_underflows_to_zero_drops_nothing(model: nn.Module) -> None:
    huge = torch.full((1, 1, 2, 2), 50.0)  # p_1 = sigmoid(-200) = 0 in float32
    values = AverageDrop(model).update(huge, torch.ones(1, 2, 2), targets=1)
    assert values.tolist() == [0.0]


def test_deletion_and_insertion_one_pixel_a_step_by_hand(model: nn.Module) -> None:
    # Deletion zeroes (0,0), (0,1), (1,0), (1,1) in turn: sums 4, 3, 2, 1, 0.
    deletion = Deletion(model, step=1)
    curve = [sigmoid(s) for s in (4, 3, 2, 1, 0)]
    expected = (sum(curve) - curve[0] / 2 - curve[-1] / 2) / 4
    assert deletion.update(ONES[None], GRADED).item() == pytest.approx(expected, abs=1e-6)
    assert deletion.curves[0].tolist() == pytest.approx(curve, abs=1e-6)
    # Insertion from zeros puts them back: sums 0, 1, 2, 3, 4.
    insertion = Insertion(model, step=1, start="zeros")
    rising = curve[::-1]
    expected = (sum(rising) - rising[0] / 2 - rising[-1] / 2) / 4
    assert insertion.update(ONES[None], GRADED).item() == pytest.approx(expected, abs=1e-6)
    assert insertion.curves[0].tolist() == pytest.approx(rising, abs=1e-6)


@pytest.mark.parametrize(
    ("options", "counts"),
    [
        ({}, [0, 2, 4]),  # the image width a step: RISE's 224 at 224 x 224
        ({"step": 3}, [0, 3, 4]),
        ({"steps": 3}, [0, 1, 2, 4]),  # openvino_xai: int(t * 4 / 3)
    ],
)
def test_step_schedules(model: nn.Module, options: dict[str, int], counts: list[int]) -> None:
    deletion = Deletion(model, **options)
    assert deletion.pixel_counts(2, 2).tolist() == counts
    deletion.update(ONES[None], GRADED)
    assert deletion.curves[0].tolist() == pytest.approx([sigmoid(4 - c) for c in counts], abs=1e-6)


def test_rise_kernel_is_scipys_gaussian_filter_of_a_delta() -> None:
    delta = np.zeros((11, 11))
    delta[5, 5] = 1
    expected = gaussian_filter(delta, 5)  # RISE's gkern(11, 5)
    np.testing.assert_allclose(rise_kernel().numpy(), expected, atol=1e-15)
    assert float(rise_kernel().sum()) == pytest.approx(1.0)


def test_rise_blur_is_a_zero_padded_convolution_per_channel() -> None:
    picture = seeded((2, 9, 12))
    kernel = rise_kernel().float()
    padded = torch.nn.functional.pad(picture, (5, 5, 5, 5))
    expected = torch.zeros_like(picture)
    for channel in range(2):
        for row in range(9):
            for column in range(12):
                window = padded[channel, row : row + 11, column : column + 11]
                expected[channel, row, column] = (window * kernel).sum()
    torch.testing.assert_close(rise_blur(picture), expected, atol=1e-5, rtol=0)


def test_deletion_and_insertion_match_an_explicit_loop(resnet18: nn.Module) -> None:
    images = seeded((2, 3, 32, 32), seed=3)
    maps = torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(4))
    step = 100
    with torch.no_grad():
        classes = resnet18(images).argmax(dim=1)
    for image, saliency, target, deletion, insertion in zip(
        images,
        maps,
        classes,
        Deletion(resnet18, step=step, batch_size=4).update(images, maps),
        Insertion(resnet18, step=step, batch_size=7).update(images, maps),
        strict=True,
    ):
        order = np.argsort(-saliency.flatten().numpy(), kind="stable")
        blurred = rise_blur(image)
        deleted, inserted = [], []
        for count in [*range(0, 1024, step), 1024]:
            top = torch.zeros(1024, dtype=torch.bool)
            top[torch.from_numpy(order[:count].copy())] = True
            top = top.view(1, 32, 32)
            with torch.no_grad():
                gone = resnet18(torch.where(top, 0.0, image)[None]).softmax(1)[0, target]
                back = resnet18(torch.where(top, image, blurred)[None]).softmax(1)[0, target]
            deleted.append(float(gone))
            inserted.append(float(back))
        assert len(deleted) == 12  # ceil(1024 / 100) steps
        for curve, value in ((deleted, deletion), (inserted, insertion)):
            auc = (sum(curve) - curve[0] / 2 - curve[-1] / 2) / (len(curve) - 1)
            assert float(value) == pytest.approx(auc, abs=1e-5)


def test_complexity_is_the_mean_saliency() -> None:
    assert Complexity().update(ONES[None], GRADED).tolist() == [0.4375]


def test_coherency_by_hand(model: nn.Module) -> None:
    picture = image([4, 3], [2, 1])
    # E = x * L = [[4, 1.5], [0.5, 0]]; the explainer's map of E, min-max: E / 4.
    again = np.array([1.0, 0.375, 0.125, 0.0])
    correlation = np.corrcoef(GRADED.flatten().numpy(), again)[0, 1]
    with InputEnergy(model) as explainer:
        values = Coherency(explainer).update(picture[None], GRADED)
    assert values.item() == pytest.approx((correlation + 1) / 2, abs=1e-7)


def test_a_constant_map_has_no_coherency_and_no_nan(model: nn.Module) -> None:
    with InputEnergy(model) as explainer:
        adcc = ADCC(explainer)
        values = adcc.update(ONES[None], torch.full((1, 2, 2), 0.5))
    assert adcc.coherency.values.tolist() == [0.0]
    assert values.tolist() == [0.0]
    assert not math.isnan(adcc.compute())


def test_adcc_per_image_and_both_dataset_forms(model: nn.Module) -> None:
    images = torch.stack([image([4, 3], [2, 1]), image([1, 2], [3, 5])])
    maps = torch.stack([GRADED[0], torch.tensor([[1.0, 1.0], [0.0, 0.9]])])
    with InputEnergy(model) as explainer:
        adcc = ADCC(explainer)
        values = adcc.update(images, maps)
        coherency = Coherency(explainer).update(images, maps)
    complexity = maps.flatten(1).mean(1).double()
    drop = AverageDrop(model).update(images, maps)
    expected = 3 / (1 / coherency + 1 / (1 - complexity) + 1 / (1 - drop))
    torch.testing.assert_close(values, expected)
    assert adcc.compute_mean_of_images() == pytest.approx(float(expected.mean()))
    table = 3 / (1 / coherency.mean() + 1 / (1 - complexity.mean()) + 1 / (1 - drop.mean()))
    assert adcc.compute() == pytest.approx(float(table))
    assert adcc.compute() != pytest.approx(adcc.compute_mean_of_images(), abs=1e-4)
    summary = summarize(
        {"adcc": values, "coherency": coherency, "complexity": complexity, "average_drop": drop}
    )
    assert summary["adcc"] == pytest.approx(float(table))
    assert summary["adcc_mean_of_images"] == pytest.approx(float(expected.mean()))


def test_pointing_game_by_hand() -> None:
    saliency = torch.zeros(1, 3, 3)
    saliency[0, 1, 1] = 1.0
    pictures = torch.zeros(1, 1, 3, 3)

    def score(boxes: list[tuple[int, ...]], metric: PointingGame | None = None) -> float:
        truth = boxes_to_mask(boxes, (3, 3))[None]
        return (metric or PointingGame()).update(pictures, saliency, ground_truth=truth).item()

    assert score([(1, 1, 1, 1)]) == 1.0
    assert score([(0, 0, 0, 0)]) == 0.0
    assert score([(0, 0, 0, 0), (1, 0, 2, 2)]) == 1.0  # any box
    assert score([(0, 0, 1, 1)]) == 1.0  # bounds are inclusive
    corner = torch.zeros(1, 9, 9)
    corner[0, 0, 0] = 1.0
    truth = boxes_to_mask([(2, 2, 4, 4)], (9, 9))[None]  # 2.83 pixels from the peak
    for tolerance, hit in ((0, 0.0), (2, 0.0), (3, 1.0)):
        game = PointingGame(tolerance=tolerance)
        assert game.update(torch.zeros(1, 1, 9, 9), corner, ground_truth=truth).item() == hit


def test_pointing_game_counts_every_tied_maximum_and_skips_images_without_objects() -> None:
    saliency = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 0.0]]])
    truth = torch.tensor([[[False, False], [False, True]], [[False, False], [False, False]]])
    game = PointingGame()
    assert game.update(torch.zeros(2, 1, 2, 2), saliency, ground_truth=truth)[0].item() == 1.0
    assert math.isnan(game.values[1].item())
    assert game.compute() == 1.0


def test_energy_pointing_game_by_hand() -> None:
    saliency = torch.tensor([[[1.0, 0.5], [1.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    truth = torch.tensor([[[True, False], [True, False]]] * 2)
    values = EnergyPointingGame().update(torch.zeros(2, 1, 2, 2), saliency, ground_truth=truth)
    assert values.tolist() == [0.8, 0.0]


def test_boxes_to_mask_is_inclusive_and_clipped() -> None:
    mask = boxes_to_mask([(1, 0, 2, 1), (3, 3, 10, 10)], (4, 5))
    expected = torch.zeros(4, 5, dtype=torch.bool)
    expected[0:2, 1:3] = True
    expected[3, 3:5] = True
    assert torch.equal(mask, expected)


def test_streaming_keeps_per_image_values_and_resets(model: nn.Module) -> None:
    drop = AverageDrop(model)
    first = drop.update(ONES[None], GRADED)
    second = drop.update(torch.stack([ONES, 2 * ONES]), torch.cat([GRADED, GRADED]))
    assert drop.values.tolist() == [*first.tolist(), *second.tolist()]
    assert drop.compute() == pytest.approx(float(torch.cat([first, second]).mean()))
    drop.reset()
    assert drop.values.numel() == 0
    assert math.isnan(drop.compute())


def test_batch_size_does_not_change_values(resnet18: nn.Module) -> None:
    images = seeded((3, 3, 32, 32), seed=5)
    maps = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(6))
    with GradCAM(resnet18) as explainer:
        one = MetricSuite("all", explainer=explainer, options=MetricOptions(batch_size=1, step=128))
        many = MetricSuite(
            "all", explainer=explainer, options=MetricOptions(batch_size=64, step=128)
        )
        truth = maps > 0.7
        for suite in (one, many):
            suite.update(images, maps, ground_truth=truth)
    for name, values in one.values().items():
        torch.testing.assert_close(values, many.values()[name], atol=1e-5, rtol=0, msg=name)


class CountingModel(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        output: Tensor = self.inner(x)
        return output


def test_a_suite_shares_its_forwards(model: nn.Module) -> None:
    counting = CountingModel(model)
    images = torch.stack([ONES, image([4, 3], [2, 1])])
    maps = torch.cat([GRADED, GRADED])
    with InputEnergy(counting) as explainer:
        suite = MetricSuite(["drop", "inc", "adcc", "complexity"], explainer=explainer)
        suite.update(images, maps)
    # The images once, E once, and the explainer once on E (which runs the model once).
    assert counting.calls == 3
    assert suite.names == [
        "average_drop",
        "increase_in_confidence",
        "coherency",
        "complexity",
        "adcc",
    ]


def test_reciprocam_metrics_on_a_real_architecture(resnet18: nn.Module) -> None:
    images = seeded((2, 3, 64, 64), seed=8)
    with ReciproCAM(resnet18) as explainer:
        explanation = explainer.explain(images)
        suite = MetricSuite("paper", explainer=explainer, options=MetricOptions(step=256))
        values = suite.update(images, explanation.maps, explanation.targets)
        # Coherency from the definition: ReciproCAM run again on E for the same classes.
        again = explainer(images * explanation.maps[:, None], explanation.targets)
    for index in range(2):
        correlation = np.corrcoef(explanation.maps[index].flatten(), again[index].flatten())[0, 1]
        assert values["coherency"][index].item() == pytest.approx((correlation + 1) / 2, abs=1e-6)
    summary = suite.compute()
    for name in ("average_drop", "deletion", "insertion", "coherency", "complexity", "adcc"):
        assert 0.0 <= summary[name] <= 1.0, name


def test_metric_names_and_metadata() -> None:
    assert resolve_metric_names("drop, Ins,ADCC") == [
        "average_drop",
        "insertion",
        "coherency",
        "complexity",
        "adcc",
    ]
    assert len(resolve_metric_names("all")) == 9
    assert resolve_metric_names("paper")[-1] == "adcc"
    assert metric_info("deletion").higher_is_better is False
    assert metric_info("ins").higher_is_better is True
    assert metric_info("pointing_game").needs_ground_truth
    assert metric_info("adcc").arrow == "\u2191"
    assert "unknown metric 'iou'" in error_message(OptionError, resolve_metric_names, "drop,iou")


def test_bad_input_is_a_clear_error(model: nn.Module) -> None:
    drop = AverageDrop(model)
    assert "lie in [0, 1]" in error_message(InputError, drop.update, ONES[None], 2 * GRADED)
    assert "maps must be (B, H, W)" in error_message(InputError, drop.update, ONES[None], GRADED[0])
    assert "needs ground-truth" in error_message(
        InputError, PointingGame().update, ONES[None], GRADED
    )
    assert "not both" in error_message(OptionError, Deletion, model, step=2, steps=3)
    assert "substrate must be" in error_message(OptionError, Deletion, model, substrate="noise")
    assert "needs the explainer" in error_message(OptionError, MetricSuite, "adcc", model=model)


def test_low_resolution_maps_are_upsampled(model: nn.Module) -> None:
    pictures = seeded((1, 1, 8, 8))
    coarse = torch.rand(1, 2, 2, generator=torch.Generator().manual_seed(1))
    fine = torch.nn.functional.interpolate(coarse[:, None], size=(8, 8), mode="bilinear")[:, 0]
    assert Complexity().update(pictures, coarse).item() == pytest.approx(fine.mean().item())


def test_metrics_leave_the_model_unchanged(resnet18: nn.Module) -> None:
    resnet18.train()
    before = snapshot(resnet18)
    try:
        images = seeded((1, 3, 32, 32))
        with GradCAM(resnet18) as explainer:
            MetricSuite("all", explainer=explainer, options=MetricOptions(step=512)).update(
                images, torch.rand(1, 32, 32), ground_truth=torch.ones(1, 32, 32)
            )
        assert_unchanged(resnet18, before)
    finally:
        resnet18.eval()
