"""Where do the maps point? Every method on the Shapes dataset, whose evidence is known.

    python benchmarks/bench_localisation.py [--images 100] [--models cnn,vit]

Each image's class is decided by one shape among distractors (reciprocam.synthetic.shapes),
so its mask is the ground truth. Every method explains the trained Shapes CNN and ViT's
top-1 prediction and is scored by the Pointing Game, the Energy-based Pointing Game and the
mask IoU at the method's best threshold, with the papers' metrics beside them (RISE with
500 masks instead of 4000, to keep the run to minutes; Deletion/Insertion 64 pixels a step on
these 64 x 64 images). A random map and a centre Gaussian are scored too: if ReciproCAM's or
the median method's localisation is not clearly above theirs, the benchmark is broken and the
script exits with 1 (methods below them are listed in the results). Results:
benchmarks/results/localisation.json.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import torch
from common import CentreGaussian, write_results
from torch import Tensor, nn

from reciprocam import ReciproCAMError
from reciprocam.explainer import Evidence, Explainer
from reciprocam.metrics import PAPER_METRICS, MetricOptions, MetricSuite, metric_info
from reciprocam.registry import explainer as build_explainer
from reciprocam.registry import method_for, methods
from reciprocam.synthetic.models import shapes_model
from reciprocam.synthetic.shapes import ShapesDataset, to_tensor
from reciprocam.targets import Target

THRESHOLDS = torch.linspace(0.05, 0.95, 19)
LOCALISATION = ("pointing_game", "energy_pointing_game", "mask_iou")
MARGIN = 0.1  # how far above the best baseline a real method's mean localisation must be
OPTIONS = {"rise": {"masks": 500}}


class RandomMap(Explainer):
    """A baseline: uniform noise on an 8 x 8 grid, new for every call."""

    def __init__(self, model: nn.Module, seed: int = 0) -> None:
        super().__init__(model)
        self.generator = torch.Generator().manual_seed(seed)

    def _explain(self, x: Tensor, target: Target) -> Evidence:
        with torch.inference_mode():
            logits = self.model(x)
        noise = torch.rand(x.shape[0], 8, 8, generator=self.generator).to(x)
        return Evidence(logits, target.bind(logits), noise)


def mask_iou(maps: Tensor, masks: Tensor) -> Tensor:
    """(B, T) IoU of {map >= threshold} with the mask, at each of THRESHOLDS."""
    above = maps[:, None] >= THRESHOLDS.to(maps)[None, :, None, None]
    objects = masks[:, None]
    union = (above | objects).flatten(2).sum(2)
    return (above & objects).flatten(2).sum(2) / union.clamp_min(1)


def evaluate(name: str, explainer: Explainer, data: ShapesDataset, batch: int) -> dict[str, float]:
    suite = MetricSuite("all", explainer=explainer, options=MetricOptions(batch_size=256))
    ious, seconds = [], 0.0
    for start in range(0, len(data), batch):
        samples = [data.sample(i) for i in range(start, min(start + batch, len(data)))]
        images = torch.stack([to_tensor(s.image) for s in samples])
        masks = torch.stack([torch.from_numpy(s.mask) for s in samples])
        began = time.perf_counter()
        explanation = explainer.explain(images)
        seconds += time.perf_counter() - began
        suite.update(images, explanation.maps, explanation.targets, masks)
        ious.append(mask_iou(explanation.maps, masks))
    summary = suite.compute()
    curve = torch.cat(ious).mean(0)
    best = int(curve.argmax())
    summary["mask_iou"] = float(curve[best])
    summary["mask_iou_threshold"] = float(THRESHOLDS[best])
    summary["seconds_per_image"] = seconds / len(data)
    print(f"  {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in summary.items()), flush=True)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--models", default="cnn,vit")
    parser.add_argument("--batch", type=int, default=50)
    arguments = parser.parse_args()
    data = ShapesDataset("test", arguments.images, seed=1)  # unseen in training (seed 0)
    results: dict[str, dict[str, object]] = {}
    broken = []
    for kind in arguments.models.split(","):
        model = shapes_model(kind)
        print(f"Shapes {kind}, {arguments.images} test images", flush=True)
        scores: dict[str, dict[str, float]] = {}
        unsupported: dict[str, str] = {}
        chosen = [m for m in methods() if m != "vit-reciprocam"]
        for method in chosen:
            try:
                options = OPTIONS.get(method, {})
                with build_explainer(method_for(method, model), model, **options) as explainer:
                    scores[method] = evaluate(method, explainer, data, arguments.batch)
            except ReciproCAMError as error:
                unsupported[method] = str(error)
                print(f"  {method}: not supported here ({error})")
        baselines = {"random": RandomMap(model), "centre": CentreGaussian(model)}
        for name, explainer in baselines.items():
            scores[name] = evaluate(name, explainer, data, arguments.batch)
        below: dict[str, list[str]] = {}
        for metric in LOCALISATION:
            ceiling = max(scores[name][metric] for name in baselines)
            real = {m: v[metric] for m, v in scores.items() if m not in baselines}
            below[metric] = [m for m, value in real.items() if value <= ceiling + MARGIN]
            for what, value in (
                ("reciprocam", real["reciprocam"]),
                ("the median method", statistics.median(real.values())),
            ):
                if value <= ceiling + MARGIN:
                    broken.append(f"{kind} {metric}: {what} {value:.3f}, baselines {ceiling:.3f}")
        results[kind] = {"scores": scores, "unsupported": unsupported, "not_above_baselines": below}
        print_table(kind, scores)
    payload = {"images": arguments.images, "thresholds": THRESHOLDS.tolist(), "models": results}
    payload["sanity"] = broken or "ReciproCAM and the median method localise above both baselines"
    print(f"wrote {write_results('localisation', payload)}")
    for line in broken:
        print(f"SANITY: {line}", file=sys.stderr)
    return 1 if broken else 0


def print_table(kind: str, scores: dict[str, dict[str, float]]) -> None:
    columns = [*LOCALISATION, *PAPER_METRICS]
    labels = ["PG", "EPG", "IoU", *(metric_info(c).label for c in columns[3:])]
    print(f"\n{kind}: | method | " + " | ".join(labels) + " | s/img |")
    for name, values in scores.items():
        cells = " | ".join(
            "n/a" if math.isnan(values[c]) else f"{100 * values[c]:.1f}" for c in columns
        )
        print(f"| {name} | {cells} | {values['seconds_per_image']:.4f} |")


if __name__ == "__main__":
    sys.exit(main())
