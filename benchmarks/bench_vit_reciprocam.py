"""ViT-ReciproCAM's cost on ViT-B/16, as a ratio to plain inference, beside pytorch-grad-cam.

torchvision vit_b_16 at 224x224 on the CPU, batch 1 and 8, everything timed side by side in one
run (interleaved repeats, medians): plain inference, the generic batched path (196 masked
sequences through the last block), the exact fast path, and pytorch-grad-cam's GradCAM on the
last block's first LayerNorm. Explainers are built and resolved before timing.

    python benchmarks/bench_vit_reciprocam.py [--repeats 5]
"""

from __future__ import annotations

import argparse

import torch
import torchvision
from common import ratio_rows, report_batches, time_interleaved

from reciprocam import ViTReciproCAM


def tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's reshape_transform for ViT-B/16: drop the class token, make a 14x14 map."""
    return tokens[:, 1:].reshape(tokens.shape[0], 14, 14, -1).permute(0, 3, 1, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    arguments = parser.parse_args()

    from pytorch_grad_cam import GradCAM

    torch.manual_seed(0)
    model = torchvision.models.vit_b_16().eval()
    torch.nn.init.normal_(model.heads.head.weight, std=0.05)  # torchvision starts it at zero
    rows = []
    for batch in arguments.batches:
        x = torch.randn(batch, 3, 224, 224)
        fast = ViTReciproCAM(model)
        generic = ViTReciproCAM(model, fast_path=False)
        layer = model.encoder.layers[-1].ln_1
        gradcam = GradCAM(model, target_layers=[layer], reshape_transform=tokens_to_grid)

        def inference(x: torch.Tensor = x) -> object:
            with torch.inference_mode():
                return model(x)

        runs = {
            "inference": inference,
            "vit-reciprocam (fast path)": lambda x=x, cam=fast: cam(x),
            "vit-reciprocam (generic path)": lambda x=x, cam=generic: cam(x),
            "pytorch-grad-cam GradCAM": lambda x=x, cam=gradcam: cam(x, targets=None),
        }
        rows += ratio_rows(batch, time_interleaved(runs, arguments.repeats, warmup=1))
    report_batches("vit_b_16, 224x224", "vit_reciprocam", "vit_b_16", rows)


if __name__ == "__main__":
    main()
