"""torchvision's detectors as they are, split where a detection explainer needs them.

Every detector is read as three steps, each the model's own code:

1. `prepare`: the model's transform (normalise, resize, pad) of the image list;
2. `features`: its backbone (and neck), giving the pyramid levels the heads read, in order;
3. `candidates`: the rest (RPN and box head, or the dense heads, and the box decoding) on any
   batch of those levels, stopped before the score threshold and non-maximum suppression, so
   that scores vary smoothly with the features.

A candidate j has a box B_j (in the original image's pixels, clipped to it, as the model's own
postprocessing gives it), a class vector P_j with one column per label (label 0 is the
background, as in every torchvision detector) and a confidence O_j:

| detector | P_j | box |
|---|---|---|
| Faster R-CNN, Mask R-CNN (box head) | softmax of the box head's logits | one per class |
| RetinaNet | sigmoid of the class logits | one per anchor |
| FCOS | sqrt(sigmoid(class) * sigmoid(centerness)), the model's own score | one per anchor |
| SSD, SSDlite | softmax of the class logits | one per anchor |

None of these exposes an objectness at the box head (Faster R-CNN's RPN objectness is spent
choosing the proposals), so O_j is the candidate's confidence as the model ranks it, its
largest class score, the replacement XAITK's D-RISE documents: max_{c >= 1} P_j[c] for the
softmax heads, whose column 0 is the background, and max_c P_j[c] for the sigmoid heads
(RetinaNet, FCOS), whose columns are all classes (torchvision's postprocessing keeps label 0
there too).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torchvision.models.detection.fcos import FCOS
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import RetinaNet
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops import boxes as box_ops

from ..errors import ModelError

Levels = OrderedDict[str, Tensor]


@dataclass(frozen=True)
class Prepared:
    """One image as the model's transform gives it to the backbone."""

    images: ImageList  # (1, 3, H_pad, W_pad) tensors and the resized size
    original_size: tuple[int, int]  # (H, W) of the image given

    @property
    def resized_size(self) -> tuple[int, int]:
        height, width = self.images.image_sizes[0]
        return int(height), int(width)

    @property
    def padded_size(self) -> tuple[int, int]:
        return int(self.images.tensors.shape[-2]), int(self.images.tensors.shape[-1])

    def repeated(self, count: int) -> ImageList:
        """The ImageList of `count` copies of this image (a view: no memory per copy)."""
        tensors = self.images.tensors.expand(count, -1, -1, -1)
        return ImageList(tensors, [self.images.image_sizes[0]] * count)


@dataclass(frozen=True)
class Candidates:
    """Every candidate detection of n copies of an image, before thresholds and NMS."""

    boxes: Tensor  # (n, N, 4), or (n, N, L, 4) one per label, x1 y1 x2 y2 in image pixels
    probabilities: Tensor  # (n, N, L) P_j, column = label
    background: bool  # column 0 is a background class (softmax heads), not a class
    valid: Tensor | None = None  # (n, N) bool, where the copies have different N (proposals)

    @property
    def first_label(self) -> int:
        """The first column that is a class: 1 after a background column, else 0."""
        return int(self.background)

    @property
    def confidence(self) -> Tensor:
        """(n, N) O_j = the largest class score of P_j, zero where a row is padding."""
        confidence = self.probabilities[..., self.first_label :].amax(dim=-1)
        return confidence if self.valid is None else confidence * self.valid

    def boxes_of(self, labels: Tensor) -> Tensor:
        """(n, N, T, 4) each candidate's box for each of T targets' labels."""
        if self.boxes.ndim == 3:
            return self.boxes[:, :, None].expand(-1, -1, labels.numel(), -1)
        return self.boxes[:, :, labels]


class Detector(ABC):
    """A torchvision detector read in the three steps of the module docstring."""

    def __init__(self, model: nn.Module) -> None:
        self.model: Any = model  # torchvision's detectors are not typed

    @property
    def transform(self) -> Any:
        return self.model.transform

    def prepare(self, image: Tensor) -> Prepared:
        """The model's transform of one (3, H, W) image."""
        images, _ = self.transform([image])
        return Prepared(images, (int(image.shape[-2]), int(image.shape[-1])))

    def features(self, tensors: Tensor) -> Levels:
        """The pyramid levels (name -> (n, C, h, w)) the heads read, finest first."""
        features = self.model.backbone(tensors)
        if isinstance(features, Tensor):
            return OrderedDict([("0", features)])
        return OrderedDict(features)

    @abstractmethod
    def candidates(self, levels: Levels, prepared: Prepared) -> Candidates:
        """The candidates of a batch of n copies' levels (n, C, h, w) of one prepared image."""

    @abstractmethod
    def detections(self, levels: Levels, prepared: Prepared) -> list[dict[str, Tensor]]:
        """The model's own final detections of those copies (thresholds and NMS applied)."""

    def _to_image(self, boxes: Tensor, prepared: Prepared) -> Tensor:
        """Boxes (..., 4) in the resized frame, clipped to it, in the original image's pixels."""
        shape = boxes.shape
        clipped = box_ops.clip_boxes_to_image(boxes.reshape(-1, 4), prepared.resized_size)
        resized: Tensor = resize_boxes(
            clipped, list(prepared.resized_size), list(prepared.original_size)
        )
        return resized.view(shape)

    def _postprocess(
        self, detections: list[dict[str, Tensor]], prepared: Prepared
    ) -> list[dict[str, Tensor]]:
        count = len(detections)
        sizes = [prepared.resized_size] * count
        final: list[dict[str, Tensor]] = self.transform.postprocess(
            detections, sizes, [prepared.original_size] * count
        )
        return final


class TwoStage(Detector):
    """Faster R-CNN and its kin (GeneralizedRCNN): the RPN's proposals, then the box head."""

    def _box_head(self, levels: Levels, prepared: Prepared) -> tuple[list[Tensor], Tensor, Tensor]:
        count = next(iter(levels.values())).shape[0]
        images = prepared.repeated(count)
        proposals, _ = self.model.rpn(images, levels)
        heads = self.model.roi_heads
        pooled = heads.box_roi_pool(levels, proposals, images.image_sizes)
        logits, regression = heads.box_predictor(heads.box_head(pooled))
        return proposals, logits, regression

    def candidates(self, levels: Levels, prepared: Prepared) -> Candidates:
        proposals, logits, regression = self._box_head(levels, prepared)
        boxes = self.model.roi_heads.box_coder.decode(regression, proposals)  # (sum N, L, 4)
        probabilities = torch.softmax(logits, dim=-1)
        counts = [len(p) for p in proposals]
        most = max(counts)
        padded_boxes = boxes.new_zeros(len(counts), most, *boxes.shape[1:])
        padded_probabilities = probabilities.new_zeros(len(counts), most, logits.shape[-1])
        valid = torch.zeros(len(counts), most, dtype=torch.bool, device=boxes.device)
        for row, (box, probability) in enumerate(
            zip(torch.split(boxes, counts), torch.split(probabilities, counts), strict=True)
        ):
            padded_boxes[row, : len(box)] = box
            padded_probabilities[row, : len(box)] = probability
            valid[row, : len(box)] = True
        boxes = self._to_image(padded_boxes, prepared)
        return Candidates(boxes, padded_probabilities, background=True, valid=valid)

    def detections(self, levels: Levels, prepared: Prepared) -> list[dict[str, Tensor]]:
        count = next(iter(levels.values())).shape[0]
        images = prepared.repeated(count)
        proposals, _ = self.model.rpn(images, levels)
        detections, _ = self.model.roi_heads(levels, proposals, images.image_sizes)
        return self._postprocess(detections, prepared)


class DenseHeads(Detector):
    """One-stage detectors: a head over every anchor of every level (RetinaNet, FCOS, SSD)."""

    softmax: ClassVar[bool] = False  # a softmax over classes and background, or sigmoids

    def _head(self, levels: Levels, prepared: Prepared) -> tuple[dict[str, Tensor], Tensor]:
        """The head's outputs (n, A, ...) and the anchors (A, 4), the same for every copy."""
        features = list(levels.values())
        outputs = self.model.head(features)
        one = [level[:1] for level in features]
        anchors = self.model.anchor_generator(prepared.repeated(1), one)[0]
        return outputs, anchors

    @abstractmethod
    def _class_scores(self, outputs: dict[str, Tensor]) -> Tensor:
        """(n, A, L) P_j from the head's outputs."""

    def _decode(self, regression: Tensor, anchors: Tensor) -> Tensor:
        flat = regression.reshape(-1, 4)
        repeated = anchors.repeat(regression.shape[0], 1)
        boxes: Tensor = self.model.box_coder.decode_single(flat, repeated)
        return boxes.view(regression.shape)

    def candidates(self, levels: Levels, prepared: Prepared) -> Candidates:
        outputs, anchors = self._head(levels, prepared)
        boxes = self._to_image(self._decode(outputs["bbox_regression"], anchors), prepared)
        return Candidates(boxes, self._class_scores(outputs), background=self.softmax)

    def detections(self, levels: Levels, prepared: Prepared) -> list[dict[str, Tensor]]:
        outputs, anchors = self._head(levels, prepared)
        count = outputs["cls_logits"].shape[0]
        sizes = [prepared.resized_size] * count
        per_level = [level.shape[-2] * level.shape[-1] for level in levels.values()]
        head: dict[str, Any] = dict(outputs)
        anchor_list: list[Any] = [anchors] * count
        if not isinstance(self.model, SSD):  # RetinaNet and FCOS read their outputs per level
            split = [n * (anchors.shape[0] // sum(per_level)) for n in per_level]
            head = {key: list(torch.split(value, split, dim=1)) for key, value in head.items()}
            anchor_list = [list(torch.split(anchors, split))] * count
        detections = self.model.postprocess_detections(head, anchor_list, sizes)
        return self._postprocess(detections, prepared)


class RetinaNetDetector(DenseHeads):
    def _class_scores(self, outputs: dict[str, Tensor]) -> Tensor:
        return torch.sigmoid(outputs["cls_logits"])


class FCOSDetector(DenseHeads):
    def _class_scores(self, outputs: dict[str, Tensor]) -> Tensor:
        return torch.sqrt(
            torch.sigmoid(outputs["cls_logits"]) * torch.sigmoid(outputs["bbox_ctrness"])
        )

    def _decode(self, regression: Tensor, anchors: Tensor) -> Tensor:
        expanded = anchors.expand(regression.shape[0], -1, -1)
        boxes: Tensor = self.model.box_coder.decode(regression, expanded)
        return boxes


class SSDDetector(DenseHeads):
    softmax: ClassVar[bool] = True

    def _class_scores(self, outputs: dict[str, Tensor]) -> Tensor:
        return torch.softmax(outputs["cls_logits"], dim=-1)


_FAMILIES: tuple[tuple[type[nn.Module], type[Detector]], ...] = (
    (GeneralizedRCNN, TwoStage),
    (RetinaNet, RetinaNetDetector),
    (FCOS, FCOSDetector),
    (SSD, SSDDetector),
)


def as_detector(model: object) -> Detector:
    """The Detector reading `model`, or a ModelError naming the detectors supported."""
    for family, reader in _FAMILIES:
        if isinstance(model, family):
            return reader(model)
    raise ModelError(
        f"{type(model).__name__} is not a torchvision detector; detection explainers take"
        " Faster R-CNN, Mask R-CNN, RetinaNet, FCOS or SSD models from"
        " torchvision.models.detection (explain a classifier with the methods of reciprocam)"
    )
