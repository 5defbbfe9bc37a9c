"""Where do the maps of a detector's boxes point? Shapes detection, every box and mask known.

    python benchmarks/bench_detection.py [--boxes 200] [--drise-masks 5000]

Test images of Shapes detection (reciprocam.synthetic.detection) are taken in order until at
least --boxes of their ground-truth boxes are found by the shipped detector (an FCOS,
reciprocam.synthetic.detector): a detection scoring >= 0.5 with the box's label and IoU > 0.5
to it. Every method explains each image's detections (one call per image, all boxes at
once), and each found box's map is scored against its ground truth:

    PG box / PG mask      pointing game: the map's maximum lies in the box / the shape's pixels
    EPG box / EPG mask    energy-based pointing game: the share of the map's sum inside them
    Del / Ins             detection deletion / insertion AUC (reciprocam.detection.metrics,
                          `--steps` steps): the best same-label detection's score with
                          IoU > 0.5 to the box as the map's top pixels are removed / inserted

Methods: ReciproCAM (the automatic reference level, and the Gaussian mask), D-RISE at
--drise-masks masks (the paper's 5000 by default, 16 x 16 cells), Grad-CAM, ODAM, Eigen-CAM,
Ablation-CAM, and a centre baseline (a Gaussian at the image centre). Time is per image (all
its boxes), as a ratio to one detection inference of the image, timed beside the methods in
the same loop (medians). If ReciproCAM does not point better than the centre baseline the
benchmark is broken and the script exits with 1. Results: benchmarks/results/detection.json.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import torch
from common import centre_map, machine, write_results
from torch import Tensor

from reciprocam.detection import (
    DRISE,
    ODAM,
    DetAblationCAM,
    DetectionExplainer,
    DetEigenCAM,
    DetGradCAM,
    DetReciproCAM,
)
from reciprocam.detection.boxes import pairwise_iou
from reciprocam.detection.metrics import (
    box_regions,
    detection_auc,
    detection_curve,
    energy_pointing_game,
    pointing_game,
)
from reciprocam.synthetic.detection import DETECTION_SIZE, ShapesDetection
from reciprocam.synthetic.detector import shapes_detector

CENTRE = "centre"
METRICS = ("pg_box", "pg_mask", "epg_box", "epg_mask", "deletion", "insertion")
INFERENCES = 3  # plain inferences timed per image, beside the methods
MARGIN = 0.1  # how far above the centre baseline ReciproCAM's box pointing game must be


def matches(explained: Tensor, labels: Tensor, truth: dict[str, Tensor]) -> list[int | None]:
    """For each ground-truth box, the explained detection found for it (same label, IoU > 0.5,
    the best IoU), or None."""
    found: list[int | None] = []
    for box, label in zip(truth["boxes"], truth["labels"], strict=True):
        iou = pairwise_iou(explained, box[None]) * (labels == label)
        found.append(int(iou.argmax()) if iou.numel() and float(iou.max()) > 0.5 else None)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--boxes", type=int, default=200)
    parser.add_argument("--drise-masks", type=int, default=5000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1, help="the test stream (training: 0)")
    arguments = parser.parse_args()
    model = shapes_detector()
    methods: dict[str, DetectionExplainer] = {
        "reciprocam": DetReciproCAM(model),
        "reciprocam (gaussian)": DetReciproCAM(model, mask="gaussian"),
        f"drise ({arguments.drise_masks} masks)": DRISE(
            model, masks=arguments.drise_masks, batch_size=32
        ),
        "gradcam": DetGradCAM(model),
        "odam": ODAM(model),
        "eigencam": DetEigenCAM(model),
        "ablationcam": DetAblationCAM(model),
    }
    names = [*methods, CENTRE]
    scores: dict[str, dict[str, list[float]]] = {n: {m: [] for m in METRICS} for n in names}
    seconds: dict[str, list[float]] = {name: [] for name in [*methods, "inference"]}
    data = ShapesDetection("test", 10_000, seed=arguments.seed)
    boxes = missed = images = 0
    levels: set[str] = set()
    warm = data[0][0]
    for explainer in methods.values():  # first calls pay for allocations, not the method
        explainer.explain(warm)
    began = time.perf_counter()
    while boxes < arguments.boxes:
        image, truth = data[images]
        images += 1
        with torch.inference_mode():
            for _ in range(INFERENCES):
                start = time.perf_counter()
                model([image])
                seconds["inference"].append(time.perf_counter() - start)
        maps: dict[str, Tensor] = {}
        for name, explainer in methods.items():
            start = time.perf_counter()
            explanation = explainer.explain(image)
            seconds[name].append(time.perf_counter() - start)
            maps[name] = explanation.maps
            levels.add(explanation.reference_level or "-")
        # Every method explains the same detections (the threshold is theirs alike).
        found = matches(explanation.boxes, explanation.labels, truth)
        maps[CENTRE] = centre_map((DETECTION_SIZE, DETECTION_SIZE)).expand(
            len(explanation.boxes), -1, -1
        )
        kept = [(truth_index, row) for truth_index, row in enumerate(found) if row is not None]
        missed += len(found) - len(kept)
        if not kept:
            continue
        rows = torch.tensor([row for _, row in kept])
        truths = torch.tensor([truth_index for truth_index, _ in kept])
        in_box = box_regions(truth["boxes"][truths], (DETECTION_SIZE, DETECTION_SIZE))
        in_mask = truth["masks"][truths].bool()
        for name, saliency in maps.items():
            chosen = saliency[rows]
            values = {
                "pg_box": pointing_game(chosen, in_box),
                "pg_mask": pointing_game(chosen, in_mask),
                "epg_box": energy_pointing_game(chosen, in_box),
                "epg_mask": energy_pointing_game(chosen, in_mask),
            }
            for key, value in values.items():
                scores[name][key].extend(value.tolist())
            for one, truth_index in zip(chosen, truths.tolist(), strict=True):
                box, label = truth["boxes"][truth_index], int(truth["labels"][truth_index])
                for mode in ("deletion", "insertion"):
                    curve = detection_curve(
                        model, image, one, box, label, mode=mode, steps=arguments.steps
                    )
                    scores[name][mode].append(detection_auc(curve))
        boxes += len(kept)
        if images % 10 == 0:
            print(
                f"{images} images, {boxes} boxes, {time.perf_counter() - began:.0f} s", flush=True
            )
    inference = statistics.median(seconds["inference"])
    results: dict[str, dict[str, float | None]] = {}
    for name in names:
        row: dict[str, float | None] = {k: statistics.mean(v) for k, v in scores[name].items()}
        spent = statistics.median(seconds[name]) if name in seconds else None
        row["seconds_per_image"] = spent
        row["ratio_to_inference"] = None if spent is None else spent / inference
        results[name] = row
    print_table(results, images, boxes, inference)
    broken = (results["reciprocam"]["pg_box"] or 0.0) <= (results[CENTRE]["pg_box"] or 0.0) + MARGIN
    drise = next(name for name in names if name.startswith("drise"))
    payload: dict[str, object] = {
        "model": "Shapes detector (FCOS, reciprocam.synthetic.detector)",
        "command": " ".join(["python benchmarks/bench_detection.py", *sys.argv[1:]]),
        "machine": machine(),
        "images": images,
        "boxes": boxes,
        "ground_truth_boxes_not_found": missed,
        "seed": arguments.seed,
        "steps": arguments.steps,
        "reference_levels": sorted(levels),
        "inference_seconds_median": inference,
        "total_seconds": time.perf_counter() - began,
        "methods": results,
        "reciprocam_time_over_drise": (results["reciprocam"]["seconds_per_image"] or 0)
        / (results[drise]["seconds_per_image"] or math.nan),
        "sanity": "ReciproCAM points better than the centre baseline"
        if not broken
        else "ReciproCAM's box pointing game is not clearly above the centre baseline's",
    }
    print(f"wrote {write_results('detection', payload)}")
    return 1 if broken else 0


def print_table(
    results: dict[str, dict[str, float | None]], images: int, boxes: int, inference: float
) -> None:
    info = machine()
    print(
        f"\nShapes detector (FCOS), {images} test images, {boxes} boxes; {info['cpu']},"
        f" {info['cores']} cores, torch {info['torch']}; one inference {1000 * inference:.1f} ms"
    )
    print("| method | PG box | PG mask | EPG box | EPG mask | Del | Ins | time / image |")
    print("|---|---|---|---|---|---|---|---|")
    for name, row in results.items():
        ratio = row["ratio_to_inference"]
        spent = "-" if ratio is None else f"{ratio:.0f}x"
        cells = " | ".join(f"{100 * (row[key] or 0.0):.1f}" for key in METRICS)
        print(f"| {name} | {cells} | {spent} |")


if __name__ == "__main__":
    sys.exit(main())
