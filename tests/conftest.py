"""Shared fixtures: random-weight models built once per session, small seeded inputs."""

from __future__ import annotations

import pytest
import torch
from helpers import build, fingerprint, seeded
from torch import nn

from reciprocam.detection import DetectionExplainer, DetectionExplanation
from reciprocam.detection.boxes import BoxSpec
from reciprocam.explainer import Explainer, Explanation, Targets


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "threads: the test explains in several threads, where another thread's call changes"
        " the modes between a call's two fingerprints (it checks the model itself)",
    )


@pytest.fixture(autouse=True)
def every_explanation_leaves_the_model_unchanged(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Wrap `Explainer.explain` in every test: the model's parameters, buffers, gradients,
    flags and hooks are compared before and after each call, errors included."""
    if request.node.get_closest_marker("threads"):
        return
    explain = Explainer.explain

    def checked(self: Explainer, x: torch.Tensor, targets: Targets = None) -> Explanation:
        before = fingerprint(self.model)
        try:
            return explain(self, x, targets)
        finally:
            assert fingerprint(self.model) == before, f"{type(self).__name__} changed the model"

    monkeypatch.setattr(Explainer, "explain", checked)
    explain_boxes = DetectionExplainer.explain

    def checked_boxes(
        self: DetectionExplainer, image: torch.Tensor, boxes: BoxSpec = None
    ) -> DetectionExplanation:
        before = fingerprint(self.model)
        try:
            return explain_boxes(self, image, boxes)
        finally:
            assert fingerprint(self.model) == before, f"{type(self).__name__} changed the model"

    monkeypatch.setattr(DetectionExplainer, "explain", checked_boxes)


@pytest.fixture(scope="session")
def resnet18() -> nn.Module:
    return build("resnet18")


@pytest.fixture(scope="session")
def resnet50() -> nn.Module:
    return build("resnet50")


@pytest.fixture(scope="session")
def vgg16() -> nn.Module:
    # A random VGG-16's softmax is nearly uniform (maps flat to 1e-5, below float32's resolution
    # after min-max); a larger last layer makes it as peaked as a trained model's.
    model = build("vgg16")
    with torch.no_grad():
        model.classifier[6].weight.mul_(30)
    return model


@pytest.fixture(scope="session")
def demo_model() -> nn.Module:
    from reciprocam.zoo import load_model

    return load_model().model


@pytest.fixture(scope="session")
def images() -> torch.Tensor:
    """Two 160x160 images: a 5x5 feature map on the ResNets and VGG-16."""
    return seeded((2, 3, 160, 160))
