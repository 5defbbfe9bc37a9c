"""ReciproCAM on heads that flatten the map into a Linear layer (VGG-16, AlexNet), with and
without the flatten shortcut (multiplying only the live positions' weight columns).

    python benchmarks/bench_flatten_heads.py [--repeats 7]

For each model at batch 1 and 8: inference, ReciproCAM (pixel mask, the shortcut) and ReciproCAM
with the dense head, timed side by side. Then, for the first Linear layer of the head on the
B*K masked copies (K = 49 for VGG-16, 36 for AlexNet), the dense product against the exact
sparse forms of the same product (only position k's C weight columns are live in copy k): the
batched product with the weights regrouped by position (what the shortcut runs; the regrouping,
timed apart, is made once per weight version), and a sparse CSR matrix product.
"""

from __future__ import annotations

import argparse

import torch
import torchvision
from common import ratio_rows, time_interleaved, write_results
from torch import Tensor

from reciprocam import ReciproCAM


def head_products(weight: Tensor, features: Tensor) -> dict[str, float]:
    """Seconds of the first Linear layer's product on every masked copy, dense and sparse."""
    out, channels, positions = weight.shape[0], features.shape[1], features.shape[2]
    batch = features.shape[0]
    copies = torch.zeros(batch, positions, channels, positions)
    index = torch.arange(positions)
    copies[:, index, :, index] = features.permute(2, 0, 1)  # copy k keeps position k
    dense_rows = copies.view(batch * positions, -1)
    grouped = weight.view(out, channels, positions).permute(2, 0, 1).contiguous()
    rows = torch.arange(batch * positions).repeat_interleave(channels)
    image, position = rows // positions, rows % positions
    channel = torch.arange(channels).repeat(batch * positions)
    values = features[image, channel, position]
    sparse = torch.sparse_coo_tensor(
        torch.stack([rows, channel * positions + position]), values, dense_rows.shape
    ).to_sparse_csr()
    by_position = features.permute(2, 1, 0)  # (K, C, B)
    runs = {
        "dense": lambda: dense_rows @ weight.T,
        "regroup the weights by position": lambda: (
            weight.view(out, channels, positions).permute(2, 0, 1).contiguous()
        ),
        "batched by position (the shortcut)": lambda: torch.bmm(grouped, by_position),
        "sparse CSR": lambda: torch.sparse.mm(sparse, weight.T),
    }
    reference = dense_rows @ weight.T
    exact = torch.bmm(grouped, by_position).permute(2, 0, 1).reshape_as(reference)
    assert torch.allclose(exact, reference, rtol=1e-4, atol=1e-3)
    return time_interleaved(runs, repeats=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    arguments = parser.parse_args()
    torch.manual_seed(0)
    rows, products = [], []
    for name in ("vgg16", "alexnet"):
        model = torchvision.models.get_model(name).eval()
        for batch in (1, 8):
            x = torch.randn(batch, 3, 224, 224)
            cam, dense = ReciproCAM(model), ReciproCAM(model, fast_path=False)
            cam(x)
            assert cam.uses_flatten_shortcut

            def inference(x: Tensor = x, model: torch.nn.Module = model) -> object:
                with torch.inference_mode():
                    return model(x)

            seconds = time_interleaved(
                {
                    "inference": inference,
                    "reciprocam": lambda x=x, cam=cam: cam(x),
                    "reciprocam (dense head, fast_path=False)": lambda x=x, cam=dense: cam(x),
                },
                arguments.repeats,
            )
            for row in ratio_rows(batch, seconds):
                rows.append({"model": name, **row})
                print(f"{name} batch {batch}: {row['method']} {row['ratio']:.2f}x")
            with torch.inference_mode():
                features = model.features(x).flatten(2)
                linear = next(m for m in model.classifier if isinstance(m, torch.nn.Linear))
                weight = linear.weight
                timed = head_products(weight, features)
            for method, value in timed.items():
                products.append(
                    {"model": name, "batch": batch, "product": method, "seconds": value}
                )
                print(f"  first Linear on the copies, {method}: {value * 1000:.0f} ms")
    path = write_results("flatten_heads", {"rows": rows, "first_linear": products})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
