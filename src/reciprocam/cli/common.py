"""What the commands' runs share: devices, explainers, the classes to explain, and printing
explained photos. (Their parsers share `arguments`, which imports none of this.)"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import nn
from tqdm import tqdm

from ..errors import InputError, OptionError
from ..explainer import Explainer
from ..photos import ExplainedPhoto, SkippedPhoto, class_indices
from ..registry import explainer as build_explainer
from ..registry import mask_name, method_for, method_options
from ..targets import TargetSpec, TopClasses


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
