"""Regenerate ``openvino_xai_metrics.npz``, openvino_xai's metrics on a seeded tiny CNN.

Run by hand with the project's own Python (torch, numpy, onnx, onnxscript)::

    python tests/reference/make_openvino_xai_metrics_reference.py [--venv DIR] [--output FILE]

openvino_xai cannot live in the project's environment (it pins numpy 1.x), so this script
exports the tiny CNN of ``seeded_tiny_cnn.py`` to ONNX and runs openvino_xai 1.1.0's own metric
classes in the separate venv of ``make_openvino_xai_reference.py`` (created there if missing):

* ``InsertionDeletionAUC`` with ``steps=STEPS``; its start (insertion) and substrate (deletion)
  is 0, which is 0 in our normalised space, because the preprocess function only transposes
  HWC to NCHW;
* ``ADCC`` with a stand-in explainer whose map is the per-pixel sum of squares over channels,
  rescaled to [0, 1] by openvino_xai's own ``scaling``; its aggregate from ``ADCC.evaluate``;
* ``PointingGame`` on the saliency maps and on crafted maps whose maxima lie on, or one pixel
  off, the (inclusive) borders of (x, y, w, h) boxes.

The postprocess function is the float32 softmax of the logits, and the metrics' compiled models
are replaced by ones compiled with ``INFERENCE_PRECISION_HINT=f32`` (openvino_xai compiles with
OpenVINO's defaults, which infer in bf16 on CPUs that support it). Tests only read the ``.npz``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from make_openvino_xai_reference import DEFAULT_VENV, ensure_venv, export_onnx  # noqa: E402
from seeded_tiny_cnn import INPUT_SIZE, SEED, build_model  # noqa: E402

DATA_SEED = 11
STEPS = 10
TARGETS = (0, 1, 4, 0)
"""One class per image: the top-1 (class 0) for two images, lower-ranked classes for two."""
DEFAULT_OUTPUT = HERE / "openvino_xai_metrics.npz"

# Runs inside the openvino_xai venv: argv = onnx model, input .npz, output .npz.
OV_PROGRAM = r"""
import importlib.metadata
import sys
import types

import numpy as np
import openvino as ov
from openvino_xai.common.utils import scaling
from openvino_xai.explainer.explanation import Layout
from openvino_xai.metrics import ADCC, InsertionDeletionAUC, PointingGame

onnx_path, data_path, output_path = sys.argv[1:4]
data = np.load(data_path)
images = data["images"].transpose(0, 2, 3, 1)  # openvino_xai's metrics take HWC images
maps, targets, steps = data["maps"], [int(t) for t in data["targets"]], int(data["steps"])
core = ov.Core()
model = core.read_model(onnx_path)


def preprocess(image):
    return image.transpose(2, 0, 1)[None].astype(np.float32)


def postprocess(outputs):
    logits = outputs[0]
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


class SumOfSquares:
    # The stand-in explainer: per-pixel sum of squares over channels, unscaled.
    def __call__(self, image, targets, colormap=False, scaling=False, **kwargs):
        assert not colormap and not scaling
        raw = np.square(image.astype(np.float32)).sum(axis=-1)
        return types.SimpleNamespace(saliency_map={targets: raw})


def in_fp32(metric):
    metric.model_compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return metric


auc = in_fp32(InsertionDeletionAUC(model, preprocess, postprocess))
adcc = in_fp32(ADCC(model, preprocess, postprocess, explainer=SumOfSquares()))
result = {key: [] for key in ("insertion", "deletion", "adcc", "coherency", "complexity")}
result.update(average_drop=[], logits=[], probabilities=[], coherency_maps=[])
for image, saliency, target in zip(images, maps, targets):
    for key, value in auc(saliency, target, image, steps=steps).items():
        result[key].append(value)
    for key, value in adcc(saliency, target, image).items():
        result[key].append(value)
    result["logits"].append(adcc.model_compiled([preprocess(image)])[0][0])
    result["probabilities"].append(adcc.model_predict(image))
    # What coherency correlates with the map: openvino_xai's scaling of the stand-in's map of E.
    raw = SumOfSquares()(image * saliency[:, :, None], target).saliency_map[target]
    result["coherency_maps"].append(scaling(raw, cast_to_uint8=False, max_value=1))

explanations = [
    types.SimpleNamespace(saliency_map={t: m}, layout=Layout.MULTIPLE_MAPS_PER_IMAGE_GRAY)
    for m, t in zip(maps, targets)
]
for key, value in auc.evaluate(explanations, list(images), steps=steps).items():
    result[f"evaluate_{key}"] = value
for key, value in adcc.evaluate(explanations, list(images)).items():
    result[f"evaluate_{key}"] = value

maps_pg, boxes = data["pointing_maps"], data["pointing_boxes"]  # rows (case, x, y, w, h)
cases = [[] for _ in maps_pg]
for case, x, y, w, h in boxes.tolist():
    cases[case].append((x, y, w, h))
result["pointing_game"] = [PointingGame()(m, b)["pointing_game"] for m, b in zip(maps_pg, cases)]
one_map = [
    types.SimpleNamespace(saliency_map={"map": m}, layout=Layout.ONE_MAP_PER_IMAGE_GRAY)
    for m in maps_pg
]
evaluated = PointingGame().evaluate(one_map, [{"object": b} for b in cases])
result["evaluate_pointing_game"] = evaluated["pointing_game"]

np.savez(
    output_path,
    **{key: np.asarray(value) for key, value in result.items()},
    openvino_xai_version=np.str_(importlib.metadata.version("openvino_xai")),
    openvino_version=np.str_(ov.get_version()),
    inference_precision=np.str_(adcc.model_compiled.get_property("INFERENCE_PRECISION_HINT").to_string()),
)
"""


def smooth_maps(rng: np.random.Generator, count: int) -> np.ndarray:
    """(count, H, W) float32 maps in [0, 1]: a few Gaussian blobs, with no two pixels equal."""
    grid = np.arange(INPUT_SIZE, dtype=np.float64)
    maps: list[np.ndarray] = []
    while len(maps) < count:
        value = 0.01 * rng.random((INPUT_SIZE, INPUT_SIZE))
        for _ in range(3):
            row, column = rng.uniform(0, INPUT_SIZE, 2)
            sigma = rng.uniform(3, 8)
            blob = np.exp(-((grid[:, None] - row) ** 2 + (grid[None, :] - column) ** 2) / sigma**2)
            value += rng.uniform(0.3, 1.0) * blob
        value = ((value - value.min()) / (value.max() - value.min())).astype(np.float32)
        if np.unique(value).size == value.size:  # else float32 ties make the ranking ambiguous
            maps.append(value)
    return np.stack(maps)


def make_images(rng: np.random.Generator, count: int) -> np.ndarray:
    """(count, 3, H, W) float32 'normalised' images: a colour per image, a blob, noise."""
    shape = (count, 3, INPUT_SIZE, INPUT_SIZE)
    colour = rng.standard_normal((count, 3, 1, 1))
    blobs = rng.standard_normal((count, 3, 1, 1)) * smooth_maps(rng, count)[:, None]
    return (colour + 2 * blobs + 0.5 * rng.standard_normal(shape)).astype(np.float32)


def pointing_cases(rng: np.random.Generator, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maps and (case, x, y, w, h) boxes: the saliency maps, then maxima on and off borders."""
    cases: list[tuple[np.ndarray, list[tuple[int, int, int, int]]]] = []
    for i, saliency in enumerate(maps):
        row, column = np.unravel_index(int(saliency.argmax()), saliency.shape)
        around = (max(column - 3, 0), max(row - 2, 0), 5, 4)  # hit
        far = (0, 0, 7, 7) if row > 10 or column > 10 else (24, 24, 7, 7)  # miss
        cases.append((saliency, [around] if i % 2 == 0 else [far]))
    box = (5, 6, 10, 8)  # columns 5..15, rows 6..14
    crafted = [
        ([(14, 15)], [box]),  # bottom-right corner: hit
        ([(6, 5)], [box]),  # top-left corner: hit
        ([(14, 16)], [box]),  # one column right: miss
        ([(15, 10)], [box]),  # one row below: miss
        ([(5, 10)], [box]),  # one row above: miss
        ([(10, 4)], [box]),  # one column left: miss
        ([(0, 0), (14, 15)], [box]),  # tied maxima, one on the border: hit
        ([(0, 0), (31, 31)], [box]),  # tied maxima, both off: miss
        ([(31, 31)], [(28, 28, 10, 10)]),  # a box past the image: hit
        ([(25, 25)], [box, (20, 20, 5, 5)]),  # the second box's corner: hit
        ([(10, 10)], [(10, 10, 0, 0)]),  # a one-pixel box: hit
    ]
    backgrounds = smooth_maps(rng, len(crafted)) * 0.9
    for background, (peaks, boxes) in zip(backgrounds, crafted, strict=True):
        for row, column in peaks:
            background[row, column] = 1.0
        cases.append((background, boxes))
    pointing_maps = np.stack([saliency for saliency, _ in cases])
    boxes = [(i, *b) for i, (_, case_boxes) in enumerate(cases) for b in case_boxes]
    return pointing_maps, np.array(boxes, dtype=np.int64)


def main() -> None:
    """Build the data, run openvino_xai's metrics in its venv, save and summarise."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="openvino_xai venv")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="npz to write")
    args = parser.parse_args()

    rng = np.random.default_rng(DATA_SEED)
    images = make_images(rng, len(TARGETS))
    maps = smooth_maps(rng, len(TARGETS))
    pointing_maps, pointing_boxes = pointing_cases(rng, maps)
    data = {
        "images": images,
        "maps": maps,
        "targets": np.array(TARGETS, dtype=np.int64),
        "steps": np.int64(STEPS),
        "pointing_maps": pointing_maps,
        "pointing_boxes": pointing_boxes,
    }
    model = build_model()
    python = ensure_venv(args.venv.expanduser(), sys.executable)

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        export_onnx(model, torch.from_numpy(images[:1]), tmp / "tiny_cnn.onnx", "torchscript")
        np.savez(tmp / "data.npz", **data)
        subprocess.run(
            [python, "-c", OV_PROGRAM, tmp / "tiny_cnn.onnx", tmp / "data.npz", tmp / "ov.npz"],
            check=True,
        )
        with np.load(tmp / "ov.npz") as ov_out:
            theirs = {key: ov_out[key] for key in ov_out.files}

    with torch.no_grad():
        torch_logits = model(torch.from_numpy(images)).numpy()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.output,
        **data,
        **theirs,
        onnx_exporter=np.str_(f"torch.onnx.export torchscript, torch {torch.__version__}"),
        model_seed=np.int64(SEED),
        data_seed=np.int64(DATA_SEED),
    )

    print(f"wrote {args.output} ({args.output.stat().st_size / 1024:.0f} KiB)")
    print(f"  openvino_xai {theirs['openvino_xai_version']}, openvino {theirs['openvino_version']}")
    print(f"  precision {theirs['inference_precision']}")
    print(f"  vs torch: max |logits diff| {np.abs(theirs['logits'] - torch_logits).max():.2e}")
    chosen = theirs["probabilities"][np.arange(len(TARGETS)), TARGETS]
    print(f"  probabilities of the targets {chosen}")
    for key in ("insertion", "deletion", "adcc", "coherency", "complexity", "average_drop"):
        print(f"  {key:<13}{np.array2string(theirs[key], precision=4)}")
    print(f"  pointing game {theirs['pointing_game']}")


if __name__ == "__main__":
    main()
