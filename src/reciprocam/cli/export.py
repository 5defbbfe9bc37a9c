"""`reciprocam export`: a model and its ReciproCAM maps as one ONNX file."""

from __future__ import annotations

import argparse

from .arguments import (
    add_image_size_option,
    add_model_options,
    add_score_option,
    announce,
    path,
    positive_integer,
)

HELP = "export a model with its ReciproCAM maps to ONNX"

DESCRIPTION = (
    "Write one ONNX graph whose outputs are the logits (B, N) and every class's"
    " ReciproCAM map (B, N, h, w) in [0, 1], with a dynamic batch; ViT-ReciproCAM on a"
    " vision transformer. The file records the preprocessing and class names, for"
    " `reciprocam explain --onnx FILE`."
)


def add_options(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser)
    parser.add_argument(
        "--output",
        type=path,
        metavar="FILE",
        help="the .onnx file to write (default: <model>_reciprocam.onnx)",
    )
    parser.add_argument(
        "--target-layer",
        metavar="LAYER",
        help="the layer to explain, by its dotted name (default: automatic)",
    )
    add_image_size_option(parser)
    add_score_option(parser)
    parser.add_argument(
        "--mask",
        choices=("pixel", "token", "gaussian"),
        help="one position (pixel, token: the same) or the 3x3 gaussian (default: pixel for"
        " CNNs, gaussian for transformers, as in the papers)",
    )
    parser.add_argument(
        "--opset",
        type=positive_integer,
        default=18,
        metavar="N",
        help="ONNX opset, 18 or newer (default: 18)",
    )


def run(arguments: argparse.Namespace) -> int:
    announce(arguments, "loading torch and the model")
    # Imported here, after the parse: they bring torch, which takes seconds.
    from pathlib import Path

    from ..files import writable_file
    from ..onnx import export_onnx
    from ..registry import mask_name, method_for
    from ..zoo import load_model

    if arguments.output is not None:  # before loading and exporting, so it fails fast
        writable_file(arguments.output)
    loaded = load_model(arguments.model, weights=arguments.weights, checkpoint=arguments.checkpoint)
    preprocessing = loaded.preprocessing.at_size(arguments.image_size)
    options: dict[str, str] = {"score": arguments.score}
    if arguments.mask is not None:
        options["mask"] = mask_name(arguments.mask, method_for("reciprocam", loaded.model))
    output = writable_file(
        arguments.output or Path(f"{loaded.name.replace(':', '_')}_reciprocam.onnx")
    )
    written = export_onnx(
        loaded.model,
        output,
        target_layer=arguments.target_layer,
        input_shape=(1, 3, preprocessing.crop, preprocessing.crop),
        preprocessing=preprocessing,
        categories=loaded.categories,
        opset=arguments.opset,
        **options,
    )
    note = "" if loaded.pretrained else " (random weights: pass --weights or --checkpoint)"
    print(f"wrote {written}: {loaded.name} with its ReciproCAM maps{note}")
    return 0
