"""`reciprocam evaluate --data DIR`: the papers' metrics for several methods on a dataset
(this module is the options, light so that --help answers at once; `evaluate_dataset` runs)."""

from __future__ import annotations

import argparse

from ..names import METHODS, METRICS
from .arguments import (
    add_image_size_option,
    add_model_options,
    add_run_options,
    announce,
    method_option,
    non_negative_integer,
    path,
    positive_integer,
)

HELP = "score explanation methods with the papers' metrics on a dataset"

DESCRIPTION = (
    "Explain every image of a dataset with each method and score the maps (Average"
    " Drop, Increase in Confidence, Deletion, Insertion, Coherency, Complexity, ADCC,"
    " and with ground truth the pointing games). Results go into an SQLite database in"
    " --output as they are made; rerunning the same command resumes. At the end:"
    " summary.md/.csv/.json (a table like the papers') and report.html. Runs under"
    " 'torchrun --nproc_per_node N -m reciprocam evaluate ...' with a shard per process."
)


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        required=True,
        type=path,
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
        + ", ".join(METHODS),
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
        f" metric the data allows); one of {', '.join(METRICS)}",
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
        type=path,
        metavar="FILE",
        help="JSON ground-truth boxes for the pointing games:"
        ' {"IMAGE": [[x_min, y_min, x_max, y_max], ...]} or {"IMAGE": {"CLASS": [...]}}',
    )
    truth.add_argument(
        "--masks",
        type=path,
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


def run(arguments: argparse.Namespace) -> int:
    announce(arguments, "loading torch and the model")
    from . import evaluate_dataset  # here, after the parse: it brings torch

    return evaluate_dataset.run(arguments)
