"""The Shapes dataset and its trained models: ground truth that is right, models that work."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import error_message
from torch.utils.data import DataLoader

from reciprocam import ModelError, ReciproCAM, ViTReciproCAM
from reciprocam.metrics import PointingGame
from reciprocam.synthetic.models import shapes_model
from reciprocam.synthetic.shapes import CLASSES, SIZE, ShapesDataset, render, to_tensor


def test_images_are_a_function_of_seed_and_index() -> None:
    first, again, other = render(0, 7), render(0, 7), render(0, 8)
    assert np.array_equal(np.asarray(first.image), np.asarray(again.image))
    assert np.array_equal(first.mask, again.mask)
    assert not np.array_equal(np.asarray(first.image), np.asarray(other.image))
    assert ShapesDataset("train", 5).seed != ShapesDataset("test", 5).seed


def test_the_mask_is_exactly_the_flat_coloured_target() -> None:
    for index in range(40):
        sample = render(3, index)
        pixels = np.asarray(sample.image).reshape(-1, 3)
        inside = pixels[sample.mask.reshape(-1)]
        # Drawn last in one colour, after the noise: every target pixel has that colour.
        assert (inside == inside[0]).all()
        assert 0.015 * SIZE**2 < sample.mask.sum() < 0.2 * SIZE**2
        rows, columns = np.nonzero(sample.mask)
        assert sample.box == (columns.min(), rows.min(), columns.max(), rows.max())
    labels = [render(3, index).label for index in range(400)]
    assert np.bincount(labels, minlength=len(CLASSES)).min() > 70  # about 100 each


def test_to_tensor_normalises() -> None:
    sample = render(0, 0)
    tensor = to_tensor(sample.image)
    assert tensor.shape == (3, SIZE, SIZE)
    red = np.asarray(sample.image)[10, 20, 0] / 255
    assert float(tensor[0, 10, 20]) == pytest.approx((red - 0.5) / 0.25, abs=1e-6)


@pytest.mark.parametrize("kind", ["cnn", "vit"])
def test_the_trained_models_reach_95_percent(kind: str) -> None:
    model = shapes_model(kind)
    correct = 0
    with torch.inference_mode():
        for images, labels in DataLoader(ShapesDataset("test", 500, seed=2), batch_size=250):
            correct += int((model(images).argmax(1) == labels).sum())
    assert correct / 500 >= 0.95


@pytest.mark.parametrize(("kind", "method"), [("cnn", ReciproCAM), ("vit", ViTReciproCAM)])
def test_reciprocam_points_at_the_shape(kind: str, method: type) -> None:
    model = shapes_model(kind)
    data = ShapesDataset("test", 100, seed=3)
    samples = [data.sample(i) for i in range(len(data))]
    images = torch.stack([to_tensor(s.image) for s in samples])
    masks = torch.stack([torch.from_numpy(s.mask) for s in samples])
    with method(model) as explainer:
        maps = explainer(images)
    hits = PointingGame().update(images, maps, ground_truth=masks)
    centre = torch.zeros(1, SIZE, SIZE)
    centre[0, SIZE // 2, SIZE // 2] = 1.0
    by_chance = PointingGame().update(images, centre.expand(100, -1, -1), ground_truth=masks)
    # Measured 0.75 (CNN) and 0.58 (ViT) on these images; pointing at the centre: 0.3 or so.
    assert by_chance.mean() < 0.45
    assert hits.mean() >= max(0.5, by_chance.mean() + 0.2)


def test_an_unknown_model_kind() -> None:
    assert "unknown Shapes model 'mlp'" in error_message(ModelError, shapes_model, "mlp")
