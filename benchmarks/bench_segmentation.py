"""Where do the maps of a segmenter's class regions point? Shapes segmentation, truth known.

    python benchmarks/bench_segmentation.py [--images 100]

Each test image of Shapes segmentation (reciprocam.synthetic.segmentation) holds 2 to 4 shapes
of the four classes, so every class's pixels are known. For each image and each class present
in it, every method explains the trained ShapesSegmenter's region of that class,
`Region(class, region=R)`, R the pixels the model predicts for the class (its ground-truth
mask where the model predicts none), and each map is scored against the class's ground-truth
mask:

    PG      pointing game: the map's maximum lies inside the class's mask
    energy  the share of the map's sum inside the class's mask
    IoU     the IoU of {map >= t} with the mask at the map's best threshold t (of THRESHOLDS);
            "IoU@t" uses one threshold for all maps, the best on average
    off     off-target energy: the share of the map's sum on the other classes' shapes
            (averaged over the image-classes whose image shows another class)

Methods: ReciproCAM, Grad-CAM, Score-CAM, RISE (1000 masks instead of its default 4000, for
speed), Eigen-CAM (class-agnostic: one map whatever the class) and a centre baseline (a fixed
Gaussian at the image centre, sigma a quarter of the side). Each method's time per
image-class is given as a ratio to one plain inference of the segmenter on one image, timed
side by side in the same loop (medians). If ReciproCAM does not point better than the centre
baseline the benchmark is broken and the script exits with 1. Results:
benchmarks/results/segmentation.json.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
from common import centre_map, machine, write_results
from torch import Tensor, nn

from reciprocam import ReciproCAMError
from reciprocam.explainer import Explainer
from reciprocam.registry import explainer as build_explainer
from reciprocam.synthetic.segmentation import LABELS, SIZE, SegmentationImage, ShapesSegmentation
from reciprocam.synthetic.segmenter import shapes_segmenter
from reciprocam.synthetic.shapes import to_tensor
from reciprocam.targets import Region

T = TypeVar("T")
THRESHOLDS = torch.linspace(0.05, 0.95, 19)
METHODS: dict[str, dict[str, object]] = {
    "reciprocam": {},
    "gradcam": {},
    "scorecam": {},
    "rise": {"masks": 1000},
    "eigencam": {},
}
CENTRE = "centre"
INFERENCES = 3  # plain inferences timed per image-class, beside the methods
MARGIN = 0.1  # how far above the centre baseline ReciproCAM's pointing game must be


@dataclass(frozen=True)
class MapScore:
    """One map's scores against a class's mask (and the other classes' shapes)."""

    pointing: float  # 1.0 if the map's maximum is inside the mask
    energy: float  # the share of the map's sum inside the mask
    ious: list[float]  # IoU of {map >= t} with the mask, for each t of THRESHOLDS
    off_target: float | None  # the share on the other classes' shapes (None: there are none)
    empty: bool  # an all-zero map, which points nowhere


def score_map(saliency: Tensor, truth: Tensor, others: Tensor) -> MapScore:
    """The scores of one (H, W) map in [0, 1] against a class's (H, W) bool mask."""
    total = float(saliency.sum())
    has_others = bool(others.any())
    if total <= 0:
        return MapScore(0.0, 0.0, [0.0] * len(THRESHOLDS), 0.0 if has_others else None, True)
    above = saliency[None] >= THRESHOLDS[:, None, None]
    union = (above | truth).flatten(1).sum(1)
    ious = (above & truth).flatten(1).sum(1) / union.clamp_min(1)
    return MapScore(
        pointing=float(truth.flatten()[saliency.flatten().argmax()]),
        energy=float(saliency[truth].sum()) / total,
        ious=ious.tolist(),
        off_target=float(saliency[others].sum()) / total if has_others else None,
        empty=False,
    )


def summarise(scores: list[MapScore], seconds: list[float], inference: float) -> dict[str, float]:
    """A method's mean scores over its image-classes, and its median time per image-class."""
    curves = torch.tensor([s.ious for s in scores])
    curve = curves.mean(0)
    best = int(curve.argmax())
    off = [s.off_target for s in scores if s.off_target is not None]
    median = statistics.median(seconds) if seconds else math.nan
    return {
        "pointing_game": statistics.mean(s.pointing for s in scores),
        "energy_inside": statistics.mean(s.energy for s in scores),
        "iou_best_threshold": float(curves.max(1).values.mean()),
        "iou_one_threshold": float(curve[best]),
        "one_threshold": float(THRESHOLDS[best]),
        "off_target_energy": statistics.mean(off) if off else math.nan,
        "off_target_cases": len(off),
        "empty_maps": sum(s.empty for s in scores),
        "cases": len(scores),
        "seconds_median": median,
        "ratio_to_inference": median / inference,
    }


def timed(function: Callable[..., T], *arguments: object) -> tuple[T, float]:
    """function(*arguments) and the seconds it took."""
    began = time.perf_counter()
    result = function(*arguments)
    return result, time.perf_counter() - began


class Run:
    """The benchmark's loop: every method on every image-class, timed beside inference."""

    def __init__(self, model: nn.Module, explainers: dict[str, Explainer]) -> None:
        self.model = model
        self.explainers = explainers
        self.unsupported: dict[str, str] = {}
        self.names = [*explainers, CENTRE]
        self.scores: dict[str, list[MapScore]] = {name: [] for name in self.names}
        self.classes: dict[str, list[str]] = {name: [] for name in self.names}
        self.seconds: dict[str, list[float]] = {name: [] for name in ["inference", *explainers]}
        self.layers: dict[str, str] = {}
        self.from_truth = 0
        self.centre = centre_map((SIZE, SIZE))

    def infer(self, x: Tensor) -> Tensor:
        with torch.inference_mode():
            out: Tensor = self.model(x)["out"]
        return out

    def image(self, sample: SegmentationImage) -> None:
        """Explain and score every class shown in one image."""
        x = to_tensor(sample.image)[None]
        predicted = self.infer(x).argmax(1)[0]
        masks = torch.from_numpy(sample.class_masks)
        shapes = torch.from_numpy(sample.mask > 0)
        for kind in sample.classes:
            label = 1 + kind
            truth = masks[kind]
            region = predicted == label
            if not bool(region.any()):
                region = truth
                self.from_truth += 1
            target = Region(label, region=region)
            others = shapes & ~truth
            for _ in range(INFERENCES):
                self.seconds["inference"].append(timed(self.infer, x)[1])
            for name, explainer in list(self.explainers.items()):
                try:
                    explanation, spent = timed(explainer.explain, x, target)
                except ReciproCAMError as error:
                    self.unsupported[name] = str(error)
                    del self.explainers[name]
                    continue
                if explainer.target_layer is not None:
                    self.layers[name] = str(explainer.target_layer)
                self.seconds[name].append(spent)
                self.record(name, LABELS[label], score_map(explanation.maps[0], truth, others))
            self.record(CENTRE, LABELS[label], score_map(self.centre, truth, others))

    def record(self, name: str, label: str, score: MapScore) -> None:
        self.scores[name].append(score)
        self.classes[name].append(label)

    def results(self) -> dict[str, dict[str, float | None]]:
        """Each method's summary (the centre baseline runs no model: no time)."""
        inference = statistics.median(self.seconds["inference"])
        results: dict[str, dict[str, float | None]] = {}
        for name in self.names:
            if self.scores[name]:
                seconds = self.seconds.get(name, [])
                results[name] = {**summarise(self.scores[name], seconds, inference)}
        results[CENTRE]["seconds_median"] = results[CENTRE]["ratio_to_inference"] = None
        return results

    def pointing_by_class(self) -> dict[str, dict[str, float]]:
        """Each method's pointing game over the image-classes of each class."""
        table: dict[str, dict[str, float]] = {}
        for name in self.names:
            hits: dict[str, list[float]] = {}
            for label, score in zip(self.classes[name], self.scores[name], strict=True):
                hits.setdefault(label, []).append(score.pointing)
            table[name] = {label: statistics.mean(v) for label, v in sorted(hits.items())}
        return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1, help="the test stream (training: 0)")
    arguments = parser.parse_args()
    data = ShapesSegmentation("test", arguments.images, seed=arguments.seed)
    model = shapes_segmenter()
    run = Run(model, {name: build_explainer(name, model, **o) for name, o in METHODS.items()})
    began = time.perf_counter()
    for index in range(len(data)):
        run.image(data.sample(index))
        if index % 10 == 9:
            print(
                f"{index + 1}/{len(data)} images, {time.perf_counter() - began:.0f} s", flush=True
            )
    elapsed = time.perf_counter() - began
    results = run.results()
    inference = statistics.median(run.seconds["inference"])
    cases = len(run.scores[CENTRE])
    print_table(results, arguments.images, cases, inference)
    pointing = {name: values["pointing_game"] or 0.0 for name, values in results.items()}
    broken = pointing.get("reciprocam", 0.0) <= pointing[CENTRE] + MARGIN
    sanity = (
        "ReciproCAM's pointing game is not clearly above the centre baseline's"
        if broken
        else "ReciproCAM points better than the centre baseline"
    )
    payload: dict[str, object] = {
        "model": "ShapesSegmenter",
        "images": arguments.images,
        "seed": arguments.seed,
        "image_classes": cases,
        "regions_from_truth": run.from_truth,
        "thresholds": THRESHOLDS.tolist(),
        "options": METHODS,
        "inferences_timed_per_image_class": INFERENCES,
        "target_layers": run.layers,
        "inference_seconds_median": inference,
        "total_seconds": elapsed,
        "methods": results,
        "pointing_game_by_class": run.pointing_by_class(),
        "unsupported": run.unsupported,
        "sanity": sanity,
    }
    print(f"{run.from_truth} of {cases} regions are the ground truth (the model predicts none)")
    for name, error in run.unsupported.items():
        print(f"{name}: not supported here ({error})")
    print(f"total {elapsed:.0f} s; wrote {write_results('segmentation', payload)}")
    if broken:
        print(f"SANITY: {sanity}", file=sys.stderr)
    return 1 if broken else 0


def print_table(
    results: dict[str, dict[str, float | None]], images: int, cases: int, inference: float
) -> None:
    info = machine()
    print(
        f"\nShapesSegmenter, {images} test images, {cases} image-classes; {info['cpu']},"
        f" {info['cores']} cores, {info['torch_threads']} threads, torch {info['torch']};"
        f" one inference {1000 * inference:.2f} ms"
    )
    print("| method | PG | energy in | IoU (best t per map) | IoU (one t) | off-target | time |")
    print("|---|---|---|---|---|---|---|")
    for name, values in results.items():
        cell = {key: math.nan if value is None else value for key, value in values.items()}
        ratio = values["ratio_to_inference"]
        spent = "-" if ratio is None else f"{ratio:.0f}x"
        print(
            f"| {name} | {100 * cell['pointing_game']:.1f} | {100 * cell['energy_inside']:.1f}"
            f" | {100 * cell['iou_best_threshold']:.1f}"
            f" | {100 * cell['iou_one_threshold']:.1f} (t = {cell['one_threshold']:.2f})"
            f" | {100 * cell['off_target_energy']:.1f} | {spent} |"
        )


if __name__ == "__main__":
    sys.exit(main())
