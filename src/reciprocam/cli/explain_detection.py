"""`reciprocam explain --task detection PHOTO...`: one map per detected (or given) box.

For each photo, into --output, the files of `reciprocam.detection.files`: the photo with the
explained boxes, each box's overlay, a grid of them, the maps (.npy) and the boxes (.json). A
photo with no detection above --threshold is reported, and nothing is written for it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torchvision.transforms.functional as TF

from ..detection.boxes import BoxSpec
from ..detection.files import write_detection_files
from ..errors import ImageError, InputError, NoDetectionError, TargetError
from ..files import make_folder
from ..images import find_images, load_image
from ..photos import class_index
from ..registry import detection_explainer, mask_name
from ..zoo.detectors import SHAPES_DETECTOR, load_detector
from .common import device_from, note_if_random


def run(arguments: argparse.Namespace, sources: Sequence[Path]) -> int:
    """Explain the photos' detections (the options checked by `explain.run`)."""
    paths = find_images(sources)
    device = device_from(arguments)
    loaded = load_detector(
        arguments.model or SHAPES_DETECTOR,
        weights=arguments.weights,
        checkpoint=arguments.checkpoint,
    )
    note_if_random(loaded.name, loaded.pretrained)
    options = {
        name: value
        for name, value in (
            ("batch_size", arguments.batch_size),
            ("mask", mask_name(arguments.mask, arguments.method)),
            ("threshold", arguments.threshold),
            ("level", arguments.target_layer),
            ("progress", not arguments.no_progress),
        )
        if value is not None
    }
    explainer = detection_explainer(arguments.method, loaded.model.to(device), **options)
    given = None if arguments.boxes is None else read_boxes(arguments.boxes, loaded.categories)
    make_folder(arguments.output)
    written = unreadable = 0
    for path in paths:
        try:
            image = load_image(path)
        except ImageError as error:
            print(f"skipped {error}", file=sys.stderr)
            unreadable += 1
            continue
        boxes = given.get(path.name, given.get("*")) if given is not None else None
        if given is not None and boxes is None:
            print(f"{path.name}: no boxes for it in {arguments.boxes}; nothing written")
            continue
        try:
            explanation = explainer.explain(TF.to_tensor(image).to(device), boxes)
        except NoDetectionError as error:
            print(f"{path.name}: {error.finding}; nothing written")
            continue
        written += 1
        written_files = write_detection_files(
            path,
            image,
            explanation,
            arguments.output,
            arguments.method,
            loaded.categories,
            colormap=arguments.colormap,
            alpha=arguments.alpha,
        )
        grid = written_files.grid
        names = ", ".join(written_files.captions)
        print(f"{path.name}: {explanation.labels.numel()} boxes ({names}) -> {grid}")
    print(
        f"explained the boxes of {written} of {len(paths)} images with {arguments.method}"
        f" into {arguments.output}" + (f"; {unreadable} unreadable" if unreadable else "")
    )
    return 1 if unreadable else 0


def read_boxes(path: Path, categories: Sequence[str]) -> dict[str, BoxSpec]:
    """--boxes FILE: a JSON list of {"label": index or name, "box": [x1, y1, x2, y2]} for every
    photo, or an object mapping photo file names to such lists."""
    try:
        content = json.loads(path.read_text())
    except OSError as error:
        raise InputError(f"{path}: cannot read the boxes file ({error.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not a JSON file of boxes ({error})") from None
    per_photo = content if isinstance(content, dict) else {"*": content}
    boxes: dict[str, BoxSpec] = {}
    for photo, items in per_photo.items():
        try:
            pairs = []
            for item in items:
                x1, y1, x2, y2 = (float(v) for v in item["box"])
                pairs.append((class_index(item["label"], categories), (x1, y1, x2, y2)))
            boxes[photo] = pairs
        except TargetError:
            raise
        except (KeyError, TypeError, ValueError):
            raise InputError(
                f'{path}: each box must be {{"label": index or name, "box": [x1, y1, x2, y2]}}'
            ) from None
    return boxes
