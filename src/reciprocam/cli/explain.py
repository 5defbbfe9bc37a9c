"""`reciprocam explain IMAGE...`: an overlay PNG and a .npy map per image, and the top classes
(videos and volumes go to `explain_video`, detection to `explain_detection`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import torch

from ..errors import OptionError
from ..explainer import Explainer
from ..files import make_folder, writable_folder
from ..images import find_images, load_image
from ..onnx import OnnxExplainer
from ..photos import SkippedPhoto, explain_photos
from ..registry import methods
from ..targets import Region, TargetSpec
from ..zoo import IMAGENET_CATEGORIES, Preprocessing, load_model
from . import explain_detection, explain_video
from .common import (
    add_image_size_option,
    add_model_options,
    add_run_options,
    chosen_classes,
    classification_target,
    device_from,
    method_explainer,
    method_name,
    note_if_random,
    one_input,
    positive_integer,
    report,
)


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _colormap(text: str) -> str:
    if text not in matplotlib.colormaps:
        raise argparse.ArgumentTypeError(f"unknown matplotlib colormap '{text}'")
    return text


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "explain",
        help="explain the predictions of a model on images",
        description=(
            "Explain a classifier's prediction on each image: write <name>_<method>.png (the map"
            " over the photo) and <name>_<method>.npy (the map, float32 in [0, 1] at the model's"
            " input size) into --output, and print the top classes. Images are resized and"
            " centre-cropped as the model expects; the overlay shows that crop. A file that"
            " cannot be read is reported and skipped (exit code 1 at the end). Videos are"
            " explained on the --model's clip length of frames, evenly spaced, into"
            " <name>_<method>.gif (or .mp4) and a (T, H, W) .npy; volumes into a .png of their"
            " slices and a (D, H, W) .npy."
        ),
    )
    parser.add_argument(
        "images",
        nargs="*",
        type=Path,
        metavar="IMAGE",
        help="image files or folders; or video files (.mp4, .mov, .avi, .mkv, .webm, ...) and"
        " volumes (.npy, .nii, .nii.gz) with a video or volume --model (r3d_18, shapes_volume)",
    )
    parser.add_argument(
        "--image-path",
        action="append",
        type=Path,
        default=[],
        dest="image_paths",
        metavar="IMAGE",
        help="an image file or folder (an alias of IMAGE; may be repeated)",
    )
    add_model_options(parser)
    parser.add_argument(
        "--onnx",
        type=Path,
        metavar="FILE",
        help="explain with an explainable ONNX file (from `reciprocam export` or `reciprocam"
        " insert`) on onnxruntime, instead of a PyTorch model",
    )
    parser.add_argument(
        "--method",
        default="reciprocam",
        type=method_name,
        metavar="NAME",
        help=f"the explanation method: {', '.join(methods())} (default: reciprocam, which is"
        " ViT-ReciproCAM on a vision transformer)",
    )
    parser.add_argument(
        "--target-layer",
        metavar="LAYER",
        help="the layer to explain, by its dotted name (default: automatic,"
        " the last spatial layer that alone determines the prediction, e.g. layer4)",
    )
    parser.add_argument(
        "--class",
        metavar="CLASS",
        dest="target_class",
        help="the class to explain, as an index or a name, or several separated by commas"
        " (281,285: one map each, from one pass of the forward-only methods; default: each"
        " image's top-1 prediction)",
    )
    parser.add_argument(
        "--task",
        choices=("classification", "segmentation", "detection"),
        default="classification",
        help="classification (default); segmentation: with a segmentation model (fcn_resnet50,"
        " deeplabv3_*, lraspp_*), explain the region of each --class; detection: with a"
        " torchvision detector (default shapes_detector), one map per detected box (methods"
        " reciprocam, rise (D-RISE), gradcam, odam, eigencam, ablationcam)",
    )
    parser.add_argument(
        "--boxes",
        type=Path,
        metavar="FILE",
        help="(detection) explain these boxes instead of the detections: a JSON list of"
        ' {"label": index or name, "box": [x1, y1, x2, y2]} (pixels of the photo), or an'
        " object mapping photo file names to such lists; a _boxes.json written by a run fits",
    )
    parser.add_argument(
        "--threshold",
        type=_fraction,
        metavar="S",
        help="(detection) explain the detections scoring at least S (default: 0.5)",
    )
    parser.add_argument(
        "--region",
        metavar="predicted|FILE",
        help="(segmentation) the region of the class to explain: 'predicted' (default, the"
        " pixels the model gives the class) or a mask image FILE (nonzero pixels), cropped as"
        " the photo is",
    )
    add_image_size_option(parser)
    add_run_options(parser, output="reciprocam-output")
    parser.add_argument(
        "--score",
        choices=("softmax", "logit", "sigmoid"),
        help="(reciprocam, rise) class score of each masked copy: softmax (default, as in the"
        " paper), logit, or sigmoid for a multi-label head",
    )
    parser.add_argument(
        "--mask",
        choices=("pixel", "token", "gaussian"),
        help="(reciprocam) spatial mask: one position (pixel, token: the same) or the 3x3"
        " gaussian (default: pixel for CNNs, gaussian for transformers, as in the papers)",
    )
    parser.add_argument(
        "--batch-size",
        metavar="N",
        type=positive_integer,
        help="(reciprocam, scorecam, ablationcam, rise, smooth-gradcam++) inputs or copies per"
        " forward pass (default: the method's)",
    )
    parser.add_argument(
        "--top",
        type=positive_integer,
        metavar="K",
        help="explain each image's K most probable classes, one map each from one pass of the"
        " forward-only methods (default: print the top 5, explain the top-1 or --class)",
    )
    parser.add_argument(
        "--animation",
        choices=("gif", "mp4"),
        help="(videos) the file of each video's frames with their maps: gif (default) or mp4"
        " (H.264)",
    )
    parser.add_argument(
        "--colormap",
        metavar="NAME",
        type=_colormap,
        default="jet",
        help="matplotlib colormap of the overlay (default: jet)",
    )
    parser.add_argument(
        "--alpha",
        metavar="A",
        type=_fraction,
        default=0.5,
        help="opacity of the heatmap over the photo (default: 0.5)",
    )
    parser.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    sources = [*arguments.images, *arguments.image_paths]
    if not sources:
        print(
            "reciprocam explain: error: give at least one IMAGE (or --image-path)", file=sys.stderr
        )
        return 2
    if explain_video.takes(sources):
        return explain_video.run(arguments, sources)
    if arguments.animation is not None:
        raise OptionError("--animation applies to videos")
    if arguments.task == "detection":
        writable_folder(arguments.output)
        return explain_detection.run(arguments, sources)
    for flag, value in (("--boxes", arguments.boxes), ("--threshold", arguments.threshold)):
        if value is not None:
            raise OptionError(f"{flag} applies to --task detection")
    if arguments.onnx is not None:
        _refuse_model_options(arguments)
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


def _refuse_model_options(arguments: argparse.Namespace) -> None:
    given = [
        flag
        for flag, value in (
            ("--model", arguments.model),
            ("--weights", arguments.weights),
            ("--checkpoint", arguments.checkpoint),
            ("--target-layer", arguments.target_layer),
            ("--score", arguments.score),
            ("--mask", arguments.mask),
            ("--batch-size", arguments.batch_size),
            ("--image-size", arguments.image_size),
        )
        if value is not None
    ]
    if given:
        raise OptionError(
            f"{given[0]} does not apply to --onnx: the file holds the model and its explanation"
        )
    if arguments.method != "reciprocam":
        raise OptionError("an ONNX file is explained by the method exported into it (reciprocam)")


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
