"""Parity of our metrics with openvino_xai 1.1.0's ADCC, InsertionDeletionAUC and PointingGame.

`tests/reference/make_openvino_xai_metrics_reference.py` ran openvino_xai's own metric classes,
in a separate venv (it pins numpy 1.x), on the seeded tiny CNN of `reference/seeded_tiny_cnn.py`
(exported to ONNX, inferred by OpenVINO in fp32) and committed its inputs and results in
`tests/reference/openvino_xai_metrics.npz`: 4 normalised images, smooth tie-free maps in
[0, 1], explicit targets, and pointing-game maps and (x, y, w, h) boxes, some crafted with the
maximum on or one pixel off a box border. Here our metrics, configured to their protocol
(zeros as start and substrate, steps=10, coherency with the same stand-in explainer), must
agree per image with theirs up to float32 rounding (OpenVINO vs torch).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from reference.seeded_tiny_cnn import build_model
from torch import Tensor, nn

from reciprocam.explainer import Evidence, Explainer
from reciprocam.metrics import (
    ADCC,
    AverageDrop,
    Coherency,
    Complexity,
    Deletion,
    Insertion,
    Metric,
    PointingGame,
    boxes_to_mask,
)
from reciprocam.targets import Target

REFERENCE = Path(__file__).parent / "reference" / "openvino_xai_metrics.npz"
ATOL = 1e-6
Reference = dict[str, np.ndarray]
Inputs = tuple[Tensor, Tensor, Tensor]


class SumOfSquares(Explainer):
    """The reference's stand-in explainer: the per-pixel sum of squares over channels."""

    def _explain(self, x: Tensor, target: Target) -> Evidence:
        with torch.inference_mode():
            logits = self.model(x)
        return Evidence(logits, target.bind(logits), x.square().sum(dim=1))


@pytest.fixture(scope="module")
def reference() -> Reference:
    with np.load(REFERENCE) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def inputs(reference: Reference) -> Inputs:
    """Images (B, 3, 32, 32), maps (B, 32, 32) and targets (B,)."""
    images, maps, targets = (torch.from_numpy(reference[k]) for k in ("images", "maps", "targets"))
    return images, maps, targets


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return build_model()


def test_the_reference_is_openvino_xai_in_fp32(
    reference: Reference, inputs: Inputs, model: nn.Module
) -> None:
    assert str(reference["openvino_xai_version"]) == "1.1.0"
    assert str(reference["inference_precision"]) == "f32"
    with torch.no_grad():
        logits = model(inputs[0]).numpy()
    np.testing.assert_allclose(logits, reference["logits"], rtol=0, atol=ATOL)


def test_explainer_normalisation_is_openvino_xai_scaling(
    reference: Reference, inputs: Inputs, model: nn.Module
) -> None:
    images, maps, targets = inputs
    ours = SumOfSquares(model)(images * maps[:, None], targets)
    np.testing.assert_allclose(ours.numpy(), reference["coherency_maps"], rtol=0, atol=ATOL)


@pytest.mark.parametrize(
    ("name", "metric"),
    [
        ("insertion", lambda model: Insertion(model, steps=10, start="zeros")),
        ("deletion", lambda model: Deletion(model, steps=10, substrate="zeros")),
        ("average_drop", AverageDrop),
        ("complexity", lambda _: Complexity()),
        ("coherency", lambda model: Coherency(SumOfSquares(model))),
        ("adcc", lambda model: ADCC(SumOfSquares(model))),
    ],
)
def test_values_and_summaries_match(
    reference: Reference,
    inputs: Inputs,
    model: nn.Module,
    name: str,
    metric: Callable[[nn.Module], Metric],
) -> None:
    assert int(reference["steps"]) == 10
    measure = metric(model)
    ours = measure.update(*inputs).numpy()
    np.testing.assert_allclose(ours, reference[name], rtol=0, atol=ATOL)
    # ADCC's summary is the harmonic mean of the components' means, as openvino_xai's evaluate.
    assert measure.compute() == pytest.approx(float(reference[f"evaluate_{name}"]), abs=ATOL)


def test_pointing_game_matches_on_inclusive_borders(reference: Reference) -> None:
    maps = torch.from_numpy(reference["pointing_maps"])
    boxes = reference["pointing_boxes"]  # rows of (case, x, y, w, h)
    masks = torch.stack(
        [
            boxes_to_mask(
                [(x, y, x + w, y + h) for _, x, y, w, h in boxes[boxes[:, 0] == i]], (32, 32)
            )
            for i in range(len(maps))
        ]
    )
    metric = PointingGame()
    ours = metric.update(torch.zeros(len(maps), 1, 32, 32), maps, ground_truth=masks)
    np.testing.assert_array_equal(ours.numpy(), reference["pointing_game"])
    assert metric.compute() == pytest.approx(float(reference["evaluate_pointing_game"]))
