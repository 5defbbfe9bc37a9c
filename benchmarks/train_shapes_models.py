"""Train the Shapes CNN and ViT (reciprocam.synthetic) and write their checkpoints.

    python benchmarks/train_shapes_models.py [--kinds cnn,vit] [--seed 0]

Every training image is new (the generator makes image i of the train stream on demand), so
there is no over-fitting to fight; the test split is a disjoint stream. A model is kept only if
it reaches --required test accuracy (default 95 %). Prints the accuracy and the time taken;
writes src/reciprocam/synthetic/checkpoints/shapes_<kind>.pt and the figures to
benchmarks/results/shapes_models.json.
"""

from __future__ import annotations

import argparse

import torch
from common import accuracy, save_checkpoint, train_classifier, write_results
from torch import nn
from torch.utils.data import DataLoader

from reciprocam.synthetic.models import build_shapes_model, checkpoint_name
from reciprocam.synthetic.shapes import ShapesDataset

# Optimiser settings per model: (training images, batch, learning rate, weight decay).
RECIPES = {"cnn": (64_000, 64, 2e-3, 1e-4), "vit": (160_000, 64, 2e-3, 5e-2)}


def train(kind: str, seed: int, test: DataLoader) -> tuple[dict[str, float], nn.Module]:
    torch.manual_seed(seed)
    model = build_shapes_model(kind)
    count, batch, rate, decay = RECIPES[kind]
    seconds = train_classifier(
        model, ShapesDataset("train", count, seed), batch=batch, rate=rate, decay=decay
    )
    score = accuracy(model, test)
    print(f"{kind}: test accuracy {score:.2%} after {seconds:.0f} s of training")
    return {"test_accuracy": score, "training_seconds": seconds, "training_images": count}, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kinds", default="cnn,vit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--required", type=float, default=0.95)
    arguments = parser.parse_args()
    test = DataLoader(ShapesDataset("test", arguments.test_images, arguments.seed), batch_size=256)
    figures = {}
    for kind in arguments.kinds.split(","):
        result, model = train(kind, arguments.seed, test)
        figures[kind] = result
        if result["test_accuracy"] < arguments.required:
            raise SystemExit(f"{kind} reached only {result['test_accuracy']:.2%}; not saved")
        save_checkpoint(model, checkpoint_name(kind))
    write_results("shapes_models", {"models": figures})


if __name__ == "__main__":
    main()
