"""`reciprocam evaluate`'s run: explain every image of the dataset with each method, score the
maps into the result database, and write the summary tables and the report."""

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
from ..metrics import MetricOptions, metric_info, resolve_metric_names
from ..metrics.causal import check_steps
from ..names import canonical_name
from ..registry import explainer as build_explainer
from ..registry import methods
from ..zoo import LoadedModel, load_model
from .common import device_from


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
