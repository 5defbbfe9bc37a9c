"""`reciprocam explain IMAGE...`: an overlay PNG and a .npy map per image, and the top classes
(photos go to `explain_images`, videos and volumes to `explain_video`, detection to
`explain_detection`; this module is the options, light so that --help answers at once)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import OptionError
from ..names import METHODS, is_clip
from .arguments import (
    add_image_size_option,
    add_model_options,
    add_run_options,
    announce,
    method_name,
    path,
    positive_integer,
)

# typing.TYPE_CHECKING without importing typing, which parsing does not need.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


HELP = "explain the predictions of a model on images"

DESCRIPTION = (
    "Explain a classifier's prediction on each image: write <name>_<method>.png (the map"
    " over the photo) and <name>_<method>.npy (the map, float32 in [0, 1] at the model's"
    " input size) into --output, and print the top classes. Images are resized and"
    " centre-cropped as the model expects; the overlay shows that crop. A file that"
    " cannot be read is reported and skipped (exit code 1 at the end). Videos are"
    " explained on the --model's clip length of frames, evenly spaced, into"
    " <name>_<method>.gif (or .mp4) and a (T, H, W) .npy; volumes into a .png of their"
    " slices and a (D, H, W) .npy."
)


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "images",
        nargs="*",
        type=path,
        metavar="IMAGE",
        help="image files or folders; or video files (.mp4, .mov, .avi, .mkv, .webm, ...) and"
        " volumes (.npy, .nii, .nii.gz) with a video or volume --model (r3d_18, shapes_volume)",
    )
    parser.add_argument(
        "--image-path",
        action="append",
        type=path,
        default=[],
        dest="image_paths",
        metavar="IMAGE",
        help="an image file or folder (an alias of IMAGE; may be repeated)",
    )
    add_model_options(parser)
    parser.add_argument(
        "--onnx",
        type=path,
        metavar="FILE",
        help="explain with an explainable ONNX file (from `reciprocam export` or `reciprocam"
        " insert`) on onnxruntime, instead of a PyTorch model",
    )
    parser.add_argument(
        "--method",
        default="reciprocam",
        type=method_name,
        metavar="NAME",
        help=f"the explanation method: {', '.join(METHODS)} (default: reciprocam, which is"
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
        type=path,
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


def run(arguments: argparse.Namespace) -> int:
    sources = [*arguments.images, *arguments.image_paths]
    if not sources:
        print(
            "reciprocam explain: error: give at least one IMAGE (or --image-path)", file=sys.stderr
        )
        return 2
    clips = _explains_clips(sources)
    _refuse_what_does_not_apply(arguments, clips)
    announce(arguments, "loading torch and the model")
    # Imported here, after the parse and its checks: matplotlib takes a moment, and the
    # commands bring torch, which takes seconds.
    import matplotlib

    if arguments.colormap not in matplotlib.colormaps:
        raise OptionError(f"unknown matplotlib colormap '{arguments.colormap}'")
    from ..files import writable_folder
    from . import explain_detection, explain_images, explain_video

    if clips:
        return explain_video.run(arguments, sources)
    if arguments.task == "detection":
        writable_folder(arguments.output)
        return explain_detection.run(arguments, sources)
    return explain_images.run(arguments, sources)


# The options each kind of run has no use for, as (flag, argparse dest).
_NOT_FOR_CLIPS = (
    ("--onnx", "onnx"),
    ("--region", "region"),
    ("--boxes", "boxes"),
    ("--threshold", "threshold"),
    ("--image-size", "image_size"),
)
_NOT_FOR_DETECTION = (
    ("--onnx", "onnx"),
    ("--class", "target_class"),
    ("--region", "region"),
    ("--top", "top"),
    ("--score", "score"),
    ("--image-size", "image_size"),
)
_ONLY_FOR_DETECTION = (("--boxes", "boxes"), ("--threshold", "threshold"))
_NOT_FOR_ONNX = (
    ("--model", "model"),
    ("--weights", "weights"),
    ("--checkpoint", "checkpoint"),
    ("--target-layer", "target_layer"),
    ("--score", "score"),
    ("--mask", "mask"),
    ("--batch-size", "batch_size"),
    ("--image-size", "image_size"),
)


def _refuse_what_does_not_apply(arguments: argparse.Namespace, clips: bool) -> None:
    """An OptionError for the first option given that the run's kind (videos and volumes,
    detection, ONNX, photos) has no use for, before anything loads."""
    if clips:
        _refuse(arguments, _NOT_FOR_CLIPS, "{} does not apply to videos and volumes")
        if arguments.task != "classification":
            raise OptionError(f"--task {arguments.task} does not apply to videos and volumes")
        return
    if arguments.animation is not None:
        raise OptionError("--animation applies to videos")
    if arguments.task == "detection":
        why = "{} does not apply to --task detection (give the boxes with --boxes FILE)"
        _refuse(arguments, _NOT_FOR_DETECTION, why)
        return
    _refuse(arguments, _ONLY_FOR_DETECTION, "{} applies to --task detection")
    if arguments.onnx is not None:
        why = "{} does not apply to --onnx: the file holds the model and its explanation"
        _refuse(arguments, _NOT_FOR_ONNX, why)
        if arguments.method != "reciprocam":
            raise OptionError(
                "an ONNX file is explained by the method exported into it (reciprocam)"
            )


def _refuse(arguments: argparse.Namespace, options: Sequence[tuple[str, str]], why: str) -> None:
    for flag, dest in options:
        if getattr(arguments, dest) is not None:
            raise OptionError(why.format(flag))


def _explains_clips(sources: Sequence[Path]) -> bool:
    """Whether `sources` are videos and volumes (`explain_video`'s) rather than photos; a mix
    of the two raises OptionError."""
    clips = [path for path in sources if is_clip(path)]
    others = [path for path in sources if path not in clips]
    if clips and others:
        raise OptionError(
            f"explain photos, or videos and volumes, in one run, not both ({others[0]} is a"
            f" photo or folder, {clips[0]} a video or volume)"
        )
    return bool(clips)
