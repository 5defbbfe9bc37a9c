"""`reciprocam explain IMAGE...` on photos: an overlay PNG and a .npy map per image, and the
top classes, from a PyTorch model or an explainable ONNX file."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from ..errors import OptionError
from ..explainer import Explainer
from ..files import make_folder, writable_folder
from ..images import find_images, load_image
from ..onnx import OnnxExplainer
from ..photos import SkippedPhoto, explain_photos
from ..targets import Region, TargetSpec
from ..zoo import IMAGENET_CATEGORIES, Preprocessing, load_model
from .common import (
    chosen_classes,
    classification_target,
    device_from,
    method_explainer,
    note_if_random,
    one_input,
    report,
)


def run(arguments: argparse.Namespace, sources: Sequence[Path]) -> int:
    """Explain the photos (the options checked by `explain.run`)."""
    paths = find_images(sources)
    writable_folder(arguments.output)  # before loading the model, so a bad --output fails fast
    device = device_from(arguments)
    explainer, preprocessing, categories = (
        _onnx_explainer(arguments, device)
        if arguments.onnx is not None
        else _torch_explainer(arguments, device)
    )
    target = _target(arguments, categories, preprocessing)
    make_folder(arguments.output)
    skipped = 0
    with explainer:
        results = explain_photos(
            paths,
            explainer,
            arguments.output,
            preprocessing=preprocessing,
            categories=categories,
            method=arguments.method,
            device=device,
            target=target,
            top=arguments.top or 5,
            colormap=arguments.colormap,
            alpha=arguments.alpha,
        )
        for result in report(results, len(paths), progress=not arguments.no_progress):
            skipped += isinstance(result, SkippedPhoto)
        layer = f" on layer '{explainer.target_layer}'" if explainer.target_layer else ""
    print(
        f"explained {len(paths) - skipped} of {len(paths)} images with {arguments.method}{layer}"
        f" into {arguments.output}" + (f"; {skipped} skipped" if skipped else "")
    )
    return 1 if skipped else 0


def _target(
    arguments: argparse.Namespace, categories: Sequence[str], preprocessing: Preprocessing
) -> TargetSpec:
    """What each image's maps explain, from --class, --top, --task and --region."""
    classes = chosen_classes(arguments, categories)
    if arguments.task == "classification":
        if arguments.region is not None:
            raise OptionError("--region applies to --task segmentation")
        return classification_target(arguments.top, classes)
    if classes is None:
        raise OptionError(
            "--task segmentation explains the region of a class: give --class (e.g. --class 15)"
        )
    region = arguments.region or "predicted"
    if region == "predicted":
        return Region(one_input(classes))
    mask = preprocessing.crop_mask(load_image(Path(region)))
    return Region(one_input(classes), region=mask)


def _torch_explainer(
    arguments: argparse.Namespace, device: torch.device
) -> tuple[Explainer, Preprocessing, Sequence[str]]:
    loaded = load_model(arguments.model, weights=arguments.weights, checkpoint=arguments.checkpoint)
    note_if_random(loaded.name, loaded.pretrained)
    explainer = method_explainer(arguments, loaded.model.to(device))
    return explainer, loaded.preprocessing.at_size(arguments.image_size), loaded.categories


def _onnx_explainer(
    arguments: argparse.Namespace, device: torch.device
) -> tuple[OnnxExplainer, Preprocessing, Sequence[str]]:
    providers = ["CUDAExecutionProvider"] if device.type == "cuda" else []
    explainer = OnnxExplainer(arguments.onnx, providers=[*providers, "CPUExecutionProvider"])
    metadata = explainer.metadata
    preprocessing = Preprocessing()
    if metadata is not None and metadata.preprocessing is not None:
        preprocessing = metadata.preprocessing
    else:
        print(
            "note: the file does not record its preprocessing; using resize 256, crop 224 and"
            " ImageNet's mean and std",
            file=sys.stderr,
        )
    classes = explainer.classes
    categories: Sequence[str] = tuple(f"class {index}" for index in range(classes))
    if metadata is not None and metadata.categories is not None:
        categories = metadata.categories
    elif classes == len(IMAGENET_CATEGORIES):
        categories = IMAGENET_CATEGORIES
    return explainer, preprocessing, categories
