"""Where and when do the maps point? Clips and volumes whose evidence is known, and the cost.

    python benchmarks/bench_video.py [--clips 100] [--repeats 10]

Ground truth: the moving-shapes clips (reciprocam.synthetic.video: the deciding shape shows in
a few frames only, so its tube of pixels says where *and when* the evidence is) and the 3-D
Shapes volumes (reciprocam.synthetic.volume), explained on the shipped ShapesVideoCNN and
ShapesVolumeCNN's top-1 prediction by ReciproCAM, Grad-CAM, Score-CAM and a centre Gaussian.
Scores: the pointing game in space and time (the map's maximum lies in the tube), the energy
inside the tube (its share of the map's mass), and for clips the temporal pointing game (the
frame holding the most map mass shows the shape) and the map's mass in those frames. Each
method's time is a ratio to one inference of the same batch.

Cost: ReciproCAM and Grad-CAM on torchvision's r3d_18 (random weights) at 16 x 112 x 112,
batch 1, as ratios to one inference measured in the same run (goal: ReciproCAM <= 1.2x, its
global-average-pooling shortcut). If ReciproCAM does not localise clearly above the centre
baseline the benchmark is broken and exits with 1. Results: benchmarks/results/video.json.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torchvision
from common import CentreGaussian, machine, time_interleaved, write_results
from torch import Tensor, nn
from torch.utils.data import Dataset

from reciprocam.explainer import Explainer
from reciprocam.registry import explainer as build_explainer
from reciprocam.synthetic.video import ShapesVideo
from reciprocam.synthetic.video_models import shapes_video_model, shapes_volume_model
from reciprocam.synthetic.volume import ShapesVolume

METHODS = ("reciprocam", "gradcam", "scorecam")
MARGIN = 0.1  # how far above the centre baseline ReciproCAM's pointing game must be
R3D_CLIP = (1, 3, 16, 112, 112)


def localisation(maps: Tensor, tubes: Tensor) -> dict[str, Tensor]:
    """Per-clip scores of (B, T, H, W) maps against (B, T, H, W) bool tubes."""
    flat_maps, flat_tubes = maps.flatten(1), tubes.flatten(1)
    peaks = flat_maps.argmax(1, keepdim=True)
    mass = maps.clamp_min(0).flatten(1)
    return {
        "pointing_game": flat_tubes.gather(1, peaks).squeeze(1).float(),
        "energy_in_tube": (mass * flat_tubes).sum(1) / mass.sum(1).clamp_min(1e-12),
    }


def temporal(maps: Tensor, tubes: Tensor) -> dict[str, Tensor]:
    """Per-clip scores of when a clip's map points: the frame of most mass shows the shape;
    the mass in the frames that show it."""
    per_frame = maps.clamp_min(0).flatten(2).sum(2)  # (B, T)
    shown = tubes.flatten(2).any(2)  # (B, T)
    return {
        "temporal_pointing_game": shown.gather(1, per_frame.argmax(1, keepdim=True))
        .squeeze(1)
        .float(),
        "energy_in_window": (per_frame * shown).sum(1) / per_frame.sum(1).clamp_min(1e-12),
    }


def score(
    explainer: Explainer,
    model: nn.Module,
    data: Dataset[tuple[Tensor, int]],
    truth: list[Tensor],
    batch: int,
    timed: bool,
) -> dict[str, float]:
    """Mean scores of `explainer` over `data` (truth: each item's bool evidence mask) and its
    time as a ratio to one inference of the same batches."""
    values: dict[str, list[Tensor]] = {}
    explaining = inferring = 0.0
    explainer.explain(data[0][0][None])  # untimed: resolves the layer, warms the caches
    for start in range(0, len(truth), batch):
        indices = range(start, min(start + batch, len(truth)))
        inputs = torch.stack([data[i][0] for i in indices])
        tubes = torch.stack([truth[i] for i in indices])
        began = time.perf_counter()
        maps = explainer.explain(inputs).maps
        explaining += time.perf_counter() - began
        if timed:
            began = time.perf_counter()
            with torch.inference_mode():
                model(inputs)
            inferring += time.perf_counter() - began
        found = localisation(maps, tubes)
        if isinstance(data, ShapesVideo):
            found |= temporal(maps, tubes)
        for name, value in found.items():
            values.setdefault(name, []).append(value)
    summary = {name: float(torch.cat(parts).mean()) for name, parts in values.items()}
    if timed:
        summary["ratio_to_inference"] = explaining / inferring
    return summary


def ground_truth(clips: int, batch: int) -> tuple[dict[str, object], list[str]]:
    videos = ShapesVideo("test", clips, seed=1)  # unseen in training (seed 0)
    volumes = ShapesVolume("test", clips, seed=1)
    sets = {
        "shapes_video": (
            shapes_video_model(),
            videos,
            [torch.from_numpy(videos.sample(i).tube) for i in range(clips)],
        ),
        "shapes_volume": (
            shapes_volume_model(),
            volumes,
            [torch.from_numpy(volumes.sample(i).mask) for i in range(clips)],
        ),
    }
    results: dict[str, object] = {}
    broken = []
    for name, (model, data, truth) in sets.items():
        print(f"{name}, {clips} test items", flush=True)
        scores = {}
        for method in METHODS:
            with build_explainer(method, model) as explainer:
                scores[method] = score(explainer, model, data, truth, batch, timed=True)
        scores["centre"] = score(CentreGaussian(model), model, data, truth, batch, timed=False)
        for method, values in scores.items():
            print(f"  {method}: " + ", ".join(f"{k} {v:.3f}" for k, v in values.items()))
        ceiling = scores["centre"]["pointing_game"] + MARGIN
        if scores["reciprocam"]["pointing_game"] <= ceiling:
            broken.append(f"{name}: ReciproCAM's pointing game is not above the centre baseline")
        results[name] = {"input": list(data[0][0].shape), "scores": scores}
    return results, broken


def cost(repeats: int) -> dict[str, object]:
    """ReciproCAM and Grad-CAM on r3d_18 at 16 x 112 x 112, batch 1: ratios to one inference."""
    torch.manual_seed(0)
    model = torchvision.models.get_model("r3d_18", weights=None).eval()
    clip = torch.randn(R3D_CLIP)
    with (
        build_explainer("reciprocam", model) as reciprocam,
        build_explainer("gradcam", model) as gradcam,
    ):

        def inference() -> None:
            with torch.inference_mode():
                model(clip)

        seconds = time_interleaved(
            {
                "inference": inference,
                "reciprocam": lambda: reciprocam.explain(clip),
                "gradcam": lambda: gradcam.explain(clip),
            },
            repeats,
        )
    ratios = {name: value / seconds["inference"] for name, value in seconds.items()}
    print(
        f"r3d_18 {'x'.join(map(str, R3D_CLIP[2:]))}, batch 1: "
        + ", ".join(
            f"{name} {1000 * value:.0f} ms ({ratios[name]:.2f}x)" for name, value in seconds.items()
        )
    )
    return {"model": "r3d_18", "input": list(R3D_CLIP), "seconds": seconds, "ratios": ratios}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=10)
    arguments = parser.parse_args()
    info = machine()
    print(f"{info['cpu']}, {info['torch_threads']} threads, torch {info['torch']}")
    sets, broken = ground_truth(arguments.clips, arguments.batch)
    payload = {"clips": arguments.clips, "sets": sets, "r3d_18": cost(arguments.repeats)}
    payload["sanity"] = broken or "ReciproCAM points above the centre baseline on both sets"
    print(f"wrote {write_results('video', payload)}")
    for line in broken:
        print(f"SANITY: {line}", file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
