"""Every classifier a user brings, explained with no option: torchvision, timm and Hugging Face.

    python benchmarks/bench_zoo.py [--source torchvision|timm|hf] [--only NAME ...] [--again]

For every torchvision classifier, one small model of every timm family (timm's model modules)
and every Hugging Face `*ForImageClassification` architecture (its default configuration cut to
two layers, or one block a stage, where that still runs), with random weights whose BatchNorm
statistics come from a few train-mode passes on random images:

- `reciprocam.explainer("reciprocam", model)` with no option (ViT-ReciproCAM on a ViT) explains
  one image, or refuses with a one-line ReciproCAMError;
- the map's scores are compared with the definition computed here, independently of the
  library: the chosen layer's output masked by hand in its own layout (for a ViT, the last
  block's LayerNorm output, skip unmasked) and run through the rest of the model;
- the explanation and a plain inference are timed side by side at batch 1 (medians of 3).

Results go to benchmarks/results/zoo.jsonl, one line a model, so a rerun resumes; a model that
was started but has no result (the process died) is recorded as failed; `--again` runs the
chosen models even if they have a result (the newest line counts). `--summary` prints the
summary in docs/zoo.md from the file.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

RESULTS = Path(__file__).parent / "results" / "zoo.jsonl"
STARTED = RESULTS.with_suffix(".started")
SECONDS = 120  # per model; a slower one is recorded as skipped
MAX_PARAMETERS = 2_000_000_000 // 4 * 4  # 8 GB of float32 weights
_G3 = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16


class Timeout(BaseException):  # not an Exception: the probes catch those
    pass


def torchvision_models() -> list[tuple[str, str]]:
    import torchvision

    return [("torchvision", n) for n in torchvision.models.list_models(module=torchvision.models)]


# Size words in timm's names, smallest first; a name part that starts with one ("xxs24",
# "s12") counts. Names with none rank after all of them.
_SIZE_WORDS = [
    "atto", "femto", "pico", "nano", "micro", "xxxs", "xxs", "tiny", "ti", "xs", "mini",
    "small", "s", "t", "m", "base", "b", "l",
]  # fmt: skip


def _smallness(name: str) -> tuple[int, int, str]:
    parts = name.split(".")[0].split("_")
    ranks = [
        index
        for part in parts
        for index, word in enumerate(_SIZE_WORDS)
        if part.startswith(word) and (len(part) == len(word) or part[len(word)].isdigit())
    ]
    return (min(ranks, default=len(_SIZE_WORDS)), len(name), name)


def timm_models() -> list[tuple[str, str]]:
    import timm

    chosen = []
    for module in sorted(timm.list_modules()):
        names = timm.list_models(module=module)
        if names:
            chosen.append(("timm", min(names, key=_smallness)))
    return chosen


def hf_models() -> list[tuple[str, str]]:
    import transformers

    names = [n for n in dir(transformers) if n.endswith("ForImageClassification")]
    skip = ("TimmWrapper", "Auto")  # a timm model inside (covered above); a factory
    return [("hf", n) for n in sorted(names) if not n.startswith(skip)]


def build(source: str, name: str, shallow: bool = True) -> tuple[nn.Module, tuple[int, int]]:
    if source == "torchvision":
        import torchvision

        model = torchvision.models.get_model(name, num_classes=10)
        size = 299 if name == "inception_v3" else 224
        return model, (size, size)
    if source == "timm":
        import timm

        model = timm.create_model(name, pretrained=False, num_classes=10)
        _, height, width = model.pretrained_cfg.get("input_size", (3, 224, 224))
        return model, (height, width)
    import transformers

    model_class = getattr(transformers, name)
    config = model_class.config_class(num_labels=10)
    for attribute, value in (("num_hidden_layers", 2), ("num_layers", 2)) if shallow else ():
        if isinstance(getattr(config, attribute, None), int):
            setattr(config, attribute, min(getattr(config, attribute), value))
    for attribute in ("depths", "num_hidden_layers_per_stage") if shallow else ():
        depths = getattr(config, attribute, None)
        if isinstance(depths, list) and all(isinstance(d, int) for d in depths):
            setattr(config, attribute, [1] * len(depths))
    model = model_class(config)
    size = getattr(config, "image_size", 224)
    size = size if isinstance(size, int) else int(size[0])
    return model, (size, size)


def calibrate(model: nn.Module, size: tuple[int, int]) -> None:
    """BatchNorm statistics from random images, so the random model's output is not flat."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    model.eval()
    if not norms:
        return
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the passes
    model.train()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 3, *size, generator=generator))
    model.eval()


def logits_of(output: object) -> Tensor:
    logits = getattr(output, "logits", output)
    if not isinstance(logits, Tensor):
        raise TypeError(f"it returns {type(output).__name__}, which holds no logits")
    return logits


def masks(height: int, width: int, gaussian: bool) -> Tensor:
    """(K, H, W): row k one-hot at k, or the clipped 3x3 Gaussian centred at k."""
    eye = torch.eye(height * width).view(-1, 1, height, width)
    return (F.conv2d(eye, _G3.view(1, 1, 3, 3), padding=1) if gaussian else eye)[:, 0]


def cnn_definition(model: nn.Module, x: Tensor, cam: object) -> Tensor:
    """(N, h, w) softmax scores with the layer's output masked by hand in its own layout, the
    copies a chunk of positions at a time (at most 1 GB of them, or 32 where the rest of the
    model takes only the input's batch size and each copy has its own copy of the input)."""
    layer = cam.target_layer  # type: ignore[attr-defined]
    layout = layer.layout
    height, width = layout.grid
    m = masks(height, width, cam.mask == "gaussian")  # type: ignore[attr-defined]
    chunk: list[Tensor] = []
    calls = [0]

    def replace(module: nn.Module, inputs: object, output: object) -> object:
        calls[0] += 1
        if calls[0] - 1 != layer.call:
            return None
        if isinstance(output, tuple):  # a Hugging Face layer's (hidden_states, ...)
            return (masked(output[0]), *output[1:])
        return masked(output)

    def masked(output: Tensor) -> Tensor:
        out, part = output[0], chunk[0]
        if layout.kind == "channels_first":  # (C, H, W): keep F[:, k] where the mask is
            centre = out.flatten(1).T[positions]  # (n, C)
            return centre[:, :, None, None] * part[:, None]
        if layout.kind == "channels_last":  # (H, W, C)
            centre = out.flatten(0, 1)[positions]  # (n, C)
            return part[:, :, :, None] * centre[:, None, None, :]
        prefix, grid = out[: layout.prefix], out[layout.prefix :]  # tokens (N, C)
        spread = part.flatten(1)[:, :, None] * grid[positions][:, None, :]  # M[k, p] * F[k]
        return torch.cat([prefix.expand(len(part), *prefix.shape), spread], dim=1)

    per_copy = max(1, 2**30 // (output_size(layout) * 4))
    if layer.copies_from_input:
        per_copy = min(per_copy, 32)
    scores = []
    handle = layer.module.register_forward_hook(replace)
    try:
        for start in range(0, len(m), per_copy):
            positions = torch.arange(start, min(start + per_copy, len(m)))
            chunk[:] = [m[positions]]
            calls[0] = 0
            inputs = x.expand(len(positions), *x.shape[1:]) if layer.copies_from_input else x
            with torch.inference_mode():
                scores.append(logits_of(model(inputs)).softmax(dim=1))
    finally:
        handle.remove()
    return torch.cat(scores).T.reshape(-1, height, width)


def output_size(layout: object) -> int:
    """Elements of one image's output of a layer in `layout`."""
    return int(math.prod(layout.shape(1)))  # type: ignore[attr-defined]


def vit_definition(model: nn.Module, x: Tensor, cam: object) -> Tensor:
    """(N, h, w): ViT-ReciproCAM's definition with hooks on the model's own block."""
    vit = cam.layout  # type: ignore[attr-defined]
    block = vit.blocks[cam.block]  # type: ignore[attr-defined]
    norm1 = vit.norm1(cam.block)  # type: ignore[attr-defined]
    grid = cam.grid  # type: ignore[attr-defined]
    height, width = grid.grid
    weights = masks(height, width, cam.mask == "gaussian").flatten(1)  # type: ignore[attr-defined]
    weights = torch.cat([torch.ones(len(weights), grid.prefix), weights], dim=1)[:, :, None]

    def before(module: nn.Module, args: tuple, kwargs: dict) -> tuple:
        tokens = args[0] if args else kwargs["hidden_states"]
        copies = tokens.expand(len(weights), *tokens.shape[1:])
        if args:
            return (copies, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": copies}

    def after(module: nn.Module, inputs: object, output: Tensor) -> Tensor:
        return output * weights

    handles = [
        block.register_forward_pre_hook(before, with_kwargs=True),
        norm1.register_forward_hook(after),
    ]
    try:
        with torch.inference_mode():
            scores = logits_of(model(x)).softmax(dim=1)
    finally:
        for handle in handles:
            handle.remove()
    return scores.T.reshape(-1, height, width)


def median_seconds(function, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_one(source: str, name: str) -> dict[str, object]:
    import reciprocam
    from reciprocam.errors import ReciproCAMError

    row: dict[str, object] = {"source": source, "model": name}
    try:
        model, size = build(source, name)
    except Exception as error:
        return {**row, "status": "not built", "reason": _line(error)}
    parameters = sum(p.numel() for p in model.parameters())
    row["parameters"] = parameters
    if parameters > MAX_PARAMETERS:
        return {**row, "status": "skipped", "reason": "over 8 GB of weights"}
    calibrate(model, size)
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
    try:
        with torch.inference_mode():
            logits_of(model(x))
    except Exception:
        if source == "hf":  # a configuration the cut made inconsistent: the default one
            model, size = build(source, name, shallow=False)
            calibrate(model, size)
            x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
    try:
        with torch.inference_mode():
            logits_of(model(x))
    except Exception as error:
        return {
            **row,
            "status": "not built",
            "reason": f"the model fails on itself: {_line(error)}",
        }
    try:
        cam = reciprocam.explainer("reciprocam", model)
        explanation = cam.explain(x)
    except ReciproCAMError as error:
        return {**row, "status": "refused", "reason": str(error)}
    except Timeout:
        raise
    except Exception as error:
        return {
            **row,
            "status": "failed",
            "reason": _line(error),
            "trace": traceback.format_exc()[-800:],
        }
    layer = cam.target_layer
    row.update(
        status="explained",
        method=type(cam).__name__,
        layer=str(layer),
        layout=str(layer.layout),
        grid="x".join(map(str, explanation.scores.shape[2:])),
        fast_path=any(
            getattr(cam, name, False)
            for name in ("uses_gap_shortcut", "uses_flatten_shortcut", "uses_fast_path")
        ),
    )
    definition = (vit_definition if row["method"] == "ViTReciproCAM" else cnn_definition)(
        model, x, cam
    )
    scores = explanation.scores[0]
    row["max_difference"] = float((scores - definition).abs().max())
    row["grid_follows_input"] = all(g <= s for g, s in zip(scores.shape[1:], size, strict=True))
    with torch.inference_mode():
        inference = median_seconds(lambda: model(x))
    explain = median_seconds(lambda: cam.explain(x))
    row.update(inference_s=inference, explain_s=explain, ratio=explain / inference)
    return row


def _line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"[:300]


def _alarm(signum: int, frame: object) -> None:
    raise Timeout


def done_rows() -> dict[tuple[str, str], dict[str, object]]:
    if not RESULTS.exists():
        return {}
    rows = [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]
    return {(r["source"], r["model"]): r for r in rows}


def record(row: dict[str, object]) -> None:
    with RESULTS.open("a") as file:
        file.write(json.dumps(row) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=["torchvision", "timm", "hf"], action="append")
    parser.add_argument("--only", nargs="*", help="model names to run")
    parser.add_argument("--again", action="store_true", help="rerun models that have a result")
    parser.add_argument("--summary", action="store_true")
    args = parser.parse_args()
    if args.summary:
        summary(done_rows())
        return
    torch.set_num_threads(2)
    RESULTS.parent.mkdir(exist_ok=True)
    lists = {"torchvision": torchvision_models, "timm": timm_models, "hf": hf_models}
    models = [m for s in (args.source or list(lists)) for m in lists[s]()]
    if args.only:
        models = [m for m in models if m[1] in args.only]
    done = done_rows()
    if STARTED.exists():
        source, name = STARTED.read_text().split("\t")
        if (source, name) not in done:
            record(
                {"source": source, "model": name, "status": "failed", "reason": "the process died"}
            )
            done = done_rows()
    signal.signal(signal.SIGALRM, _alarm)
    for source, name in models:
        if (source, name) in done and not args.again:
            continue
        STARTED.write_text(f"{source}\t{name}")
        start = time.perf_counter()
        signal.alarm(SECONDS)
        try:
            row = run_one(source, name)
        except Timeout:
            row = {
                "source": source,
                "model": name,
                "status": "skipped",
                "reason": f"over {SECONDS} s",
            }
        finally:
            signal.alarm(0)
        row["seconds"] = round(time.perf_counter() - start, 1)
        record(row)
        print(json.dumps({k: v for k, v in row.items() if k != "trace"}), flush=True)
    STARTED.unlink(missing_ok=True)


def summary(rows: dict[tuple[str, str], dict[str, object]]) -> None:
    """The summary of docs/zoo.md: counts, ratios, differences, refusals, and the layer table."""
    print(
        "| source | models | explained | refused | failed | not built | skipped |"
        " ratio median (quartiles) | largest difference from the definition |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for source in ("torchvision", "timm", "hf"):
        group = [r for r in rows.values() if r["source"] == source]
        count = {s: sum(r["status"] == s for r in group) for s in _STATUSES}
        ratios = sorted(float(r["ratio"]) for r in group if "ratio" in r)
        if not ratios:
            continue
        spread = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        worst = max((float(r.get("max_difference", 0)) for r in group), default=math.nan)
        print(
            f"| {source} | {len(group)} | {count['explained']} | {count['refused']} |"
            f" {count['failed']} | {count['not built']} | {count['skipped']} |"
            f" {statistics.median(ratios):.2f}x ({spread[0]:.2f}-{spread[2]:.2f}) | {worst:.1e} |"
        )
    ratios = sorted(float(r["ratio"]) for r in rows.values() if "ratio" in r)
    print(
        f"\nAll explained models: median ratio {statistics.median(ratios):.2f}x;"
        f" {sum(r <= 1.3 for r in ratios)} of {len(ratios)} at or below 1.3x,"
        f" {sum(r > 5 for r in ratios)} above 5x.\n"
    )
    print("Above 5x:\n")
    for r in sorted(rows.values(), key=lambda r: -float(r.get("ratio", 0))):
        if float(r.get("ratio", 0)) > 5:
            print(
                f"- {r['source']} `{r['model']}`: {float(r['ratio']):.1f}x, {r['method']} at"
                f" `{r['layer']}` ({r['layout']})"
            )
    print("\nNot explained:\n")
    for r in rows.values():
        if r["status"] != "explained":
            print(f"- {r['source']} `{r['model']}` ({r['status']}): {r.get('reason', '')}")
    print("\n| source | model | method | layer | layout | ratio |")
    print("|---|---|---|---|---|---|")
    for r in rows.values():
        if r["status"] == "explained":
            print(
                f"| {r['source']} | {r['model']} | {r['method']} | `{r['layer']}` |"
                f" {r['layout']} | {float(r['ratio']):.2f}x |"
            )


_STATUSES = ("explained", "refused", "failed", "not built", "skipped")


if __name__ == "__main__":
    sys.exit(main())
