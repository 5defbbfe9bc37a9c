"""Every method's time per image as a ratio to plain inference, beside the peers', in one run.

ResNet-50 and vit_b_16 at 224x224 on this machine, batches of 1 and 8. For each model, batch and
method: ours, pytorch-grad-cam's (pgc) where it has the method, timed side by side (interleaved,
medians); openvino_xai's ReciproCAM on the OpenVINO runtime as a ratio to OpenVINO's own
inference, where its separate environment exists (tests/reference/make_openvino_xai_reference.py
creates it). The slow methods (Score-CAM, Ablation-CAM, RISE) are timed once, and at batch 8 only
with --slow-at-8 (their cost grows linearly with the batch). Then the Score-CAM / ReciproCAM
ratio the paper gives as about 148x, and Score-CAM's peak memory in fresh processes.

    python benchmarks/bench_speed.py [--repeats 5] [--models resnet50,vit_b_16] [--slow-at-8]

Writes benchmarks/results/speed.json and the plot benchmarks/results/speed.png. Each measured
row is also kept in results/speed.partial.jsonl until the end, so a rerun after an interruption
measures only what is missing.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from common import RESULTS, machine, time_interleaved, write_results
from torch import Tensor, nn

import reciprocam

# Our method name -> pgc's class name (None: pgc has no such method).
PAIRS = {
    "reciprocam": None,
    "cam": None,
    "gradcam": "GradCAM",
    "hirescam": "HiResCAM",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "gradcam++": "GradCAMPlusPlus",
    "smooth-gradcam++": None,
    "eigencam": "EigenCAM",
    "eigengradcam": "EigenGradCAM",
    "fullgrad": "FullGrad",
    "ablationcam": "AblationCAM",
    "scorecam": "ScoreCAM",
    "guided-backprop": "GuidedBackpropReLUModel",
    "guided-gradcam": "GuidedGradCAM",
    "rise": None,
}
SLOW = {"ablationcam", "scorecam", "rise"}  # timed once
RISE_MASKS = 500  # RISE's cost is linear in its masks (the paper uses 4000)
# pgc on a ViT needs a reshape of the tokens and supports only its CAM-family classes here.
PGC_ON_VIT = {
    "GradCAM",
    "HiResCAM",
    "XGradCAM",
    "LayerCAM",
    "GradCAMPlusPlus",
    "EigenCAM",
    "EigenGradCAM",
    "ScoreCAM",
}
OPENVINO_XAI_VENV = Path("~/.cache/reciprocam/openvino-xai-venv").expanduser()


def pgc_layer(model: nn.Module) -> nn.Module:
    """The layer pgc explains: layer4, or the last block's first LayerNorm (its ViT example)."""
    if isinstance(model, torchvision.models.VisionTransformer):
        return model.encoder.layers[-1].ln_1
    return model.layer4


def tokens_to_grid(tokens: Tensor) -> Tensor:
    """pgc's reshape_transform for vit_b_16: drop the class token, (B, 768, 14, 14)."""
    grid = tokens[:, 1:, :].reshape(tokens.shape[0], 14, 14, tokens.shape[2])
    return grid.permute(0, 3, 1, 2)


def peer(name: str, model: nn.Module) -> Callable[[Tensor], object] | None:
    """pgc's explainer for our method `name`, as a function of the input (None: no such)."""
    import pytorch_grad_cam as pgc

    kind = PAIRS[name]
    vit = isinstance(model, torchvision.models.VisionTransformer)
    if kind is None or (vit and kind not in PGC_ON_VIT):
        return None
    layer = pgc_layer(model)
    reshape = {"reshape_transform": tokens_to_grid} if vit else {}
    if kind in ("GuidedBackpropReLUModel", "GuidedGradCAM"):
        guided_model = pgc.GuidedBackpropReLUModel(copy.deepcopy(model), device="cpu")

        def guided(x: Tensor) -> list[object]:
            # It explains one image per call (it indexes the output's first row).
            return [guided_model(image[None]) for image in x]

        if kind == "GuidedBackpropReLUModel":
            return guided
        cam = pgc.GradCAM(model, target_layers=[layer])  # their usage example's composition
        return lambda x: [
            g * m[..., None] for g, m in zip(guided(x), cam(x, targets=None), strict=True)
        ]
    layers = [] if kind == "FullGrad" else [layer]
    explainer = getattr(pgc, kind)(model, target_layers=layers, **reshape)
    if kind in ("ScoreCAM", "AblationCAM"):
        explainer.batch_size = 32
    return lambda x: explainer(x, targets=None)


PARTIAL = RESULTS / "speed.partial.jsonl"


def measured() -> dict[tuple[object, ...], dict[str, object]]:
    """The rows an interrupted run already measured, by (source, model, batch, method)."""
    if not PARTIAL.exists():
        return {}
    rows = [json.loads(line) for line in PARTIAL.read_text().splitlines() if line.strip()]
    return {key(row): row for row in rows}


def key(row: dict[str, object]) -> tuple[object, ...]:
    return (row.get("source"), row["model"], row["batch"], row["method"])


def record(row: dict[str, object]) -> None:
    """Print a measured row and keep it, so that a rerun after an interruption skips it."""
    print(row, flush=True)
    RESULTS.mkdir(exist_ok=True)
    with PARTIAL.open("a") as partial:
        partial.write(json.dumps(row) + "\n")


def timings(model_name: str, batch: int, repeats: int, slow: bool) -> list[dict[str, object]]:
    """Ratios to inference of every method on `model_name` for a batch of `batch` images."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(model_name).eval()
    x = torch.randn(batch, 3, 224, 224)
    done = measured()
    rows = []
    for name in PAIRS:
        if name in SLOW and not slow:
            continue
        if ("torch", model_name, batch, name) in done:
            rows.append(done["torch", model_name, batch, name])
            continue
        options: dict[str, int] = {"masks": RISE_MASKS} if name == "rise" else {}
        if name in ("scorecam", "rise"):
            options["batch_size"] = 32  # as pgc's; Ablation-CAM sizes its passes itself
        row: dict[str, object] = {
            "source": "torch",
            "model": model_name,
            "batch": batch,
            "method": name,
        }
        try:
            ours = reciprocam.explainer(name, model, **options)
            ours(x[:1])  # resolve the layers outside the timing
        except reciprocam.ReciproCAMError as error:
            row["unsupported"] = str(error)
            rows.append(row)
            record(row)
            continue

        def inference(x: Tensor = x, model: nn.Module = model) -> object:
            with torch.inference_mode():
                return model(x)

        runs = {"inference": inference, "ours": lambda x=x, cam=ours: cam(x)}
        explain = peer(name, model)
        if explain is not None:
            runs["pytorch-grad-cam"] = lambda x=x, explain=explain: explain(x)
        once = name in SLOW
        seconds = time_interleaved(
            runs, 1 if once else repeats, warmup=0 if once else 1, settle=not once
        )
        for key in ("ours", "pytorch-grad-cam"):
            if key in seconds:
                row[key] = seconds[key] / seconds["inference"]
        row["inference_seconds"] = seconds["inference"]
        rows.append(row)
        record(row)
    return rows


OPENVINO_PROGRAM = """
import json, statistics, sys, time
import numpy as np
import openvino as ov
import openvino_xai as xai

path, method, batch, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
core = ov.Core()
config = {"INFERENCE_PRECISION_HINT": "f32"}  # OpenVINO picks bf16 on CPUs that have it
model = core.read_model(path)
explained = xai.insert_xai(
    core.read_model(path), task=xai.Task.CLASSIFICATION,
    explain_method=getattr(xai.Method, method), target_layer=None, embed_scaling=True,
)
plain = core.compile_model(model, "CPU", config)
explaining = core.compile_model(explained, "CPU", config)
x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
times = {"inference": [], "explain": []}
for _ in range(2):
    plain(x), explaining(x)
for _ in range(repeats):
    for name, compiled in (("inference", plain), ("explain", explaining)):
        start = time.perf_counter()
        compiled(x)
        times[name].append(time.perf_counter() - start)
print(json.dumps({name: statistics.median(values) for name, values in times.items()}))
"""


def openvino_xai(model_name: str, batch: int, repeats: int) -> dict[str, object] | None:
    """openvino_xai's (ViT-)ReciproCAM time over OpenVINO inference, or None if not installed."""
    python = OPENVINO_XAI_VENV / "bin" / "python"
    if not python.exists():
        return None
    method = "VITRECIPROCAM" if model_name.startswith("vit") else "RECIPROCAM"
    row: dict[str, object] = {
        "source": "openvino",
        "model": model_name,
        "batch": batch,
        "method": method.lower(),
    }
    torch.manual_seed(0)
    model = torchvision.models.get_model(model_name).eval()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (torch.randn(batch, 3, 224, 224),),
                str(path),
                input_names=["input"],
                dynamic_axes={"input": {0: "batch"}},  # openvino_xai's ViT insertion needs it
                dynamo=False,
            )
        result = subprocess.run(
            [str(python), "-c", OPENVINO_PROGRAM, str(path), method, str(batch), str(repeats)],
            capture_output=True,
            text=True,
        )
    if result.returncode != 0:
        row["failed"] = result.stderr.strip().splitlines()[-1] if result.stderr else "failed"
    else:
        times = json.loads(result.stdout.strip().splitlines()[-1])
        row["openvino_xai"] = times["explain"] / times["inference"]
        row["inference_seconds"] = times["inference"]
    return row


PEAK = """
import json, sys, threading, time, torch, torchvision

def rss_mib():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20

torch.manual_seed(0)
model = torchvision.models.resnet18().eval()
x = torch.randn(1, 3, 224, 224)
with torch.inference_mode():
    model(x)
which, batch = sys.argv[1], int(sys.argv[2])
if which == "ours":
    import reciprocam
    cam = reciprocam.ScoreCAM(model, batch_size=batch)
    run = lambda: cam(x)
else:
    import pytorch_grad_cam as pgc
    cam = pgc.ScoreCAM(model, target_layers=[model.layer4])
    cam.batch_size = batch
    run = lambda: cam(x, targets=None)
before, peak, done = rss_mib(), [0.0], threading.Event()

def watch():
    while not done.is_set():
        peak[0] = max(peak[0], rss_mib())
        time.sleep(0.002)

watcher = threading.Thread(target=watch)
watcher.start()
run()
done.set()
watcher.join()
print(json.dumps({"peak_mib": peak[0] - before}))
"""


def peak_memory() -> list[dict[str, object]]:
    """Score-CAM's peak resident memory above the model's, in MiB, per implementation and batch."""
    rows = []
    for which, batch in (("ours", 8), ("ours", 32), ("ours", 128), ("pytorch-grad-cam", 32)):
        result = subprocess.run(
            [sys.executable, "-c", PEAK, which, str(batch)],
            capture_output=True,
            text=True,
            check=True,
        )
        peak = json.loads(result.stdout.strip().splitlines()[-1])["peak_mib"]
        rows.append({"implementation": which, "batch_size": batch, "peak_mib": peak})
        print(rows[-1], flush=True)
    return rows


def plot(rows: list[dict[str, object]], path: Path) -> None:
    """Bars of each method's ratio to inference (log scale), a panel per model and batch."""
    from matplotlib.figure import Figure

    panels = sorted({(str(r["model"]), int(str(r["batch"]))) for r in rows})
    figure = Figure(figsize=(13, 3.6 * len(panels)), dpi=100)
    axes = figure.subplots(len(panels), 1, squeeze=False)[:, 0]
    for axis, (model, batch) in zip(axes, panels, strict=True):
        mine = [r for r in rows if r["model"] == model and r["batch"] == batch]
        names = [str(r["method"]) for r in mine]
        for offset, key in ((-0.27, "ours"), (0.0, "pytorch-grad-cam"), (0.27, "openvino_xai")):
            positions = [i + offset for i, r in enumerate(mine) if key in r]
            values = [float(str(r[key])) for r in mine if key in r]
            if values:
                axis.bar(positions, values, width=0.27, label=key)
        axis.set_yscale("log")
        axis.axhline(1.0, color="black", linewidth=0.8)
        axis.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        axis.set_ylabel("time / inference")
        axis.set_title(f"{model}, batch {batch}")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", default="resnet50,vit_b_16")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--slow-at-8", action="store_true")
    arguments = parser.parse_args()
    rows: list[dict[str, object]] = []
    for model_name in arguments.models.split(","):
        for batch in map(int, arguments.batches.split(",")):
            rows += timings(model_name, batch, arguments.repeats, batch == 1 or arguments.slow_at_8)
            method = "vitreciprocam" if model_name.startswith("vit") else "reciprocam"
            peer_row = measured().get(("openvino", model_name, batch, method))
            if peer_row is None:
                peer_row = openvino_xai(model_name, batch, arguments.repeats)
                if peer_row is not None:
                    record(peer_row)
            if peer_row is not None:
                rows.append(peer_row)
    memory = peak_memory()
    info = machine()
    print(f"\n224x224, {info['cpu']}, {info['torch_threads']} threads, torch {info['torch']}")
    print("| model | batch | method | ours | pytorch-grad-cam | openvino_xai (OpenVINO) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        cells = [
            f"{float(str(row[key])):.2f}x" if key in row else "-"
            for key in ("ours", "pytorch-grad-cam", "openvino_xai")
        ]
        note = " (n/a here)" if "unsupported" in row or "failed" in row else ""
        print(f"| {row['model']} | {row['batch']} | {row['method']}{note} | {' | '.join(cells)} |")
    score_over_reciprocam = {
        f"{r['model']} batch {r['batch']}": float(str(r["ours"])) / float(str(s["ours"]))
        for r in rows
        for s in rows
        if r["method"] == "scorecam"
        and s["method"] == "reciprocam"
        and r["model"] == s["model"]
        and r["batch"] == s["batch"]
        and "ours" in r
        and "ours" in s
    }
    for where, ratio in score_over_reciprocam.items():
        print(f"Score-CAM / ReciproCAM on {where}: {ratio:.0f}x (the paper: about 148x)")
    print("\n| Score-CAM on ResNet-18 | batch_size | peak memory above the model |")
    print("|---|---|---|")
    for row in memory:
        print(f"| {row['implementation']} | {row['batch_size']} | {row['peak_mib']:.0f} MiB |")
    RESULTS.mkdir(exist_ok=True)
    plot(rows, RESULTS / "speed.png")
    payload = {
        "input": [3, 224, 224],
        "rise_masks": RISE_MASKS,
        "rows": rows,
        "score_cam_over_reciprocam": score_over_reciprocam,
        "score_cam_memory": memory,
    }
    print(f"wrote {write_results('speed', payload)} and {RESULTS / 'speed.png'}")
    PARTIAL.unlink()


if __name__ == "__main__":
    main()
