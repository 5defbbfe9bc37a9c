"""Shapes detection and its trained FCOS: targets that are right in torchvision's convention,
images that are a function of (seed, split, index), and a detector that finds the shapes."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from helpers import error_message
from torch.utils.data import DataLoader
from torchvision.ops import box_iou

from reciprocam import ModelError
from reciprocam.synthetic import detector
from reciprocam.synthetic.detection import (
    DETECTION_LABELS,
    DETECTION_SIZE,
    ShapesDetection,
    collate,
    detection_target,
)
from reciprocam.synthetic.detector import shapes_detector, shapes_detector_model
from reciprocam.synthetic.segmentation import ShapesSegmentation, render_segmentation
from reciprocam.synthetic.shapes import CLASSES


def test_labels_follow_torchvision() -> None:
    assert DETECTION_SIZE == 128
    assert DETECTION_LABELS == ("background", "disk", "square", "triangle", "cross")
    assert DETECTION_LABELS[1:] == CLASSES


def test_targets_agree_with_the_instance_masks() -> None:
    data = ShapesDetection("validation", 30, seed=1)
    counts = []
    for index in range(len(data)):
        image, target = data[index]
        sample = data.sample(index)
        assert set(target) == {"boxes", "labels", "masks"}
        boxes, labels, masks = target["boxes"], target["labels"], target["masks"]
        count = len(sample.boxes)
        counts.append(count)
        assert boxes.dtype == torch.float32
        assert boxes.shape == (count, 4)
        assert labels.dtype == torch.int64
        assert masks.dtype == torch.uint8
        assert masks.shape == (count, DETECTION_SIZE, DETECTION_SIZE)
        assert labels.tolist() == [1 + kind for kind, _ in sample.boxes]
        # Each mask is one shape's own visible pixels: the instance numbers still seen, in order.
        numbers = [int(n) for n in np.unique(sample.instances) if n]
        assert len(numbers) == count
        for row, number in enumerate(numbers):
            own = sample.instances == number
            assert np.array_equal(masks[row].numpy(), own.astype(np.uint8))
            assert labels[row] == 1 + sample.shapes[number - 1]
            rows, columns = np.nonzero(own)
            # x2 and y2 one past the last column and row: the width counts the columns spanned.
            expected = [columns.min(), rows.min(), columns.max() + 1, rows.max() + 1]
            assert boxes[row].tolist() == [float(v) for v in expected]
            assert boxes[row, 2] - boxes[row, 0] == len(np.unique(columns))
            assert boxes[row, 3] - boxes[row, 1] == len(np.unique(rows))
        assert (boxes >= 0).all()
        assert (boxes <= DETECTION_SIZE).all()
        # The masks tile exactly the shapes' pixels, without overlapping.
        assert np.array_equal(masks.sum(0).numpy(), (sample.instances > 0).astype(np.int64))
        # Pixels in [0, 1], not normalised.
        assert image.dtype == torch.float32
        assert image.shape == (3, DETECTION_SIZE, DETECTION_SIZE)
        assert 0 <= float(image.min()) <= float(image.max()) <= 1
        pixels = np.asarray(sample.image, dtype=np.float32).transpose(2, 0, 1) / 255
        assert torch.equal(image, torch.from_numpy(pixels))
    assert set(counts) == {2, 3, 4}


def test_an_empty_target_keeps_its_shapes() -> None:
    sample = render_segmentation(0, 0, size=DETECTION_SIZE)
    blank = type(sample)(sample.image, sample.mask * 0, (), sample.instances * 0)
    target = detection_target(blank)
    assert target["boxes"].shape == (0, 4)
    assert target["labels"].shape == (0,)
    assert target["masks"].shape == (0, DETECTION_SIZE, DETECTION_SIZE)


def test_images_are_a_function_of_seed_split_and_index() -> None:
    first, again = ShapesDetection("train", 5), ShapesDetection("train", 5)
    assert torch.equal(first[3][0], again[3][0])
    assert torch.equal(first[3][1]["boxes"], again[3][1]["boxes"])
    assert not torch.equal(first[3][0], first[4][0])
    test, other = ShapesDetection("test", 5), ShapesDetection("train", 5, seed=1)
    assert len({first.seed, test.seed, other.seed}) == 3
    for data in (test, other):
        assert not torch.equal(first[0][0], data[0][0])
    # Streams of its own: not the segmentation image of the same split, drawn at 128 px.
    segmentation = ShapesSegmentation("train", 5)
    drawn = render_segmentation(segmentation.seed, 0, size=DETECTION_SIZE)
    assert first.sample(0).boxes != drawn.boxes
    with pytest.raises(IndexError):
        test.sample(5)


def test_collate_keeps_lists() -> None:
    loader = DataLoader(ShapesDetection("test", 3), batch_size=3, collate_fn=collate)
    images, targets = next(iter(loader))
    assert isinstance(images, list)
    assert isinstance(targets, list)
    assert [image.shape for image in images] == [(3, DETECTION_SIZE, DETECTION_SIZE)] * 3
    assert torch.equal(targets[2]["labels"], ShapesDetection("test", 3)[2][1]["labels"])


def test_the_model_has_three_levels() -> None:
    model = shapes_detector_model().eval()
    levels = model.backbone(torch.zeros(2, 3, DETECTION_SIZE, DETECTION_SIZE))
    assert isinstance(levels, OrderedDict)
    assert list(levels) == ["0", "1", "2"]
    assert [tuple(level.shape) for level in levels.values()] == [
        (2, 64, 16, 16),
        (2, 64, 8, 8),
        (2, 64, 4, 4),
    ]
    assert model.backbone.out_channels == 64
    assert model.transform.min_size == (DETECTION_SIZE,)
    assert model.transform.max_size == DETECTION_SIZE
    # A 128 x 128 image is kept at its size, so boxes come back in its pixels.
    batch, _ = model.transform([torch.rand(3, DETECTION_SIZE, DETECTION_SIZE)])
    assert batch.tensors.shape == (1, 3, DETECTION_SIZE, DETECTION_SIZE)
    assert model.anchor_generator.sizes == ((8,), (16,), (32,))
    assert model.score_thresh == 0.05
    assert model.nms_thresh == 0.6
    assert model.detections_per_img == 100
    assert sum(p.numel() for p in model.parameters()) == 920_410


def test_a_missing_checkpoint_is_a_model_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(detector, "CHECKPOINT", "missing.pt")
    message = error_message(ModelError, shapes_detector)
    assert "train_shapes_detector.py" in message


def test_the_trained_detector_finds_the_shapes() -> None:
    model = shapes_detector()
    assert not model.training
    images, targets = collate([ShapesDetection("test", 8, seed=1)[i] for i in range(8)])
    with torch.inference_mode():
        found = model(images)
    assert len(found) == 8
    hits = boxes = wrong = kept = 0
    fits = []  # the best IoU of each box found with its label
    for detections, truth in zip(found, targets, strict=True):
        assert set(detections) == {"boxes", "labels", "scores"}
        confident = detections["scores"] >= 0.5
        overlaps = box_iou(detections["boxes"][confident], truth["boxes"])  # (found, truths)
        same = detections["labels"][confident][:, None] == truth["labels"][None]
        matched = (overlaps > 0.5) & same
        hits += int(matched.any(0).sum())
        boxes += len(truth["labels"])
        wrong += int((~matched.any(1)).sum())
        kept += int(confident.sum())
        fits += (overlaps * matched).max(0).values[matched.any(0)].tolist()
    # Measured on these 8 images: 27 of the 28 boxes found (the one missed, a triangle, is
    # found at IoU 0.77 but scores 0.30), no confident detection wrong, a mean IoU of 0.96
    # over the boxes found (on 500 test images of seed 0: mAP@0.5 1.000, recall 0.999).
    assert boxes == 28
    assert hits >= 25
    assert wrong <= 2
    assert sum(fits) / len(fits) >= 0.85
