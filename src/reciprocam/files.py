"""Writing result files: folders made with a clear error, files written atomically (a reader
never sees half a PNG, even after a kill)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import OutputError


def make_folder(folder: Path) -> Path:
    """`folder`, created with its parents if needed, or OutputError saying why it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"cannot write into {folder}: it is a file, not a folder") from None
    except OSError as error:
        raise OutputError(f"cannot create the folder {folder}: {error.strerror}") from None
    return folder


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write` on a temporary file beside `path`, then rename it over `path`."""
    make_folder(path.parent)
    try:
        handle, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix
        )
    except OSError as error:
        raise OutputError(f"cannot write into {path.parent}: {error.strerror}") from None
    os.close(handle)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {error.strerror or error}") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
