"""Explaining in deployment: onnxruntime explain time over onnxruntime inference, in one run.

For ResNet-50 and vit_b_16 (random weights, 224x224, CPU): the plain model exported to ONNX,
the same model with its ReciproCAM maps (`export_onnx`), and, for the CNN, the plain file with
ReciproCAM inserted by `insert_reciprocam`, all run by onnxruntime and timed interleaved
(medians). openvino_xai's ReciproCAM on the OpenVINO runtime is timed in the same run where its
environment exists (see bench_speed.py). The goal: explaining costs at most 1.2x inference.

    python benchmarks/bench_onnx.py [--repeats 10] [--batches 1,8]

Writes benchmarks/results/onnx.json.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnxruntime
import torch
import torchvision
from bench_speed import openvino_xai
from common import machine, time_interleaved, write_results

from reciprocam.onnx import export_onnx, insert_reciprocam

GOAL = 1.2


def export_plain(model: torch.nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.randn(2, 3, 224, 224),),
            str(path),
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},),
            verbose=False,
        )
    return path


def session(path: Path) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def timings(model_name: str, batches: list[int], repeats: int) -> list[dict[str, object]]:
    torch.manual_seed(0)
    model = torchvision.models.get_model(model_name).eval()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        plain = export_plain(model, Path(folder) / "plain.onnx")
        files = {"export_onnx": export_onnx(model, Path(folder) / "explained.onnx")}
        if not model_name.startswith("vit"):
            files["insert_reciprocam"] = insert_reciprocam(plain, Path(folder) / "inserted.onnx")
        sessions = {"inference": session(plain), **{k: session(v) for k, v in files.items()}}
        for batch in batches:
            x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
            runs = {
                name: (lambda s=s, x=x: s.run(None, {s.get_inputs()[0].name: x}))
                for name, s in sessions.items()
            }
            seconds = time_interleaved(runs, repeats, warmup=2)
            row: dict[str, object] = {
                "model": model_name,
                "batch": batch,
                "inference_seconds": seconds["inference"],
            }
            for name in files:
                row[name] = seconds[name] / seconds["inference"]
            peer = openvino_xai(model_name, batch, repeats)
            if peer is not None:
                row["openvino_xai"] = peer.get("openvino_xai", peer.get("failed"))
            rows.append(row)
            print(row, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--models", default="resnet50,vit_b_16")
    parser.add_argument("--batches", default="1,8")
    arguments = parser.parse_args()
    batches = [int(b) for b in arguments.batches.split(",")]
    rows = [
        r for name in arguments.models.split(",") for r in timings(name, batches, arguments.repeats)
    ]
    info = machine()
    print(f"\n224x224, {info['cpu']}, onnxruntime {onnxruntime.__version__}")
    print(
        "| model | batch | inference | export_onnx | insert_reciprocam | openvino_xai (OpenVINO) |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        cells = [
            f"{row[key]:.2f}x" if isinstance(row.get(key), float) else str(row.get(key, "-"))
            for key in ("export_onnx", "insert_reciprocam", "openvino_xai")
        ]
        inference = f"{float(str(row['inference_seconds'])) * 1000:.0f} ms"
        print(f"| {row['model']} | {row['batch']} | {inference} | {' | '.join(cells)} |")
    met = all(
        float(str(row[key])) <= GOAL
        for row in rows
        for key in ("export_onnx", "insert_reciprocam")
        if key in row
    )
    print(f"goal (explain <= {GOAL}x inference): {'met' if met else 'NOT met'}")
    payload = {
        "input": [3, 224, 224],
        "onnxruntime": onnxruntime.__version__,
        "goal": GOAL,
        "rows": rows,
    }
    print(f"wrote {write_results('onnx', payload)}")


if __name__ == "__main__":
    main()
