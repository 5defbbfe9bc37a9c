"""Regenerate ``openvino_xai_reciprocam_resnet18.npz``, the openvino_xai ReciproCAM reference.

Run by hand with the project's own Python (torch, torchvision, numpy, onnx, onnxscript)::

    python tests/reference/make_openvino_xai_reference.py [--venv DIR] [--output FILE]

openvino_xai pins ``openvino-dev==2024.4`` and ``numpy==1.*``, so it cannot live in the project's
environment. This script exports the seeded ResNet-18 (``seeded_resnet18.py``) to ONNX, creates
(or reuses) a separate virtual environment with ``openvino_xai==1.1.0`` and runs openvino_xai's
white-box ReciproCAM there, through its public ``insert_xai`` API with ``embed_scaling=False``
so the saved maps are the raw, unscaled per-class logits of the masked copies. Tests only read
the resulting ``.npz``; neither tests nor CI run this script.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from seeded_resnet18 import INPUT_SEED, SEED, build_model, make_input  # noqa: E402

OPENVINO_XAI_VERSION = "1.1.0"
REQUIREMENTS = [f"openvino_xai=={OPENVINO_XAI_VERSION}", "openvino-dev==2024.4.0", "numpy<2"]
DEFAULT_VENV = Path("~/.cache/reciprocam/openvino-xai-venv").expanduser()
DEFAULT_OUTPUT = HERE / "openvino_xai_reciprocam_resnet18.npz"

# Runs inside the openvino_xai venv: argv = onnx model, input .npy, output .npz.
OV_PROGRAM = r"""
import importlib.metadata
import sys

import numpy as np
import openvino as ov
import openvino_xai as xai

onnx_path, input_path, output_path = sys.argv[1:4]
x = np.load(input_path)
core = ov.Core()
model = core.read_model(onnx_path)
model_xai = xai.insert_xai(
    model,
    task=xai.Task.CLASSIFICATION,
    explain_method=xai.Method.RECIPROCAM,
    target_layer=None,
    embed_scaling=False,
)
# The node whose output ReciproCAM tiles and masks (the input of its single Tile op).
tiles = [op for op in model_xai.get_ordered_ops() if op.get_type_name() == "Tile"]
assert len(tiles) == 1, [op.get_friendly_name() for op in tiles]
target = tiles[0].input(0).get_source_output().get_node()
# Force fp32: on CPUs with bf16 support OpenVINO otherwise infers in bf16 by default.
compiled = core.compile_model(model_xai, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
result = compiled(x)
np.savez(
    output_path,
    maps=np.asarray(result[compiled.output("saliency_map")], dtype=np.float32),
    logits=np.asarray(result[compiled.output(0)], dtype=np.float32),
    target_node=np.str_(target.get_friendly_name()),
    target_node_type=np.str_(target.get_type_name()),
    target_node_shape=np.str_(str(target.get_output_partial_shape(0))),
    openvino_xai_version=np.str_(importlib.metadata.version("openvino_xai")),
    openvino_version=np.str_(ov.get_version()),
    inference_precision=np.str_(compiled.get_property("INFERENCE_PRECISION_HINT").to_string()),
)
"""

VERSION_PROBE = (
    "import importlib.metadata as m, numpy, openvino, openvino_xai; "
    "print(m.version('openvino_xai'), m.version('openvino'), numpy.__version__)"
)


def venv_python(venv: Path) -> Path:
    """Return the interpreter path inside ``venv``."""
    if os.name == "nt":
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


def ensure_venv(venv: Path, base_python: str) -> Path:
    """Create ``venv`` with openvino_xai unless it already has the pinned version."""
    python = venv_python(venv)
    if python.exists():
        probe = subprocess.run([python, "-c", VERSION_PROBE], capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.split()[0] == OPENVINO_XAI_VERSION:
            print(f"reusing {venv} (openvino_xai, openvino, numpy: {probe.stdout.strip()})")
            return python
    print(f"creating {venv} with {' '.join(REQUIREMENTS)} ...")
    start = time.perf_counter()
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([base_python, "-m", "venv", venv], check=True)
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, *REQUIREMENTS], check=True)
    print(f"created {venv} in {time.perf_counter() - start:.0f} s")
    return python


def export_onnx(model: torch.nn.Module, x: torch.Tensor, path: Path, exporter: str) -> None:
    """Export ``model`` to a single static-shape ONNX file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (x,),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamo=exporter == "dynamo",
            external_data=False,
        )


def explicit_maps(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """Definition: logits after keeping one ``layer4`` output position, shape (1, C, H, W)."""
    captured: list[torch.Tensor] = []
    hook = model.layer4.register_forward_hook(lambda _m, _i, out: captured.append(out))
    with torch.no_grad():
        model(x)
        hook.remove()
        feat = captured[0]
        _, _, h, w = feat.shape
        masks = torch.eye(h * w, dtype=feat.dtype).reshape(h * w, 1, h, w)
        logits = model.fc(torch.flatten(model.avgpool(feat * masks), 1))
    return logits.T.reshape(1, -1, h, w).numpy()


def per_class_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each class map of ``a`` with the same class of ``b``."""
    a = a.reshape(a.shape[1], -1).astype(np.float64)
    b = b.reshape(b.shape[1], -1).astype(np.float64)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    return (a * b).sum(axis=1) / np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))


def main() -> None:
    """Build, export, explain with openvino_xai in its own venv, save and summarise."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="openvino_xai venv")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="npz to write")
    parser.add_argument(
        "--base-python",
        default=sys.executable,
        help="interpreter that creates the venv (openvino 2024.4 has wheels for 3.8-3.12)",
    )
    parser.add_argument(
        "--exporter",
        choices=["torchscript", "dynamo"],
        default="torchscript",
        help="torch.onnx exporter; torchscript keeps module paths in node names",
    )
    args = parser.parse_args()

    model = build_model()
    x = make_input()
    python = ensure_venv(args.venv.expanduser(), args.base_python)

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        export_onnx(model, x, tmp / "resnet18.onnx", args.exporter)
        np.save(tmp / "input.npy", x.numpy())
        subprocess.run(
            [python, "-c", OV_PROGRAM, tmp / "resnet18.onnx", tmp / "input.npy", tmp / "ov.npz"],
            check=True,
        )
        with np.load(tmp / "ov.npz") as ov_out:
            result = {key: ov_out[key] for key in ov_out.files}

    result.update(
        scaling=np.str_("none (insert_xai embed_scaling=False: raw fp32 logits per masked copy)"),
        onnx_exporter=np.str_(f"torch.onnx.export {args.exporter}, torch {torch.__version__}"),
        model_seed=np.int64(SEED),
        input_seed=np.int64(INPUT_SEED),
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.output, **result)

    maps, logits = result["maps"], result["logits"]
    with torch.no_grad():
        torch_logits = model(x).numpy()
    reference = explicit_maps(model, x)
    pearson = per_class_pearson(maps, reference)
    top5 = np.argsort(-logits[0])[:5]
    print(f"wrote {args.output} ({args.output.stat().st_size / 1024:.0f} KiB)")
    print(f"  openvino_xai {result['openvino_xai_version']}, openvino {result['openvino_version']}")
    print(
        f"  target node {result['target_node']} ({result['target_node_type']}, "
        f"{result['target_node_shape']}), precision {result['inference_precision']}"
    )
    print(f"  maps {maps.shape} {maps.dtype} in [{maps.min():.3f}, {maps.max():.3f}]")
    top5_logits = np.array2string(logits[0, top5], precision=2)
    print(f"  top-5 classes {top5.tolist()}, logits {top5_logits}")
    print(f"  vs torch: max |logits diff| {np.abs(logits - torch_logits).max():.2e}")
    print(
        f"  vs explicit layer4 definition: min per-class Pearson {pearson.min():.6f}, "
        f"max |diff| {np.abs(maps - reference).max():.2e}"
    )


if __name__ == "__main__":
    main()
