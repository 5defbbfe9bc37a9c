"""The options the commands share, and their argparse types. Nothing here imports torch or
the methods, so that `reciprocam --help` and a mistyped option answer at once."""

from __future__ import annotations

import argparse
import sys

from ..errors import OptionError
from ..names import DEMO_MODEL, canonical_name

# typing.TYPE_CHECKING without importing typing, which parsing does not need.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path


def path(text: str) -> Path:
    """An argparse type: a file or folder. (pathlib is imported here, on the first path given:
    it brings urllib and ipaddress, milliseconds that --help does not need.)"""
    from pathlib import Path

    return Path(text)


def positive_integer(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def method_name(text: str) -> str:
    """An argparse type: a method name, as the registry spells it."""
    try:
        return canonical_name(text)
    except OptionError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def method_option(text: str) -> tuple[str, str, object]:
    """An argparse type: METHOD.NAME=VALUE, the value read as JSON (1000, 0.5, true) or text."""
    import json  # here, not for every parse: milliseconds of --help

    key, equals, value = text.partition("=")
    method, dot, name = key.partition(".")
    if not (equals and dot and method and name):
        raise argparse.ArgumentTypeError(
            f"expected METHOD.NAME=VALUE, e.g. rise.masks=1000, not {text!r}"
        )
    try:
        parsed: object = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return method_name(method), name.strip(), parsed


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--model, --weights and --checkpoint."""
    parser.add_argument(
        "--model",
        metavar="NAME",
        help=f"a torchvision classifier name (resnet50, vgg16, ...), a timm model as"
        f" timm:NAME (timm:convnext_tiny), or {DEMO_MODEL} (the default: real ImageNet weights"
        " that install with reciprocam[demo])",
    )
    parser.add_argument(
        "--weights",
        metavar="NAME",
        help="torchvision weights to download, e.g. DEFAULT or IMAGENET1K_V2"
        " (without it and without --checkpoint, a torchvision model has random weights)",
    )
    parser.add_argument(
        "--checkpoint",
        metavar="FILE",
        type=path,
        help="a state_dict file for the --model architecture"
        " (loaded with weights_only=True; the class count is read from it)",
    )


MAX_IMAGE_SIZE = 4096
"""The largest --image-size: a side whose maps and masked copies still fit in memory."""


def image_size(text: str) -> int:
    """An argparse type: a side from 1 to MAX_IMAGE_SIZE pixels."""
    value = positive_integer(text)
    if value > MAX_IMAGE_SIZE:
        raise argparse.ArgumentTypeError(
            f"must be at most {MAX_IMAGE_SIZE} pixels, got {text} (a {value}x{value} input would"
            " not fit in memory)"
        )
    return value


def non_negative_integer(text: str) -> int:
    """An argparse type: a whole number >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def add_image_size_option(parser: argparse.ArgumentParser) -> None:
    """--image-size: the model's input side, keeping its resize/crop ratio."""
    parser.add_argument(
        "--image-size",
        type=image_size,
        metavar="N",
        help="the model's input side (default: the model's own, e.g. 224; at most"
        f" {MAX_IMAGE_SIZE}); the resize keeps the model's resize/crop ratio",
    )


def add_score_option(parser: argparse.ArgumentParser) -> None:
    """--score of ReciproCAM's masked copies, softmax by default."""
    parser.add_argument(
        "--score",
        choices=("softmax", "logit", "sigmoid"),
        default="softmax",
        help="class score of each masked copy: softmax (the default, as in the paper), logit,"
        " or sigmoid (each class's own probability, for a multi-label model)",
    )


def add_run_options(parser: argparse.ArgumentParser, output: str) -> None:
    """--output (defaulting to `output`), --device, --use-cuda and --no-progress."""
    parser.add_argument(
        "--output",
        type=path,
        metavar="DIR",
        default=output,  # a string, which argparse passes through `path`
        help=f"folder for the results (default: {output})",
    )
    parser.add_argument(
        "--device",
        metavar="DEVICE",
        help="cpu, cuda or cuda:N (default: cuda when available, else cpu)",
    )
    parser.add_argument(
        "--use-cuda",
        action="store_true",
        help="the same as --device cuda (pytorch-grad-cam's habit)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def announce(arguments: argparse.Namespace, work: str) -> None:
    """Say on stderr what is loading, before the imports that take seconds (torch, the model),
    so that the command answers at once; like the progress bars, only on a terminal and not
    with --no-progress."""
    if sys.stderr.isatty() and not getattr(arguments, "no_progress", False):
        print(f"reciprocam: {work}...", file=sys.stderr, flush=True)
