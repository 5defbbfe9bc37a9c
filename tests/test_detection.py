"""Detection explainers against their definitions, computed here independently.

The oracle below calls the detector's parts one copy at a time, builds each level's mask from
the image regions with exact fractions, and scores targets with torchvision's own IoU and an
explicit cosine; the library batches copies and broadcasts masks. Both must agree.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from fractions import Fraction

import pytest
import torch
from detection_models import SIZE, tiny_faster_rcnn, tiny_fcos, tiny_retinanet
from torch import Tensor, nn
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import box_iou, clip_boxes_to_image

from reciprocam.detection import (
    DRISE,
    ODAM,
    DetAblationCAM,
    DetEigenCAM,
    DetGradCAM,
    DetReciproCAM,
)
from reciprocam.detection.explainer import reference_level
from reciprocam.errors import InputError, LayerError, ModelError, NoDetectionError, TargetError
from reciprocam.methods.eigen_cam import principal_projection
from reciprocam.methods.rise import MaskDraws

BOXES = [(1, (6.0, 8.0, 30.0, 40.0)), (3, (28.0, 20.0, 60.0, 56.0))]
BUILDERS = {"fcos": tiny_fcos, "retinanet": tiny_retinanet, "faster_rcnn": tiny_faster_rcnn}


@pytest.fixture(scope="module")
def detectors() -> dict[str, nn.Module]:
    return {name: build() for name, build in BUILDERS.items()}


@pytest.fixture(scope="module")
def image() -> Tensor:
    return torch.rand(3, SIZE - 8, SIZE, generator=torch.Generator().manual_seed(3))


# ---- the oracle -------------------------------------------------------------------------


def oracle_candidates(
    model: nn.Module, levels: OrderedDict[str, Tensor], tensors: Tensor, size: tuple[int, int],
    original: tuple[int, int],
) -> list[tuple[Tensor, Tensor, int]]:  # fmt: skip
    """Per copy: (boxes (N, L, 4) in original pixels, class vectors (N, L) whose classes start
    at column 1 after a background, column 0 for sigmoid heads), one copy at a time."""
    found = []
    for copy in range(tensors.shape[0]):
        one = OrderedDict((key, level[copy : copy + 1]) for key, level in levels.items())
        images = ImageList(tensors[copy : copy + 1], [size])
        if isinstance(model, FasterRCNN):
            proposals, _ = model.rpn(images, one)
            heads = model.roi_heads
            pooled = heads.box_head(heads.box_roi_pool(one, proposals, [size]))
            logits, regression = heads.box_predictor(pooled)
            boxes = heads.box_coder.decode(regression, proposals)
            vectors = torch.softmax(logits, dim=-1)
        else:
            features = list(one.values())
            outputs = model.head(features)
            anchors = model.anchor_generator(images, features)[0]
            if isinstance(model, FCOS):
                boxes = model.box_coder.decode(outputs["bbox_regression"][0], anchors)
                vectors = (
                    torch.sigmoid(outputs["cls_logits"][0])
                    * torch.sigmoid(outputs["bbox_ctrness"][0])
                ).sqrt()
            else:
                assert isinstance(model, RetinaNet)
                boxes = model.box_coder.decode_single(outputs["bbox_regression"][0], anchors)
                vectors = torch.sigmoid(outputs["cls_logits"][0])
            boxes = boxes[:, None].expand(-1, vectors.shape[1], -1)
        boxes = clip_boxes_to_image(boxes.reshape(-1, 4), size).view(boxes.shape)
        scale = torch.tensor([original[1] / size[1], original[0] / size[0]] * 2)
        found.append((boxes * scale, vectors, 1 if isinstance(model, FasterRCNN) else 0))
    return found


def oracle_similarity(
    candidates: list[tuple[Tensor, Tensor, int]], targets: list[tuple[int, tuple[float, ...]]],
    target_vectors: Tensor,
) -> Tensor:  # fmt: skip
    """(copies, T) max_j IoU(b_t, B_j) cos(P_t, P_j) max_{c>=1} P_j[c], from the definition."""
    rows = []
    for boxes, vectors, first in candidates:
        row = []
        for (label, box), target_vector in zip(targets, target_vectors, strict=True):
            iou = box_iou(torch.tensor([box]), boxes[:, label])[0].nan_to_num()
            cosine = (vectors @ target_vector) / (vectors.norm(dim=1) * target_vector.norm())
            confidence = vectors[:, first:].max(dim=1).values
            row.append(float((iou * cosine * confidence).max()))
        rows.append(row)
    return torch.tensor(rows)


def prepared(model: nn.Module, image: Tensor) -> tuple[Tensor, tuple[int, int], OrderedDict]:
    with torch.no_grad():
        images, _ = model.transform([image])
        levels = OrderedDict(model.backbone(images.tensors))
    return images.tensors, tuple(images.image_sizes[0]), levels


def one_hot(labels: list[int], count: int) -> Tensor:
    return torch.nn.functional.one_hot(torch.tensor(labels), count).float()


def region_mask(
    cell: tuple[int, int], reference: tuple[int, int], level: tuple[int, int]
) -> Tensor:
    """1 on the cells of a level whose image region overlaps reference cell `cell`."""
    mask = torch.zeros(level)
    for r in range(level[0]):
        for c in range(level[1]):
            rows = Fraction(r, level[0]) < Fraction(cell[0] + 1, reference[0]) and Fraction(
                cell[0], reference[0]
            ) < Fraction(r + 1, level[0])
            columns = Fraction(c, level[1]) < Fraction(cell[1] + 1, reference[1]) and Fraction(
                cell[1], reference[1]
            ) < Fraction(c + 1, level[1])
            mask[r, c] = float(rows and columns)
    return mask


# ---- ReciproCAM ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_reciprocam_equals_masking_each_region_and_scoring_it(
    detectors: dict[str, nn.Module], image: Tensor, name: str
) -> None:
    model = detectors[name]
    explanation = DetReciproCAM(model, batch_size=7).explain(image, BOXES)
    tensors, size, levels = prepared(model, image)
    reference = explanation.reference_level
    height, width = levels[reference].shape[-2:]
    copies: OrderedDict[str, list[Tensor]] = OrderedDict((key, []) for key in levels)
    for i in range(height):
        for j in range(width):
            for key, level in levels.items():
                mask = region_mask((i, j), (height, width), tuple(level.shape[-2:]))
                copies[key].append(level[0] * mask)
    stacked = OrderedDict((key, torch.stack(value)) for key, value in copies.items())
    with torch.no_grad():
        candidates = oracle_candidates(
            model, stacked, tensors.expand(height * width, -1, -1, -1), size, tuple(image.shape[1:])
        )
    expected = oracle_similarity(candidates, BOXES, one_hot([1, 3], 4))
    assert explanation.raw.shape == (2, height, width)
    torch.testing.assert_close(
        explanation.raw, expected.T.reshape(2, height, width), atol=1e-5, rtol=0
    )
    assert explanation.maps.shape == (2, *image.shape[1:])
    assert float(explanation.maps.amax()) == 1.0


def test_reference_level_is_the_coarsest_with_eight_positions() -> None:
    levels = OrderedDict(
        (key, torch.zeros(1, 1, side, side + 3))
        for key, side in (("a", 32), ("b", 16), ("c", 8), ("d", 4))
    )
    assert reference_level(levels, None) == "c"
    small = OrderedDict((key, torch.zeros(1, 1, side, side)) for key, side in (("a", 6), ("b", 3)))
    assert reference_level(small, None) == "a"
    assert reference_level(levels, "b") == "b"
    with pytest.raises(
        LayerError, match=r"no pyramid level 'p9'; its levels are \['a', 'b', 'c', 'd'\]"
    ):
        reference_level(levels, "p9")


def test_every_box_from_one_batch_equals_each_box_alone(
    detectors: dict[str, nn.Module], image: Tensor
) -> None:
    model = detectors["faster_rcnn"]
    explainer = DetReciproCAM(model, mask="gaussian")
    together = explainer.explain(image, BOXES)
    for index, box in enumerate(BOXES):
        alone = explainer.explain(image, [box])
        torch.testing.assert_close(alone.raw[0], together.raw[index], atol=1e-6, rtol=0)
        torch.testing.assert_close(alone.maps[0], together.maps[index], atol=1e-6, rtol=0)


def test_gaussian_mask_spreads_the_kernel_over_each_level(
    detectors: dict[str, nn.Module], image: Tensor
) -> None:
    model = detectors["fcos"]
    explanation = DetReciproCAM(model, mask="gaussian").explain(image, BOXES[:1])
    tensors, size, levels = prepared(model, image)
    reference = explanation.reference_level
    height, width = levels[reference].shape[-2:]
    kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
    copies: OrderedDict[str, list[Tensor]] = OrderedDict((key, []) for key in levels)
    for i in range(height):
        for j in range(width):
            weights = torch.zeros(height, width)
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    if 0 <= i + di < height and 0 <= j + dj < width:
                        weights[i + di, j + dj] = kernel[di + 1, dj + 1]
            for key, level in levels.items():
                grid = tuple(level.shape[-2:])
                mask = torch.zeros(grid)
                for (a, b), weight in zip(
                    torch.cartesian_prod(torch.arange(height), torch.arange(width)).tolist(),
                    weights.flatten().tolist(),
                    strict=True,
                ):
                    if weight:
                        mask = torch.maximum(
                            mask, weight * region_mask((a, b), (height, width), grid)
                        )
                copies[key].append(level[0] * mask)
    stacked = OrderedDict((key, torch.stack(value)) for key, value in copies.items())
    with torch.no_grad():
        candidates = oracle_candidates(
            model, stacked, tensors.expand(height * width, -1, -1, -1), size, tuple(image.shape[1:])
        )
    expected = oracle_similarity(candidates, BOXES[:1], one_hot([1], 4))
    torch.testing.assert_close(
        explanation.raw, expected.T.reshape(1, height, width), atol=1e-5, rtol=0
    )


# ---- the targets --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_detections_are_targets_with_their_own_class_vector(
    detectors: dict[str, nn.Module], image: Tensor, name: str
) -> None:
    model = detectors[name]
    with torch.no_grad():
        detections = model([image])[0]
    area = (detections["boxes"][:, 2:] - detections["boxes"][:, :2]).prod(dim=1)
    threshold = float(detections["scores"][area > 0][2])  # random boxes may be clipped empty
    explainer = DetReciproCAM(model, threshold=threshold)
    explanation = explainer.explain(image)
    kept = (detections["scores"] >= threshold) & (area > 0)
    assert int(kept.sum()) == 3
    torch.testing.assert_close(explanation.boxes, detections["boxes"][kept])
    torch.testing.assert_close(explanation.labels, detections["labels"][kept])
    torch.testing.assert_close(explanation.scores, detections["scores"][kept])
    # On the unmasked image each detection's own candidate matches it: IoU 1, cosine 1, so
    # the similarity is at least the candidate's confidence, itself at least the score.
    tensors, size, levels = prepared(model, image)
    with torch.no_grad():
        candidates = oracle_candidates(model, levels, tensors, size, tuple(image.shape[1:]))
    boxes, vectors, _ = candidates[0]
    for box, label, score in zip(
        explanation.boxes, explanation.labels, explanation.scores, strict=True
    ):
        iou = box_iou(box[None], boxes[:, int(label)])[0].nan_to_num()
        assert float(iou.max()) == pytest.approx(1.0, abs=1e-5)
        assert float(vectors[iou.argmax(), int(label)]) == pytest.approx(float(score), abs=1e-6)


def test_no_detection_is_a_one_line_error(detectors: dict[str, nn.Module], image: Tensor) -> None:
    with pytest.raises(
        TargetError,
        match=r"^no detection scores >= 1.0 on this image \(the best scores 0\.\d+\): lower",
    ) as error:
        DetReciproCAM(detectors["fcos"], threshold=1.0).explain(image)
    assert "\n" not in str(error.value)
    assert type(error.value) is NoDetectionError  # what the CLI and the app report per photo
    assert re.fullmatch(
        r"no detection scores >= 1.0 on this image \(the best scores 0\.\d+\)",
        error.value.finding,
    )


@pytest.mark.parametrize(
    ("boxes", "message"),
    [
        ([(1, (10.0, 10.0, 70.0, 20.0))], r"box \(10, 10, 70, 20\) is not inside the 64x56 image"),
        ([(1, (30.0, 10.0, 20.0, 20.0))], r"with x1 < x2 and y1 < y2"),
        (
            [(4, (1.0, 1.0, 9.0, 9.0))],
            r"has label 4, which the model does not have: its labels are 0 to 3$",
        ),
        ([], r"boxes is empty"),
        ([("cat", "box")], r"boxes must be a list of \(label, \(x1, y1, x2, y2\)\) pairs"),
        (torch.zeros(2, 4), r"boxes must be \(T, 5\) or \(T, 6\)"),
    ],
)
def test_bad_boxes_are_one_line_errors(
    detectors: dict[str, nn.Module], image: Tensor, boxes: object, message: str
) -> None:
    with pytest.raises(TargetError, match=message):
        DetReciproCAM(detectors["fcos"]).explain(image, boxes)  # type: ignore[arg-type]


def test_a_softmax_heads_background_is_no_label(
    detectors: dict[str, nn.Module], image: Tensor
) -> None:
    with pytest.raises(
        TargetError,
        match=r"has label 0, which the model does not have: its labels are 1 to 3 \(0 is the b",
    ):
        DetReciproCAM(detectors["faster_rcnn"]).explain(image, [(0, (1.0, 1.0, 9.0, 9.0))])


def test_boxes_as_a_tensor_equal_boxes_as_pairs(
    detectors: dict[str, nn.Module], image: Tensor
) -> None:
    explainer = DetReciproCAM(detectors["retinanet"])
    rows = torch.tensor([[*box, label] for label, box in BOXES])
    torch.testing.assert_close(
        explainer.explain(image, rows).raw, explainer.explain(image, BOXES).raw
    )


def test_a_classifier_is_not_a_detector() -> None:
    with pytest.raises(
        ModelError,
        match=r"^Sequential is not a torchvision detector; detection explainers take Faster R-CNN",
    ):
        DetReciproCAM(nn.Sequential(nn.Conv2d(3, 4, 3)))


@pytest.mark.parametrize(
    ("image", "error", "message"),
    [
        (
            torch.rand(2, 3, 8, 8),
            InputError,
            r"one \(3, H, W\) RGB image at a time, got \(2, 3, 8, 8\)",
        ),
        (torch.rand(1, 8, 8), InputError, r"one \(3, H, W\) RGB image"),
        (
            torch.zeros(3, 8, 8, dtype=torch.uint8),
            InputError,
            r"dtype torch.uint8; give floats in \[0, 1\]",
        ),
        (torch.full((3, 8, 8), float("nan")), InputError, r"NaN or infinite"),
        ([1, 2], InputError, r"must be a torch.Tensor"),
    ],
)
def test_bad_images_are_one_line_errors(
    detectors: dict[str, nn.Module], image: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        DetReciproCAM(detectors["fcos"]).explain(image, BOXES)  # type: ignore[arg-type]


# ---- the baselines ------------------------------------------------------------------------


def test_drise_equals_its_formula(detectors: dict[str, nn.Module], image: Tensor) -> None:
    model = detectors["fcos"]
    explanation = DRISE(model, masks=24, cells=4, seed=5, batch_size=10).explain(image, BOXES)
    size = tuple(image.shape[1:])
    masks = MaskDraws.draw(24, size, 4, 0.5, 5).masks(0, 24, size)
    expected = torch.zeros(2, *size)
    for mask in masks:
        tensors, resized, levels = prepared(model, image * mask)
        with torch.no_grad():
            candidates = oracle_candidates(model, levels, tensors, resized, size)
        weights = oracle_similarity(candidates, BOXES, one_hot([1, 3], 4))[0]
        expected += weights[:, None, None] * mask
    torch.testing.assert_close(explanation.raw, expected, atol=1e-5, rtol=1e-5)
    low, high = expected.flatten(1).aminmax(dim=1)
    torch.testing.assert_close(
        explanation.maps,
        (expected - low[:, None, None]) / (high - low)[:, None, None],
        atol=1e-5,
        rtol=0,
    )


def _target_gradients(model: nn.Module, image: Tensor) -> tuple[OrderedDict, list[list[Tensor]]]:
    """The levels and each box's gradients, through the oracle's scoring."""
    tensors, size, levels = prepared(model, image)
    leaves = OrderedDict((key, level.clone().requires_grad_(True)) for key, level in levels.items())
    candidates = oracle_candidates(model, leaves, tensors, size, tuple(image.shape[1:]))
    boxes, vectors, first = candidates[0]
    gradients = []
    for (label, box), target in zip(BOXES, one_hot([1, 3], 4), strict=True):
        iou = box_iou(torch.tensor([box]), boxes[:, label])[0].nan_to_num()
        cosine = (vectors @ target) / (vectors.norm(dim=1) * target.norm())
        score = (iou * cosine * vectors[:, first:].max(dim=1).values).max()
        found = torch.autograd.grad(
            score, list(leaves.values()), retain_graph=True, allow_unused=True
        )
        gradients.append(
            [
                torch.zeros_like(v) if g is None else g
                for g, v in zip(found, leaves.values(), strict=True)
            ]
        )
    return levels, gradients


def _resized(level: Tensor, size: tuple[int, int]) -> Tensor:
    return torch.nn.functional.interpolate(level, size, mode="bilinear")[0]


@pytest.mark.parametrize("name", ["fcos", "faster_rcnn"])
def test_grad_cam_and_odam_equal_their_formulas(
    detectors: dict[str, nn.Module], image: Tensor, name: str
) -> None:
    model = detectors[name]
    grad_cam = DetGradCAM(model).explain(image, BOXES)
    odam = ODAM(model).explain(image, BOXES)
    levels, gradients = _target_gradients(model, image)
    grid = tuple(levels[grad_cam.reference_level].shape[-2:])
    finest = tuple(levels["0"].shape[-2:])
    activations = torch.cat([_resized(level, grid) for level in levels.values()])
    for index, gradient in enumerate(gradients):
        weights = torch.cat([_resized(g, grid) for g in gradient]).mean(dim=(1, 2))
        expected = torch.relu((weights[:, None, None] * activations).sum(0))
        torch.testing.assert_close(grad_cam.raw[index], expected, atol=1e-6, rtol=1e-4)
        products = [
            (g * level).sum(1, keepdim=True)
            for g, level in zip(gradient, levels.values(), strict=True)
        ]
        expected_odam = torch.relu(sum(_resized(p, finest)[0] for p in products))
        torch.testing.assert_close(odam.raw[index], expected_odam, atol=1e-6, rtol=1e-4)
    assert float(grad_cam.raw.amax()) > 0
    assert float(odam.raw.amax()) > 0


def test_eigen_cam_is_the_stacked_pyramids_principal_component(
    detectors: dict[str, nn.Module], image: Tensor
) -> None:
    model = detectors["retinanet"]
    explanation = DetEigenCAM(model).explain(image, BOXES)
    _, _, levels = prepared(model, image)
    grid = tuple(levels[explanation.reference_level].shape[-2:])
    stacked = torch.cat([_resized(level, grid) for level in levels.values()])[None]
    expected = principal_projection(stacked)[0]
    torch.testing.assert_close(explanation.raw, expected.expand(2, -1, -1), atol=1e-5, rtol=1e-4)


def test_ablation_cam_equals_zeroing_each_channel(
    detectors: dict[str, nn.Module], image: Tensor
) -> None:
    model = detectors["fcos"]
    explanation = DetAblationCAM(model, batch_size=11).explain(image, BOXES)
    tensors, size, levels = prepared(model, image)
    vectors = one_hot([1, 3], 4)
    with torch.no_grad():
        unmasked = oracle_similarity(
            oracle_candidates(model, levels, tensors, size, tuple(image.shape[1:])), BOXES, vectors
        )[0]
        grid = tuple(levels[explanation.reference_level].shape[-2:])
        expected = torch.zeros(2, *grid)
        for key, level in levels.items():
            for channel in range(level.shape[1]):
                ablated = OrderedDict((k, v.clone()) for k, v in levels.items())
                ablated[key][0, channel] = 0
                score = oracle_similarity(
                    oracle_candidates(model, ablated, tensors, size, tuple(image.shape[1:])),
                    BOXES,
                    vectors,
                )[0]
                weight = (unmasked - score) / unmasked
                expected += (
                    weight[:, None, None] * _resized(level[:, channel : channel + 1], grid)[0]
                )
    torch.testing.assert_close(explanation.raw, torch.relu(expected), atol=1e-5, rtol=1e-4)


def test_iou_plus_score_is_pytorch_grad_cams_box_score(
    detectors: dict[str, nn.Module], image: Tensor
) -> None:
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    model = detectors["faster_rcnn"]
    with torch.no_grad():
        detections = model([image])[0]
    boxes = [
        (int(label), tuple(box.tolist()))
        for label, box in zip(detections["labels"][:2], detections["boxes"][:2], strict=True)
    ]
    explainer = DetGradCAM(model, box_score="iou+score")
    explanation = explainer.explain(image, boxes)
    from reciprocam.detection.boxes import given_targets

    targets = given_targets(boxes, tuple(image.shape[1:]), 4)
    ours = targets.iou_plus_score([detections])[0]
    for index, (label, box) in enumerate(boxes):
        theirs = FasterRCNNBoxScoreTarget([label], [torch.tensor(box)])(detections)
        assert float(ours[index]) == pytest.approx(float(theirs), abs=1e-6)
    assert math.isfinite(float(explanation.raw.sum()))


# ---- the model is left as it was ----------------------------------------------------------


@pytest.mark.parametrize("method", [DetReciproCAM, DetGradCAM, ODAM, DetAblationCAM, DetEigenCAM])
def test_the_detector_is_left_unchanged(image: Tensor, method: type) -> None:
    model = tiny_fcos(seed=1)
    model.train()
    model.head.eval()  # a mixed state, restored module by module
    for parameter in model.parameters():
        parameter.grad = torch.full_like(parameter, 0.5)
    state = {key: value.clone() for key, value in model.state_dict().items()}
    method(model).explain(image, BOXES)  # the autouse fixture compares fingerprints too
    assert model.training
    assert not model.head.training
    assert all(bool((p.grad == 0.5).all()) for p in model.parameters() if p.grad is not None)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key], atol=0, rtol=0)
    with pytest.raises(TargetError):
        method(model).explain(image, [(9, (1.0, 1.0, 5.0, 5.0))])
    assert model.training
