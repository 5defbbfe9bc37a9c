"""Box targets: what a detection map explains, and how a masked copy scores it.

A target is a box b_t with its label c_t and a class vector P_t: a detection of the unmasked
image (its candidate's P_j, see `reciprocam.detection.detectors`) or a box the user gives
(P_t one-hot at c_t, XAITK's rule for boxes without a class vector). A copy's score for the
target is D-RISE's similarity (Petsiuk et al., CVPR 2021), the best match over the copy's
candidates j:

    s_t = max_j IoU(b_t, B_j[c_t]) * cos(P_t, P_j) * O_j

with B_j[c_t] the candidate's box for label c_t (its only box for one-stage detectors).
`iou_plus_score` is pytorch-grad-cam's `FasterRCNNBoxScoreTarget` for one box: the final
detection with the largest IoU, IoU + its score if IoU > 0.5 and its label is the target's,
else 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import NoDetectionError, TargetError
from .detectors import Candidates

BoxSpec = Tensor | list[tuple[int, tuple[float, float, float, float]]] | None
"""Boxes to explain: None (the detections above the threshold), a (T, 6) or (T, 5) tensor of
x1, y1, x2, y2, label[, unused], or a list of (label, (x1, y1, x2, y2))."""


def pairwise_iou(first: Tensor, second: Tensor) -> Tensor:
    """Element-wise IoU of broadcastable (..., 4) x1 y1 x2 y2 boxes; 0 for empty unions."""
    top_left = torch.maximum(first[..., :2], second[..., :2])
    bottom_right = torch.minimum(first[..., 2:], second[..., 2:])
    overlap = (bottom_right - top_left).clamp_min(0).prod(dim=-1)

    def area(boxes: Tensor) -> Tensor:
        return (boxes[..., 2:] - boxes[..., :2]).clamp_min(0).prod(dim=-1)

    union = area(first) + area(second) - overlap
    return overlap / union.clamp_min(torch.finfo(union.dtype).tiny)


@dataclass(frozen=True)
class BoxTargets:
    """T target boxes of one image: (T, 4) boxes, (T,) labels, (T, L) class vectors, and the
    detections' (T,) scores (NaN for given boxes)."""

    boxes: Tensor
    labels: Tensor
    vectors: Tensor
    scores: Tensor

    @property
    def count(self) -> int:
        return int(self.labels.numel())

    def to(self, device: torch.device) -> BoxTargets:
        """The same targets on `device`."""
        return BoxTargets(*(tensor.to(device) for tensor in vars(self).values()))

    def similarity(self, candidates: Candidates) -> Tensor:
        """(n, T) s_t of each of n copies: max_j IoU * cos(P_t, P_j) * O_j."""
        boxes = candidates.boxes_of(self.labels)  # (n, N, T, 4)
        iou = pairwise_iou(boxes, self.boxes.to(boxes))
        vectors = F.normalize(self.vectors.to(candidates.probabilities), dim=-1)
        cosine = F.normalize(candidates.probabilities, dim=-1) @ vectors.T  # (n, N, T)
        weighted = iou * cosine * candidates.confidence[..., None]
        return weighted.amax(dim=1)

    def iou_plus_score(self, detections: list[dict[str, Tensor]]) -> Tensor:
        """(n, T) pytorch-grad-cam's box score of each target in n copies' final detections:
        IoU + score of the detection overlapping the box most, if IoU > 0.5 and its label is
        the target's, else 0."""
        rows = []
        for found in detections:
            if found["boxes"].shape[0] == 0:
                rows.append(found["boxes"].new_zeros(self.count))
                continue
            iou = pairwise_iou(found["boxes"][:, None], self.boxes[None].to(found["boxes"]))
            best, index = iou.max(dim=0)  # (T,) over every detection, as pytorch-grad-cam
            same = found["labels"][index] == self.labels.to(index.device)
            score = best + found["scores"][index]
            rows.append(torch.where(same & (best > 0.5), score, torch.zeros_like(score)))
        return torch.stack(rows)


def detected_targets(
    detections: dict[str, Tensor], candidates: Candidates, threshold: float
) -> BoxTargets:
    """The detections scoring at least `threshold`, each with the class vector of the candidate
    it came from: the candidate whose box for its label overlaps it most (IoU 1 up to rounding).
    """
    # An empty box (a detection clipped to nothing) has no IoU with anything: it is left out.
    area = (detections["boxes"][:, 2:] - detections["boxes"][:, :2]).prod(dim=1)
    keep = (detections["scores"] >= threshold) & (area > 0)
    boxes, labels = detections["boxes"][keep], detections["labels"][keep]
    if labels.numel() == 0:
        best = float(detections["scores"].max()) if detections["scores"].numel() else None
        found = "no detection" if best is None else f"the best scores {best:.3f}"
        raise NoDetectionError(
            f"no detection scores >= {threshold} on this image ({found})",
            "lower threshold= (--threshold) or give the boxes to explain (boxes=, --boxes)",
        )
    source = candidates.boxes_of(labels)[0]  # (N, T, 4)
    iou = pairwise_iou(source, boxes.to(source))
    if candidates.valid is not None:
        iou = iou * candidates.valid[0, :, None]
    vectors = candidates.probabilities[0, iou.argmax(dim=0)]
    return BoxTargets(boxes, labels, vectors, detections["scores"][keep])


def given_targets(
    boxes: BoxSpec, size: tuple[int, int], labels: int, first_label: int = 1
) -> BoxTargets:
    """Boxes the user gives, checked against the image `size` (H, W) and the model's labels
    (`first_label` to `labels` - 1)."""
    if isinstance(boxes, Tensor):
        if boxes.ndim != 2 or boxes.shape[1] not in (5, 6):
            raise TargetError(
                f"boxes must be (T, 5) or (T, 6): x1, y1, x2, y2, label, not {tuple(boxes.shape)}"
            )
        corners, label_list = boxes[:, :4].float(), boxes[:, 4].round().long()
    else:
        assert boxes is not None
        try:
            label_list = torch.tensor([int(label) for label, _ in boxes], dtype=torch.long)
            corners = torch.tensor([list(map(float, box)) for _, box in boxes]).view(-1, 4)
        except (TypeError, ValueError) as error:
            raise TargetError(
                "boxes must be a list of (label, (x1, y1, x2, y2)) pairs of numbers"
            ) from error
    if label_list.numel() == 0:
        raise TargetError("boxes is empty: give at least one (label, (x1, y1, x2, y2))")
    height, width = size
    for label, (x1, y1, x2, y2) in zip(label_list.tolist(), corners.tolist(), strict=True):
        box = f"({x1:g}, {y1:g}, {x2:g}, {y2:g})"
        if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
            raise TargetError(
                f"box {box} is not inside the {width}x{height} image with x1 < x2 and y1 < y2:"
                " give x1, y1, x2, y2 in the image's pixels"
            )
        if not first_label <= label < labels:
            background = " (0 is the background)" if first_label else ""
            raise TargetError(
                f"box {box} has label {label}, which the model does not have: its labels are"
                f" {first_label} to {labels - 1}{background}"
            )
    vectors = F.one_hot(label_list, labels).float()
    scores = torch.full((label_list.numel(),), float("nan"))
    return BoxTargets(corners, label_list, vectors, scores)
