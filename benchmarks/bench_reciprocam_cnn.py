"""ReciproCAM's cost on a CNN, as a ratio to plain inference, beside pytorch-grad-cam's GradCAM.

ResNet-50 at 224x224 on the CPU, batch 1 and 8, everything timed side by side in one run
(interleaved repeats, medians). The explainers are built and their layer resolved before
timing, as a user explaining many batches would have them.

    python benchmarks/bench_reciprocam_cnn.py [--repeats 10] [--device cpu]
"""

from __future__ import annotations

import argparse

import torch
import torchvision
from common import ratio_rows, report_batches, time_interleaved

from reciprocam import ReciproCAM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    arguments = parser.parse_args()
    device = torch.device(arguments.device)

    from pytorch_grad_cam import GradCAM

    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval().to(device)
    rows = []
    for batch in arguments.batches:
        x = torch.randn(batch, 3, 224, 224, device=device)
        reciprocam = ReciproCAM(model)
        generic = ReciproCAM(model, fast_path=False)
        gradcam = GradCAM(model, target_layers=[model.layer4[-1]])

        def inference(x: torch.Tensor = x) -> object:
            with torch.inference_mode():
                return model(x)

        runs = {
            "inference": inference,
            "reciprocam": lambda x=x, cam=reciprocam: cam(x),
            "reciprocam (generic path)": lambda x=x, cam=generic: cam(x),
            "pytorch-grad-cam GradCAM": lambda x=x, cam=gradcam: cam(x, targets=None),
        }
        rows += ratio_rows(batch, time_interleaved(runs, arguments.repeats))
    report_batches("ResNet-50, 224x224", "reciprocam_cnn", "resnet50", rows)


if __name__ == "__main__":
    main()
