"""Evaluating methods on a dataset: explain each batch, measure it, store the rows.

Images are taken in batches; each method explains the batch, a `MetricSuite` measures its
maps, and the rows go to the `ResultStore` at once. Pairs (image, method) already stored are
not redone, so a rerun resumes. Under torchrun each rank works on its own shard of images.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from ..errors import ImageError
from ..explainer import Explainer, Explanation
from ..images import load_image
from ..metrics import MetricOptions, MetricSuite
from ..registry import explainer as build_explainer
from ..registry import method_for
from ..targets import Region, TargetSpec
from ..zoo import LoadedModel
from .dataset import GroundTruth, Sample
from .distributed import Shard
from .store import ResultRow, ResultStore


@dataclass(frozen=True)
class EvaluationSettings:
    """What to run and how.

    methods / metrics: canonical names. options: the metrics' settings. method_options: keyword
    options per method, e.g. {"rise": {"masks": 1000}}. target: "prediction"
    (each image's top-1, Poppi et al.) or "label" (the dataset's). task: "classification", or
    "segmentation": each sample is a class of an image and its map explains the class's
    ground-truth region (`Region`), which the metrics score and point at. batch_size: images per
    explanation. report_images: how many images (the first ones) keep their maps for the
    report. model: what identifies the model (name, weights, checkpoint digest, input size).
    """

    methods: tuple[str, ...]
    metrics: tuple[str, ...]
    options: MetricOptions = field(default_factory=MetricOptions)
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    target: str = "prediction"
    task: str = "classification"
    batch_size: int = 1
    report_images: int = 8
    model: dict[str, Any] = field(default_factory=dict)

    def identity(self) -> dict[str, Any]:
        """The settings that decide the results (batch sizes and the report's do not)."""
        settings = asdict(self)
        for name in ("batch_size", "report_images"):
            del settings[name]
        del settings["options"]["batch_size"]
        return settings


def evaluate(
    samples: Sequence[Sample],
    loaded: LoadedModel,
    settings: EvaluationSettings,
    store: ResultStore,
    *,
    device: torch.device,
    shard: Shard,
    ground_truth: GroundTruth | None = None,
    progress: bool = True,
) -> None:
    """Evaluate this shard's images that have no stored rows yet."""
    model = loaded.model.to(device)
    shown = {sample.key for sample in samples[: settings.report_images]}
    done = store.done()
    todo = [
        sample
        for sample in shard.take(samples)
        if any((sample.key, method) not in done for method in settings.methods)
    ]
    with ExitStack() as stack:
        explainers = {
            name: stack.enter_context(
                build_explainer(
                    method_for(name, model), model, **settings.method_options.get(name, {})
                )
            )
            for name in settings.methods
        }
        suites = {
            name: MetricSuite(settings.metrics, explainer=explainer, options=settings.options)
            for name, explainer in explainers.items()
        }
        bar = stack.enter_context(
            tqdm(
                total=len(todo) * len(settings.methods),
                unit="explanation",
                desc=f"rank {shard.rank}" if shard.world > 1 else "evaluating",
                disable=None if progress and shard.is_main else True,
            )
        )
        warm: set[str] = set()  # explainers whose first, untimed call has run
        for start in range(0, len(todo), settings.batch_size):
            chunk = todo[start : start + settings.batch_size]
            images, kept, sizes, failed = _load(chunk, loaded, settings)
            store.write([], failed)
            for name in settings.methods:
                pending = [i for i, sample in enumerate(kept) if (sample.key, name) not in done]
                if pending:
                    rows = _evaluate_method(
                        name,
                        explainers[name],
                        suites[name],
                        [kept[i] for i in pending],
                        [sizes[i] for i in pending],
                        images[pending].to(device),
                        loaded,
                        settings,
                        ground_truth,
                        shown,
                        warm_up=name not in warm,
                    )
                    warm.add(name)
                    store.write(rows)
                bar.update(len(chunk))


def _load(
    chunk: Sequence[Sample], loaded: LoadedModel, settings: EvaluationSettings
) -> tuple[Tensor, list[Sample], list[tuple[int, int]], dict[str, str]]:
    """The batch's preprocessed images, the samples they are, their photos' (width, height),
    and why the others were not read."""
    tensors, kept, sizes, failed = [], [], [], {}
    for sample in chunk:
        if settings.target == "label" and sample.label is None:
            failed[sample.key] = "no label (--target label needs one for every image)"
            continue
        try:
            image = load_image(sample.path)
        except ImageError as error:
            failed[sample.key] = str(error)
            continue
        tensors.append(loaded.preprocessing(image)[0])
        kept.append(sample)
        sizes.append(image.size)
    images = torch.stack(tensors) if tensors else torch.zeros(0)
    return images, kept, sizes, failed


def _evaluate_method(
    name: str,
    explainer: Explainer,
    suite: MetricSuite,
    samples: Sequence[Sample],
    sizes: Sequence[tuple[int, int]],
    images: Tensor,
    loaded: LoadedModel,
    settings: EvaluationSettings,
    ground_truth: GroundTruth | None,
    shown: set[str],
    *,
    warm_up: bool,
) -> list[ResultRow]:
    labels = [sample.label for sample in samples]
    targets: TargetSpec = labels if settings.target == "label" else None
    first: TargetSpec = None if targets is None else labels[:1]
    regions = None
    if settings.task == "segmentation":
        classes = [int(label or 0) for label in labels]  # a class sample always has its label
        found = _ground_truth_masks(samples, sizes, classes, loaded, ground_truth, images.shape[-1])
        regions = found.to(images.device)
        targets = Region(classes, region=regions)
        first = Region(classes[:1], region=regions[:1])
    if warm_up:  # the first call resolves the layers and warms the kernels: not timed
        explainer.explain(images[:1], first)
    explanation, seconds = _timed_explanation(explainer, images, targets)
    chosen = explanation.targets.tolist()
    truth = regions
    if suite.needs_ground_truth and truth is None:
        truth = _ground_truth_masks(samples, sizes, chosen, loaded, ground_truth, images.shape[-1])
        truth = truth.to(images.device)
    suite.reset()
    values = suite.update(
        images, explanation.maps, explanation.target, truth, score=explanation.scale
    )
    deletion, insertion = suite.curves("deletion"), suite.curves("insertion")
    probabilities = explanation.target_probabilities[:, 0].float().cpu()
    predictions = explanation.predictions
    if regions is not None:  # a region's prediction: the class most of its pixels get
        predictions = torch.stack(
            [p[r].mode().values for p, r in zip(predictions, regions, strict=True)]
        )
    rows = []
    for index, sample in enumerate(samples):
        metrics = {
            metric: None if np.isnan(float(column[index])) else float(column[index])
            for metric, column in values.items()
        }
        saliency = explanation.maps[index].float().cpu().numpy()
        rows.append(
            ResultRow(
                image=sample.key,
                method=name,
                label=sample.label,
                target=chosen[index],
                prediction=int(predictions[index]),
                probability=float(probabilities[index]),
                seconds=seconds / len(samples),
                metrics=metrics,
                deletion_curve=None if deletion is None else deletion[index].numpy(),
                insertion_curve=None if insertion is None else insertion[index].numpy(),
                saliency=np.rint(saliency * 255).astype(np.uint8) if sample.key in shown else None,
            )
        )
    return rows


def _timed_explanation(
    explainer: Explainer, images: Tensor, targets: TargetSpec
) -> tuple[Explanation, float]:
    on_gpu = images.device.type == "cuda"
    if on_gpu:
        torch.cuda.synchronize(images.device)
    began = time.perf_counter()
    explanation = explainer.explain(images, targets)
    if on_gpu:
        torch.cuda.synchronize(images.device)
    return explanation, time.perf_counter() - began


def _ground_truth_masks(
    samples: Sequence[Sample],
    sizes: Sequence[tuple[int, int]],
    targets: Sequence[int],
    loaded: LoadedModel,
    ground_truth: GroundTruth | None,
    size: int,
) -> Tensor:
    """(B, H, W) objects of each image's target (all False where it has none)."""
    masks = torch.zeros(len(samples), size, size, dtype=torch.bool)
    if ground_truth is None:
        return masks
    for index, (sample, photo, target) in enumerate(zip(samples, sizes, targets, strict=True)):
        mask = ground_truth.mask(sample, photo, target, loaded.preprocessing)
        if mask is not None:
            masks[index] = mask
    return masks
