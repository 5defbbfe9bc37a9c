"""The `reciprocam` command: `explain` photos, `evaluate` methods on a dataset, `export` or
`insert` ReciproCAM into ONNX, or the `demo`."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from .. import __version__
from ..errors import ReciproCAMError
from . import demo, evaluate, explain, export, insert


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reciprocam",
        description="Class activation maps for PyTorch vision models (ReciproCAM).",
        epilog="Run 'reciprocam COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"reciprocam {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    explain.add_parser(commands)
    evaluate.add_parser(commands)
    export.add_parser(commands)
    insert.add_parser(commands)
    demo.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (0 success, 1 failure, 2 bad usage)."""
    parser = build_parser()
    arguments = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _note
            code: int = arguments.run(arguments)
    except ReciproCAMError as error:
        print(f"reciprocam: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("reciprocam: interrupted", file=sys.stderr)
        return 130
    return code


def _note(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: object = None,
    line: str | None = None,
) -> None:
    """A warning as one line on stderr, without the source line Python would print."""
    print(f"reciprocam: note: {message}", file=sys.stderr)
