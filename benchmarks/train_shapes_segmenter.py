"""Train the Shapes segmenter (reciprocam.synthetic.segmenter) and write its checkpoint.

    python benchmarks/train_shapes_segmenter.py [--images 16000] [--seed 0]

Per-pixel cross entropy on Shapes segmentation images (reciprocam.synthetic.segmentation);
every training image is new (image i of the train stream is made on demand), and the test
split is a disjoint stream. The model is kept only if its mean IoU over the four shape classes
on the test split reaches --required (default 0.7). Prints the test pixel accuracy and IoUs
and the time taken; writes src/reciprocam/synthetic/checkpoints/shapes_segmenter.pt and the
figures to benchmarks/results/shapes_segmenter.json.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from common import save_checkpoint, train_one_cycle, write_results
from torch import Tensor, nn
from torch.utils.data import DataLoader

from reciprocam.synthetic.segmentation import LABELS, SEGMENTATION_CLASSES, ShapesSegmentation
from reciprocam.synthetic.segmenter import CHECKPOINT, ShapesSegmenter


def confusion(model: nn.Module, loader: DataLoader) -> Tensor:
    """(classes, classes) pixel counts: row the true label, column the predicted one."""
    model.eval()
    counts = torch.zeros(SEGMENTATION_CLASSES, SEGMENTATION_CLASSES, dtype=torch.long)
    with torch.inference_mode():
        for images, masks in loader:
            predicted = model(images)["out"].argmax(1)
            pairs = masks.flatten() * SEGMENTATION_CLASSES + predicted.flatten()
            counts += torch.bincount(pairs, minlength=SEGMENTATION_CLASSES**2).view_as(counts)
    return counts


def ious(counts: Tensor) -> dict[str, float]:
    """Each label's IoU: pixels both predicted and true over pixels either predicted or true."""
    hits = counts.diagonal().double()
    union = counts.sum(0).double() + counts.sum(1).double() - hits
    return dict(zip(LABELS, (hits / union.clamp_min(1)).tolist(), strict=True))


def train(arguments: argparse.Namespace) -> tuple[dict[str, object], float, nn.Module]:
    torch.manual_seed(arguments.seed)
    model = ShapesSegmenter()
    count, batch, rate = arguments.images, arguments.batch, arguments.rate
    loader = DataLoader(
        ShapesSegmentation("train", count, arguments.seed),
        batch_size=batch,
        shuffle=False,
        num_workers=1,
    )
    cpu = time.process_time()
    seconds = train_one_cycle(
        model,
        loader,
        lambda net, images, masks: nn.functional.cross_entropy(net(images)["out"], masks),
        rate=rate,
        decay=1e-4,
        steps=math.ceil(count / batch),
        label="segmenter",
    )
    cpu = time.process_time() - cpu
    test = DataLoader(
        ShapesSegmentation("test", arguments.test_images, arguments.seed), batch_size=200
    )
    counts = confusion(model, test)
    iou = ious(counts)
    result = {
        "pixel_accuracy": float(counts.diagonal().sum() / counts.sum()),
        "mean_iou_shapes": statistics.mean(iou[name] for name in LABELS[1:]),
        "mean_iou_all": statistics.mean(iou.values()),
    }
    listed = ", ".join(f"{name} {value:.3f}" for name, value in iou.items())
    print(
        f"test pixel accuracy {result['pixel_accuracy']:.2%}, mean IoU of the shapes"
        f" {result['mean_iou_shapes']:.3f} ({listed}) after {seconds:.0f} s of training"
    )
    parameters = sum(p.numel() for p in model.parameters())
    figures: dict[str, object] = {
        **result,
        "iou": iou,
        "test_images": arguments.test_images,
        "training_seconds": seconds,
        "training_cpu_seconds_main_process": cpu,
        "training_images": count,
        "batch": batch,
        "learning_rate": rate,
        "seed": arguments.seed,
        "parameters": parameters,
    }
    return figures, result["mean_iou_shapes"], model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=16_000, help="training images")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rate", type=float, default=3e-3, help="peak learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--required", type=float, default=0.7, help="mean IoU of the shapes")
    arguments = parser.parse_args()
    figures, mean_iou, model = train(arguments)
    if mean_iou < arguments.required:
        raise SystemExit(f"mean IoU of the shapes {mean_iou:.3f} is too low; not saved")
    size = save_checkpoint(model, CHECKPOINT)
    payload = {"model": "ShapesSegmenter", "checkpoint_bytes": size, **figures}
    write_results("shapes_segmenter", payload)


if __name__ == "__main__":
    main()
