"""`reciprocam app`: the interactive page (`reciprocam.app`, a Gradio app) served on a port."""

from __future__ import annotations

import argparse

from ..errors import ModelError
from ..names import DEMO_MODEL
from .arguments import announce, path

MISSING_EXTRA = "reciprocam app needs the app extra: pip install 'reciprocam[app]'"


def _port(text: str) -> int:
    """An argparse type: a TCP port, 1 to 65535."""
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 1 to 65535, got {text}")
    return value


HELP = "explain photos in the browser (an interactive Gradio page)"

DESCRIPTION = (
    "Serve a page that explains the photos you drop on it with every method, the"
    " classes and layer of your choice. Needs the app extra: pip install"
    " 'reciprocam[app]'. Stop it with Ctrl+C."
)


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        metavar="NAME",
        help=f"the model the page explains: a torchvision classifier or segmentation model,"
        f" timm:NAME, or {DEMO_MODEL} (the default, offline)",
    )
    parser.add_argument(
        "--checkpoint",
        metavar="FILE",
        type=path,
        help="a state_dict file of --model's architecture, loaded into it",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to serve on (default: 127.0.0.1, this machine only; 0.0.0.0 for all)",
    )
    parser.add_argument(
        "--port",
        type=_port,
        metavar="N",
        help="the port to serve on (default: Gradio's, 7860 or the next free one)",
    )


def run(arguments: argparse.Namespace) -> int:
    announce(arguments, "loading gradio, torch and the model")
    try:
        # Imported here, after the parse: gradio and torch take seconds, and are optional.
        from ..app import launch
    except ModuleNotFoundError as error:
        if (error.name or "").partition(".")[0] == "gradio" or error.name == "reciprocam.app":
            raise ModelError(MISSING_EXTRA) from None
        raise
    launch(
        model=arguments.model,
        checkpoint=arguments.checkpoint,
        host=arguments.host,
        port=arguments.port,
    )
    return 0
