"""torchvision's detectors as they are (random weights): every family's candidates contain its
own detections, scored as the documented table says, and its tail reproduces its output."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import detection

from reciprocam.detection import DetReciproCAM, as_detector
from reciprocam.detection.boxes import detected_targets, pairwise_iou

SMALL = {"min_size": 96, "max_size": 128}
BUILDERS = {
    "fasterrcnn_mobilenet_v3_large_fpn": (detection.fasterrcnn_mobilenet_v3_large_fpn, SMALL),
    "fasterrcnn_resnet50_fpn": (detection.fasterrcnn_resnet50_fpn, SMALL),
    "maskrcnn_resnet50_fpn": (detection.maskrcnn_resnet50_fpn, SMALL),
    "retinanet_resnet50_fpn": (detection.retinanet_resnet50_fpn, SMALL),
    "fcos_resnet50_fpn": (detection.fcos_resnet50_fpn, SMALL),
    "ssd300_vgg16": (detection.ssd300_vgg16, {}),
    "ssdlite320_mobilenet_v3_large": (detection.ssdlite320_mobilenet_v3_large, {}),
}


def build(name: str) -> nn.Module:
    builder, sizes = BUILDERS[name]
    torch.manual_seed(0)
    model = builder(weights=None, weights_backbone=None, num_classes=5, **sizes).eval()
    # Random weights score every box low: keep them all, to have detections to compare.
    holder = model.roi_heads if hasattr(model, "roi_heads") else model
    holder.score_thresh = 0.0
    return model


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.rand(3, 90, 120, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_candidates_hold_the_models_own_detections(name: str, image: torch.Tensor) -> None:
    model = build(name)
    reader = as_detector(model)
    with torch.no_grad():
        detections = model([image])[0]
        prepared = reader.prepare(image)
        levels = reader.features(prepared.images.tensors)
        candidates = reader.candidates(levels, prepared)
        tail = reader.detections(levels, prepared)[0]
        area = (detections["boxes"][:, 2:] - detections["boxes"][:, :2]).prod(dim=1)
        threshold = float(detections["scores"][area > 0][4])  # random boxes may be empty
        targets = detected_targets(detections, candidates, threshold)
    for key in ("boxes", "labels", "scores"):
        torch.testing.assert_close(tail[key], detections[key])
    assert targets.count >= 5
    # Each target's class vector is its own candidate's: the column of its label is its score.
    picked = targets.vectors[torch.arange(targets.count), targets.labels]
    torch.testing.assert_close(picked, targets.scores, atol=1e-5, rtol=1e-5)
    # So on the unmasked image the similarity is at least the score (IoU 1, cosine 1).
    similarity = targets.similarity(candidates)[0]
    assert bool((similarity >= targets.scores - 1e-5).all())
    boxes = candidates.boxes_of(targets.labels)[0]
    best = pairwise_iou(boxes, targets.boxes).amax(dim=0)
    torch.testing.assert_close(best, torch.ones_like(best), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("name", "level", "grid"),
    [
        ("fasterrcnn_mobilenet_v3_large_fpn", "0", (3, 4)),
        ("ssdlite320_mobilenet_v3_large", "1", (10, 10)),
    ],
)
def test_reciprocam_explains_a_zoo_detector_on_its_reference_grid(
    name: str, level: str, grid: tuple[int, int], image: torch.Tensor
) -> None:
    model = build(name)
    explanation = DetReciproCAM(model).explain(image, [(2, (10.0, 20.0, 70.0, 80.0))])
    assert explanation.reference_level == level
    assert explanation.raw.shape == (1, *grid)
    assert bool(torch.isfinite(explanation.raw).all())
    assert explanation.maps.shape == (1, 90, 120)
