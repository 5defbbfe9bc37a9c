"""Train the Shapes detector (reciprocam.synthetic.detector) and write its checkpoint.

    python benchmarks/train_shapes_detector.py [--images 32000] [--seed 0]

torchvision's FCOS losses (focal classification, GIoU box regression, centre-ness) on Shapes
detection images (reciprocam.synthetic.detection); every training image is new (image i of the
train stream is made on demand), and the test split is a disjoint stream. The model is kept
only if its mAP@0.5 on the test split reaches --required (default 0.8). Prints the test mAP@0.5,
each class's AP, the recall and precision of the detections scoring >= 0.5 and the time taken;
writes src/reciprocam/synthetic/checkpoints/shapes_detector.pt and the figures to
benchmarks/results/shapes_detector.json.

Average precision is all-point interpolated (as VOC since 2010 and COCO's, without COCO's
101-point sampling): per class, every detection of all test images is ranked by score and
matched greedily to the unmatched ground-truth box of that class, in its image, that it
overlaps most, if their IoU is >= 0.5 (a true positive; else a false positive); AP is the area
under the precision-recall curve after each precision is raised to the best precision at any
higher recall.
"""

from __future__ import annotations

import argparse
import math
import shlex
import statistics
import sys
import time

import torch
from common import save_checkpoint, train_one_cycle, write_results
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchvision.ops import box_iou

from reciprocam.synthetic.detection import DETECTION_LABELS, ShapesDetection, collate
from reciprocam.synthetic.detector import CHECKPOINT, shapes_detector_model

IOU = 0.5  # the overlap that makes a detection a hit
STRICT = 0.75  # a stricter one, for how well the boxes fit
CONFIDENT = 0.5  # the score above which detections count for recall and precision

Target = dict[str, Tensor]


def detect(model: nn.Module, loader: DataLoader) -> tuple[list[Target], list[Target]]:
    """The model's detections and the ground truth of every image of `loader`."""
    model.eval()
    found: list[Target] = []
    truths: list[Target] = []
    with torch.inference_mode():
        for images, targets in loader:
            found += model(images)
            truths += targets
    return found, truths


def average_precision(
    found: list[Target], truths: list[Target], label: int, iou: float = IOU
) -> float:
    """All-point interpolated AP@iou of one label over all images (see the module's doc)."""
    ranked = []  # (score, image, box) of every detection of `label`
    for image, detections in enumerate(found):
        keep = detections["labels"] == label
        for score, box in zip(detections["scores"][keep], detections["boxes"][keep], strict=True):
            ranked.append((float(score), image, box))
    ranked.sort(key=lambda item: -item[0])
    boxes = [truth["boxes"][truth["labels"] == label] for truth in truths]
    taken = [torch.zeros(len(b), dtype=torch.bool) for b in boxes]
    total = sum(len(b) for b in boxes)
    if total == 0:
        return float("nan")
    hits = []
    for _, image, box in ranked:
        overlaps = box_iou(box[None], boxes[image])[0] if len(boxes[image]) else torch.zeros(0)
        overlaps[taken[image]] = -1  # each ground-truth box is found once at most
        best = int(overlaps.argmax()) if len(overlaps) else -1
        hit = best >= 0 and float(overlaps[best]) >= iou
        if hit:
            taken[image][best] = True
        hits.append(hit)
    true = torch.tensor(hits, dtype=torch.float64).cumsum(0)
    precision = true / torch.arange(1, len(hits) + 1, dtype=torch.float64)
    recall = true / total
    # The envelope: each precision raised to the best at this or any higher recall.
    envelope = precision.flip(0).cummax(0).values.flip(0)
    steps = torch.diff(recall, prepend=torch.zeros(1, dtype=torch.float64))
    return float((steps * envelope).sum())


def confident(found: list[Target], truths: list[Target]) -> tuple[float, float]:
    """(recall, precision) of the detections scoring >= CONFIDENT: the fraction of ground-truth
    boxes that one of them of the same label overlaps with IoU >= IOU, and the fraction of them
    that overlap a ground-truth box of their label so."""
    seen = total = right = kept = 0
    for detections, truth in zip(found, truths, strict=True):
        keep = detections["scores"] >= CONFIDENT
        boxes, labels = detections["boxes"][keep], detections["labels"][keep]
        same = labels[:, None] == truth["labels"][None]  # (detections, truths)
        hits = (box_iou(boxes, truth["boxes"]) >= IOU) & same
        seen += int(hits.any(0).sum())
        total += len(truth["labels"])
        right += int(hits.any(1).sum())
        kept += len(labels)
    return seen / max(total, 1), right / max(kept, 1)


def detection_loss(net: nn.Module, images: list[Tensor], targets: list[Target]) -> Tensor:
    """The sum of FCOS's three losses (the model, in train mode, computes them)."""
    losses: dict[str, Tensor] = net(images, targets)
    return torch.stack(list(losses.values())).sum()


def train(arguments: argparse.Namespace) -> tuple[dict[str, object], float, nn.Module]:
    torch.manual_seed(arguments.seed)
    model = shapes_detector_model()
    count, batch, rate = arguments.images, arguments.batch, arguments.rate
    loader = DataLoader(
        ShapesDetection("train", count, arguments.seed),
        batch_size=batch,
        shuffle=False,
        num_workers=1,
        collate_fn=collate,
    )
    cpu = time.process_time()
    seconds = train_one_cycle(
        model,
        loader,
        detection_loss,  # called with lists of images and of targets (`collate`)
        rate=rate,
        decay=arguments.decay,
        steps=math.ceil(count / batch),
        label="detector",
    )
    cpu = time.process_time() - cpu
    test = DataLoader(
        ShapesDetection("test", arguments.test_images, arguments.seed),
        batch_size=50,
        collate_fn=collate,
    )
    began = time.perf_counter()
    found, truths = detect(model, test)
    testing = time.perf_counter() - began
    ap = {
        name: average_precision(found, truths, label)
        for label, name in enumerate(DETECTION_LABELS)
        if label
    }
    mean_ap = statistics.mean(ap.values())
    strict = statistics.mean(
        average_precision(found, truths, label, STRICT) for label in range(1, len(DETECTION_LABELS))
    )
    recall, precision = confident(found, truths)
    listed = ", ".join(f"{name} {value:.3f}" for name, value in ap.items())
    print(
        f"test mAP@{IOU} {mean_ap:.3f} ({listed}); at score >= {CONFIDENT} recall {recall:.3f},"
        f" precision {precision:.3f}; mAP@{STRICT} {strict:.3f}; after {seconds:.0f} s of training"
    )
    parameters = sum(p.numel() for p in model.parameters())
    figures: dict[str, object] = {
        "map_50": mean_ap,
        "ap_50": ap,
        "recall_50_at_score_0_5": recall,
        "precision_50_at_score_0_5": precision,
        "map_75": strict,
        "ap_method": "all-point interpolated, greedy matching by score, IoU >= 0.5",
        "test_images": arguments.test_images,
        "test_boxes": sum(len(truth["labels"]) for truth in truths),
        "test_seconds": testing,
        "training_seconds": seconds,
        "training_cpu_seconds_main_process": cpu,
        "training_images": count,
        "batch": batch,
        "learning_rate": rate,
        "weight_decay": arguments.decay,
        "seed": arguments.seed,
        "parameters": parameters,
    }
    return figures, mean_ap, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=32_000, help="training images")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rate", type=float, default=2e-3, help="peak learning rate")
    parser.add_argument("--decay", type=float, default=1e-4, help="AdamW weight decay")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-images", type=int, default=500)
    parser.add_argument("--required", type=float, default=0.8, help="test mAP@0.5")
    arguments = parser.parse_args()
    figures, mean_ap, model = train(arguments)
    if mean_ap < arguments.required:
        raise SystemExit(f"mAP@{IOU} {mean_ap:.3f} is too low; not saved")
    size = save_checkpoint(model, CHECKPOINT)
    command = shlex.join(["python", "benchmarks/train_shapes_detector.py", *sys.argv[1:]])
    payload = {
        "model": "FCOS (reciprocam.synthetic.detector.shapes_detector_model)",
        "command": command,
        "checkpoint_bytes": size,
        **figures,
    }
    write_results("shapes_detector", payload)


if __name__ == "__main__":
    main()
