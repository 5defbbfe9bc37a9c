"""Train the Moving Shapes clip CNN and the Shapes volume CNN and write their checkpoints.

    python benchmarks/train_shapes_3d.py [--kinds video,volume] [--seed 0] [--required 0.95]

As in train_shapes_models.py, every training sample is new (generated on demand) and the test
split is a disjoint stream. The clip model starts from the trained 2-D ShapesCNN inflated over
time. A model is kept only if it reaches --required test accuracy. Prints the accuracy and the
time taken; writes src/reciprocam/synthetic/checkpoints/shapes_<kind>.pt and the figures to
benchmarks/results/shapes_3d_models.json.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from common import accuracy, save_checkpoint, train_classifier, write_results
from torch import nn
from torch.utils.data import DataLoader, Dataset

from reciprocam.synthetic.models import shapes_model
from reciprocam.synthetic.video import ShapesVideo
from reciprocam.synthetic.video_models import ShapesVideoCNN, ShapesVolumeCNN, inflate
from reciprocam.synthetic.volume import ShapesVolume

Recipe = tuple[Callable[[], nn.Module], type[Dataset[tuple[torch.Tensor, int]]], int, int, float]
# Per kind: (the initial model, its data, training samples, batch, learning rate).
RECIPES: dict[str, Recipe] = {
    "video": (
        lambda: inflate(ShapesVideoCNN(), shapes_model("cnn")),
        ShapesVideo,
        10_000,
        16,
        2e-3,
    ),
    "volume": (ShapesVolumeCNN, ShapesVolume, 20_000, 32, 3e-3),
}


def train(kind: str, seed: int, test_count: int) -> tuple[dict[str, float], nn.Module]:
    torch.manual_seed(seed)
    build, data, count, batch, rate = RECIPES[kind]
    model = build()
    seconds = train_classifier(
        model, data("train", count, seed), batch=batch, rate=rate, decay=1e-4
    )
    score = accuracy(model, DataLoader(data("test", test_count, seed), batch_size=64))
    print(f"{kind}: test accuracy {score:.2%} after {seconds:.0f} s of training")
    parameters = sum(p.numel() for p in model.parameters())
    result = {
        "test_accuracy": score,
        "training_seconds": seconds,
        "training_samples": count,
        "parameters": parameters,
    }
    return result, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kinds", default="video,volume")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-samples", type=int, default=1000)
    parser.add_argument("--required", type=float, default=0.95)
    arguments = parser.parse_args()
    figures: dict[str, dict[str, float]] = {}
    for kind in arguments.kinds.split(","):
        result, model = train(kind, arguments.seed, arguments.test_samples)
        figures[kind] = result
        if result["test_accuracy"] < arguments.required:
            raise SystemExit(f"{kind} reached only {result['test_accuracy']:.2%}; not saved")
        result["checkpoint_bytes"] = save_checkpoint(model, f"shapes_{kind}.pt")
    write_results("shapes_3d_models", {"models": figures})


if __name__ == "__main__":
    main()
