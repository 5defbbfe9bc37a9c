"""`reciprocam insert`: add ReciproCAM maps to an existing ONNX classifier, without PyTorch."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import OutputError
from ..files import writable_file
from ..onnx import insert_reciprocam
from .common import add_score_option


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "insert",
        help="add ReciproCAM maps to an ONNX classifier",
        description=(
            "Copy an ONNX image classifier and add the output saliency_maps (B, N, h, w): every"
            " class's ReciproCAM map at a spatial feature node, computed in the graph. Explain"
            " the result with `reciprocam explain --onnx OUTPUT IMAGE...`."
        ),
    )
    parser.add_argument("input", type=Path, metavar="INPUT", help="the classifier's .onnx file")
    parser.add_argument("output", type=Path, metavar="OUTPUT", help="the .onnx file to write")
    parser.add_argument(
        "--target-node",
        metavar="NAME",
        help="the node (or tensor) whose (B, C, H, W) output to explain (default: the last one"
        " through which alone the input reaches the logits)",
    )
    add_score_option(parser)
    parser.add_argument(
        "--mask",
        choices=("pixel", "gaussian"),
        default="pixel",
        help="one position (the paper) or the 3x3 gaussian (default: pixel)",
    )
    parser.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    writable_file(arguments.output)
    if arguments.output.resolve() == arguments.input.resolve():
        raise OutputError(
            f"OUTPUT {arguments.output} is the input file; give another name, so that the"
            " original stays as it was"
        )
    path = insert_reciprocam(
        arguments.input,
        arguments.output,
        arguments.target_node,
        score=arguments.score,
        mask=arguments.mask,
    )
    print(f"wrote {path}: {arguments.input.name} with ReciproCAM maps as saliency_maps")
    return 0
