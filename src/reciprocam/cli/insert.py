"""`reciprocam insert`: add ReciproCAM maps to an existing ONNX classifier, without PyTorch."""

from __future__ import annotations

import argparse

from ..errors import OutputError
from .arguments import add_score_option, announce, path

HELP = "add ReciproCAM maps to an ONNX classifier"

DESCRIPTION = (
    "Copy an ONNX image classifier and add the output saliency_maps (B, N, h, w): every"
    " class's ReciproCAM map at a spatial feature node, computed in the graph. Explain"
    " the result with `reciprocam explain --onnx OUTPUT IMAGE...`."
)


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=path, metavar="INPUT", help="the classifier's .onnx file")
    parser.add_argument("output", type=path, metavar="OUTPUT", help="the .onnx file to write")
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


def run(arguments: argparse.Namespace) -> int:
    announce(arguments, "loading onnx")
    # Imported here, after the parse: `reciprocam.onnx` brings onnx and torch.
    from ..files import writable_file
    from ..onnx import insert_reciprocam

    writable_file(arguments.output)
    if arguments.output.resolve() == arguments.input.resolve():
        raise OutputError(
            f"OUTPUT {arguments.output} is the input file; give another name, so that the"
            " original stays as it was"
        )
    written = insert_reciprocam(
        arguments.input,
        arguments.output,
        arguments.target_node,
        score=arguments.score,
        mask=arguments.mask,
    )
    print(f"wrote {written}: {arguments.input.name} with ReciproCAM maps as saliency_maps")
    return 0
