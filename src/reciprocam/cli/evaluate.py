"""`reciprocam evaluate --data DIR`: the papers' metrics for several methods on a dataset."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
from pathlib import Path
from typing import Any

import torch

from ..errors import OptionError
from ..evaluation import (
    EvaluationSettings,
    GroundTruth,
    ResultStore,
    Sample,
    evaluate,
    read_dataset,
    summarize_rows,
    write_html,
    write_tables,
)
from ..evaluation.distributed import local_device, process_group
from ..evaluation.report import REPORT_FILE, table_cells
from ..files import writable_folder
from ..metrics import MetricOptions, metric_info, metric_names, resolve_metric_names
from ..metrics.causal import check_steps
from ..registry import canonical_name, methods
from ..registry import explainer as build_explainer
from ..zoo import LoadedModel, load_model
from .common import (
    add_image_size_option,
    add_model_options,
    add_run_options,
    device_from,
    method_option,
    non_negative_integer,
    positive_integer,
)


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "evaluate",
        help="score explanation methods with the papers' metrics on a dataset",
        description=(
            "Explain every image of a dataset with each method and score the maps (Average"
            " Drop, Increase in Confidence, Deletion, Insertion, Coherency, Complexity, ADCC,"
            " and with ground truth the pointing games). Results go into an SQLite database in"
            " --output as they are made; rerunning the same command resumes. At the end:"
            " summary.md/.csv/.json (a table like the papers') and report.html. Runs under"
            " 'torchrun --nproc_per_node N -m reciprocam evaluate ...' with a shard per process."
        ),
    )
    parser.add_argument(
        "--data",
        required=True,
        type=Path,
        metavar="PATH",
        help="a folder of class folders (ImageFolder), a flat folder of images, or a text file"
        " listing 'PATH [LABEL]' lines",
    )
    add_model_options(parser)
    parser.add_argument(
        "--methods",
        default="reciprocam",
        metavar="LIST",
        help="comma-separated methods, or 'all' (default: reciprocam); one of "
        + ", ".join(methods()),
    )
    parser.add_argument(
        "--method-option",
        dest="method_options",
        action="append",
        type=method_option,
        default=[],
        metavar="METHOD.NAME=VALUE",
        help="an option of one method, e.g. rise.masks=1000 or reciprocam.mask=gaussian"
        " (repeatable; the value is read as JSON, else as text)",
    )
    parser.add_argument(
        "--metrics",
        default="all",
        metavar="LIST",
        help="comma-separated metrics, 'paper' (the papers' table) or 'all' (default: every"
        f" metric the data allows); one of {', '.join(metric_names())}",
    )
    parser.add_argument(
        "--target",
        choices=("prediction", "label"),
        default="prediction",
        help="the class each map explains and the metrics score: the top-1 prediction"
        " (default, as Poppi et al.) or the dataset's label",
    )
    parser.add_argument(
        "--task",
        choices=("classification", "segmentation"),
        default="classification",
        help="classification (default), or segmentation: --masks holds label images (pixel ="
        " class index, 0 background, 255 void) and each class an image shows is explained over"
        " its ground-truth region, which the metrics score (e.g. --model shapes_segmenter)",
    )
    truth = parser.add_mutually_exclusive_group()
    truth.add_argument(
        "--boxes",
        type=Path,
        metavar="FILE",
        help="JSON ground-truth boxes for the pointing games:"
        ' {"IMAGE": [[x_min, y_min, x_max, y_max], ...]} or {"IMAGE": {"CLASS": [...]}}',
    )
    truth.add_argument(
        "--masks",
        type=Path,
        metavar="DIR",
        help="a folder of ground-truth masks for the pointing games (same relative paths)",
    )
    add_run_options(parser, output="reciprocam-evaluation")
    causal = parser.add_mutually_exclusive_group()
    causal.add_argument(
        "--step",
        type=positive_integer,
        metavar="PIXELS",
        help="deletion/insertion: pixels changed per step (default: the image width, RISE's"
        " 224 at 224x224)",
    )
    causal.add_argument(
        "--steps",
        type=positive_integer,
        metavar="N",
        help="deletion/insertion: the number of steps instead (openvino_xai's schedule)",
    )
    parser.add_argument(
        "--substrate",
        choices=("zeros", "blur"),
        default="zeros",
        help="deletion: what removed pixels become (default: zeros, the mean colour)",
    )
    parser.add_argument(
        "--start",
        choices=("blur", "zeros"),
        default="blur",
        help="insertion: the starting image (default: blur, RISE's 11x11 sigma-5 kernel)",
    )
    parser.add_argument(
        "--tolerance",
        type=non_negative_integer,
        default=0,
        metavar="PIXELS",
        help="pointing game: how far from the object a hit may be (default: 0; Zhang et al. 15)",
    )
    add_image_size_option(parser)
    parser.add_argument(
        "--batch-size",
        type=positive_integer,
        default=1,
        metavar="N",
        help="images explained together (default: 1, so time per image is per image)",
    )
    parser.add_argument(
        "--metric-batch-size",
        type=positive_integer,
        default=32,
        metavar="N",
        help="images per forward pass inside the metrics (default: 32)",
    )
    parser.add_argument(
        "--report-images",
        type=int,
        default=8,
        metavar="N",
        help="how many images the report shows with every method's map (default: 8)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of a random-weight model, the same in every process (default: 0)",
    )
    parser.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    writable_folder(arguments.output)  # before the model loads: a read-only --output fails fast
    device = local_device(device_from(arguments))
    with process_group(device) as shard:
        torch.manual_seed(arguments.seed)
        loaded = _load(arguments)
        crop = loaded.preprocessing.crop
        check_steps(arguments.steps, crop, crop)  # before any image is explained
        samples = read_dataset(arguments.data, loaded.categories)
        ground_truth = _ground_truth(arguments, loaded, samples)
        if arguments.task == "segmentation":
            assert ground_truth is not None
            samples = ground_truth.class_samples(samples, len(loaded.categories))
            if not samples:
                raise OptionError(
                    f"no mask in {arguments.masks} shows a class other than the background (0)"
                )
        chosen = _methods(arguments.methods)
        method_options = _method_options(arguments.method_options, chosen, loaded)
        settings = EvaluationSettings(
            methods=chosen,
            metrics=tuple(_metrics(arguments.metrics, ground_truth is not None)),
            options=MetricOptions(
                batch_size=arguments.metric_batch_size,
                step=arguments.step,
                steps=arguments.steps,
                substrate=arguments.substrate,
                start=arguments.start,
                tolerance=arguments.tolerance,
            ),
            method_options=method_options,
            target=arguments.target,
            task=arguments.task,
            batch_size=arguments.batch_size,
            report_images=arguments.report_images,
            model=_model_identity(arguments, loaded),
        )
        if settings.target == "label" and all(sample.label is None for sample in samples):
            raise OptionError(
                f"--target label needs labels, and {arguments.data} has none"
                " (use class folders or a list with labels)"
            )
        identity = {**settings.identity(), "data": str(arguments.data.resolve())}
        if shard.is_main:
            ResultStore(arguments.output).claim(identity)
        shard.wait_for_all()
        store = ResultStore(arguments.output)
        store.claim(identity)
        total = len(samples) * len(chosen)
        saved = len(store.done())
        if saved and shard.is_main:
            print(
                f"resuming: {saved} of {total} explanations are already in {arguments.output};"
                " evaluating the rest",
                file=sys.stderr,
            )
        try:
            evaluate(
                samples,
                loaded,
                settings,
                store,
                device=device,
                shard=shard,
                ground_truth=ground_truth,
                progress=not arguments.no_progress,
            )
        except KeyboardInterrupt:
            if shard.is_main:
                print(
                    f"{len(store.done())} of {total} explanations are saved in"
                    f" {arguments.output}; rerun the same command to resume",
                    file=sys.stderr,
                )
            store.close()  # a clean close leaves no -wal and -shm files beside the database
            raise
        shard.wait_for_all()
        if shard.is_main:
            _report(arguments.output, store, settings, samples, loaded, identity)
        store.close()
    return 0


def _load(arguments: argparse.Namespace) -> LoadedModel:
    loaded = load_model(arguments.model, weights=arguments.weights, checkpoint=arguments.checkpoint)
    if not loaded.pretrained:
        print(
            f"note: {loaded.name} has random weights (seed {arguments.seed}); pass --weights or"
            " --checkpoint to evaluate a trained model",
            file=sys.stderr,
        )
    preprocessing = loaded.preprocessing.at_size(arguments.image_size)
    return dataclasses.replace(loaded, preprocessing=preprocessing)


def _ground_truth(
    arguments: argparse.Namespace, loaded: LoadedModel, samples: list[Sample]
) -> GroundTruth | None:
    if arguments.task == "segmentation":
        if arguments.masks is None:
            raise OptionError("--task segmentation needs --masks DIR, a label image per image")
        if arguments.target != "prediction":
            raise OptionError("--target does not apply to segmentation: the masks give the classes")
        return GroundTruth.mask_folder(arguments.masks, labelled=True)
    if arguments.masks is not None:
        return GroundTruth.mask_folder(arguments.masks)
    if arguments.boxes is None:
        return None
    truth = GroundTruth.read_boxes(arguments.boxes, loaded.categories)
    keys = {sample.key for sample in samples}
    if truth.boxes is not None and not keys & set(truth.boxes):
        raise OptionError(
            f"no image of {arguments.data} has boxes in {arguments.boxes}; its keys must be"
            f" paths relative to --data, such as '{samples[0].key}'"
        )
    if truth.boxes is not None:
        unknown = sorted(set(truth.boxes) - keys)
        if unknown:
            print(
                f"note: {len(unknown)} of the {len(truth.boxes)} images in {arguments.boxes} are"
                f" not in {arguments.data} (such as '{unknown[0]}') and are ignored; the pointing"
                f" games are measured on the {len(keys & set(truth.boxes))} that are",
                file=sys.stderr,
            )
    return truth


def _methods(text: str) -> tuple[str, ...]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if [name.lower() for name in names] == ["all"]:
        # "reciprocam" is ViT-ReciproCAM on a transformer, so the ViT name is not repeated.
        return tuple(name for name in methods() if name != "vit-reciprocam")
    if not names:
        raise OptionError("--methods is empty; name at least one method, or 'all'")
    chosen = [canonical_name(name) for name in names]
    return tuple(dict.fromkeys(chosen))


def _method_options(
    given: list[tuple[str, str, object]], chosen: tuple[str, ...], loaded: LoadedModel
) -> dict[str, dict[str, Any]]:
    """--method-option values by method, checked by building each explainer once, so that a
    mistake is reported before the database records the run."""
    options: dict[str, dict[str, Any]] = {}
    for method, name, value in given:
        if method not in chosen:
            raise OptionError(
                f"--method-option {method}.{name}: {method} is not among --methods"
                f" ({', '.join(chosen)})"
            )
        options.setdefault(method, {})[name] = value
    for method, values in options.items():
        build_explainer(method, loaded.model, **values).close()
    return options


def _metrics(text: str, has_ground_truth: bool) -> list[str]:
    chosen = resolve_metric_names(text)
    needing = [name for name in chosen if metric_info(name).needs_ground_truth]
    if needing and not has_ground_truth:
        if "all" in text.lower().replace(" ", "").split(","):
            print(
                f"note: without --boxes or --masks, {' and '.join(needing)} are left out",
                file=sys.stderr,
            )
            return [name for name in chosen if name not in needing]
        raise OptionError(f"{needing[0]} needs ground truth; give --boxes FILE or --masks DIR")
    return chosen


def _model_identity(arguments: argparse.Namespace, loaded: LoadedModel) -> dict[str, Any]:
    identity: dict[str, Any] = {
        "name": loaded.name,
        "weights": arguments.weights,
        "input": loaded.preprocessing.crop,
    }
    if arguments.checkpoint is not None:
        digest = hashlib.sha256(arguments.checkpoint.read_bytes()).hexdigest()
        identity["checkpoint"] = digest[:16]
    elif not loaded.pretrained:
        identity["seed"] = arguments.seed
    return identity


def _report(
    output: Path,
    store: ResultStore,
    settings: EvaluationSettings,
    samples: list[Sample],
    loaded: LoadedModel,
    identity: dict[str, Any],
) -> None:
    rows = store.rows()
    skipped = store.skipped()
    summaries = summarize_rows(rows, settings.methods)
    write_tables(output, summaries, settings.metrics, identity)
    write_html(
        output,
        summaries,
        settings.metrics,
        rows,
        samples,
        loaded.preprocessing,
        identity,
        skipped,
    )
    header, body = table_cells(summaries, settings.metrics)
    print(" | ".join(header))
    for row in body:
        print(" | ".join(text for text, _ in row))
    for image, reason in skipped.items():
        print(f"skipped {image}: {reason}", file=sys.stderr)
    images = len({row.image for row in rows})
    print(
        f"evaluated {images} of {len(samples)} images with {len(settings.methods)} method(s)"
        + (f"; {len(skipped)} skipped (listed in the report)" if skipped else "")
        + f"; report: {output / REPORT_FILE}"
    )
