"""Every method's time as a ratio to plain inference, ours beside pytorch-grad-cam's (pgc).

ResNet-50 at 224x224 on the CPU, one image (ResNet-18 for Score-CAM, as its cost is one forward
pass per channel), each pair timed side by side (interleaved, medians). Then Score-CAM's peak
memory, measured in fresh processes: ours at several batch sizes beside pgc's.

    python benchmarks/bench_methods.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch
import torchvision
from common import machine, time_interleaved, write_results

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


def peer(name: str, model: torch.nn.Module, layer: torch.nn.Module):  # type: ignore[no-untyped-def]
    """pgc's explainer for our method `name`, as a function of the input."""
    import pytorch_grad_cam as pgc

    kind = PAIRS[name]
    if kind in ("GuidedBackpropReLUModel", "GuidedGradCAM"):
        import copy

        guided = pgc.GuidedBackpropReLUModel(copy.deepcopy(model), device="cpu")
        if kind == "GuidedBackpropReLUModel":
            return lambda x: guided(x)
        cam = pgc.GradCAM(model, target_layers=[layer])  # their usage example's composition
        return lambda x: guided(x) * cam(x, targets=None)[0][..., None]
    layers = [] if kind == "FullGrad" else [layer]
    cam = getattr(pgc, kind)(model, target_layers=layers)
    if kind in ("ScoreCAM", "AblationCAM"):
        cam.batch_size = 32
    return lambda x: cam(x, targets=None)


def timings(repeats: int) -> list[dict[str, object]]:
    rows = []
    for name in PAIRS:
        architecture = "resnet18" if name == "scorecam" else "resnet50"
        torch.manual_seed(0)
        model = torchvision.models.get_model(architecture).eval()
        x = torch.randn(1, 3, 224, 224)
        options = {"masks": RISE_MASKS} if name == "rise" else {}
        if name in ("scorecam", "rise"):
            options["batch_size"] = 32  # as pgc's; Ablation-CAM sizes its passes itself
        ours = reciprocam.explainer(name, model, **options)
        ours(x)  # resolve the layers outside the timing

        def inference(x: torch.Tensor = x, model: torch.nn.Module = model) -> object:
            with torch.inference_mode():
                return model(x)

        runs = {"inference": inference, "ours": lambda x=x, cam=ours: cam(x)}
        if PAIRS[name] is not None:
            explain = peer(name, model, model.layer4)
            runs["pytorch-grad-cam"] = lambda x=x, explain=explain: explain(x)
        slow = name in SLOW
        seconds = time_interleaved(
            runs, 1 if slow else repeats, warmup=0 if slow else 1, settle=not slow
        )
        row: dict[str, object] = {"method": name, "model": architecture}
        for key in ("ours", "pytorch-grad-cam"):
            if key in seconds:
                row[key] = seconds[key] / seconds["inference"]
        rows.append(row)
        print(row, flush=True)
    return rows


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    arguments = parser.parse_args()
    rows = timings(arguments.repeats)
    memory = peak_memory()
    info = machine()
    print(f"\n224x224, one image, {info['cpu']}, {info['torch_threads']} threads, {info['torch']}")
    print("| method | model | ours / inference | pytorch-grad-cam / inference |")
    print("|---|---|---|---|")
    for row in rows:
        peer_ratio = f"{row['pytorch-grad-cam']:.2f}x" if "pytorch-grad-cam" in row else "-"
        print(f"| {row['method']} | {row['model']} | {row['ours']:.2f}x | {peer_ratio} |")
    print("\n| Score-CAM on ResNet-18 | batch_size | peak memory above the model |")
    print("|---|---|---|")
    for row in memory:
        print(f"| {row['implementation']} | {row['batch_size']} | {row['peak_mib']:.0f} MiB |")
    payload = {
        "input": [1, 3, 224, 224],
        "rise_masks": RISE_MASKS,
        "rows": rows,
        "score_cam_memory": memory,
    }
    print(f"wrote {write_results('methods', payload)}")


if __name__ == "__main__":
    main()
