"""Parity with openvino_xai's ReciproCAM, the one public implementation, with score="logit".

openvino_xai pins numpy 1.x and openvino-dev 2024.4, so it stays out of this environment: its
maps on a deterministic random-weight ResNet-18 (weights drawn with numpy, identical in any
torch version) were computed by `tests/reference/make_openvino_xai_reference.py` in a separate
virtual environment and committed as `tests/reference/openvino_xai_reciprocam_resnet18.npz`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from reference.seeded_resnet18 import build_model, make_input

from reciprocam import ReciproCAM

REFERENCE = Path(__file__).parent / "reference" / "openvino_xai_reciprocam_resnet18.npz"


@pytest.fixture(scope="module")
def reference():
    with np.load(REFERENCE) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def ours():
    cam = ReciproCAM(build_model(), score="logit")
    explanation = cam.explain(make_input())
    assert str(cam.target_layer) == "layer4"
    return explanation


def pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of a with the same row of b."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    return (a * b).sum(axis=1) / np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))


def test_the_reference_is_openvino_xai_on_layer4(reference):
    assert str(reference["openvino_xai_version"]) == "1.1.0"
    assert str(reference["scaling"]).startswith("none")
    assert "layer4" in str(reference["target_node"])
    assert reference["maps"].shape == (1, 1000, 7, 7)


def test_raw_maps_match_openvino_xai(reference, ours):
    theirs = reference["maps"][0].reshape(1000, 49).astype(np.float64)
    mine = ours.scores[0].reshape(1000, 49).double().numpy()
    correlation = pearson(mine, theirs)
    assert correlation.min() >= 0.999
    assert np.abs(mine - theirs).max() <= 1e-4 * np.abs(theirs).max()
    np.testing.assert_allclose(ours.logits[0].numpy(), reference["logits"][0], rtol=1e-5, atol=1e-3)


def test_normalised_maps_match_openvino_xai(reference, ours):
    theirs = torch.from_numpy(reference["maps"][0]).double().flatten(1)
    low, high = theirs.min(dim=1, keepdim=True).values, theirs.max(dim=1, keepdim=True).values
    scaled = ((theirs - low) / (high - low)).view(1000, 7, 7)
    torch.testing.assert_close(ours.class_maps[0].double(), scaled, rtol=0, atol=1e-5)
