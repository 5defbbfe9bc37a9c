"""The `reciprocam` command: `explain` photos, `evaluate` methods on a dataset, `export` or
`insert` ReciproCAM into ONNX, the `demo`, or the browser `app`.

Parsing imports no torch: each command's options are light modules, and its `run` imports the
library, so that --help and a mistyped option answer at once."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from .. import __version__
from ..errors import ReciproCAMError
from . import app, demo, evaluate, explain, export, insert

# Each command's module: its HELP line, DESCRIPTION, add_options(parser) and run(arguments).
COMMANDS = {
    "explain": explain,
    "evaluate": evaluate,
    "export": export,
    "insert": insert,
    "demo": demo,
    "app": app,
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; given `command`, only its options are added (the others
    keep their name and help line), since adding them all takes longer than the answer."""
    parser = argparse.ArgumentParser(
        prog="reciprocam",
        description="Class activation maps for PyTorch vision models (ReciproCAM).",
        epilog="Run 'reciprocam COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"reciprocam {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        sub = commands.add_parser(name, help=module.HELP, description=module.DESCRIPTION)
        sub.set_defaults(run=module.run)
        if command is None or command == name:
            module.add_options(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (0 success, 1 failure, 2 bad usage)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # The first word that is not an option names the command (--help, --version take no value).
    command = next((word for word in argv if not word.startswith("-")), "")
    arguments = build_parser(command).parse_args(argv)
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
