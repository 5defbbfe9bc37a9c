"""Writing result files: folders made with a clear error, files written atomically (a reader
never sees half a PNG, even after a kill)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import OutputError
from .images import IMAGE_SUFFIXES, WRITTEN, written_names


def make_folder(folder: Path) -> Path:
    """`folder`, created with its parents if needed, or OutputError saying why it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"cannot write into {folder}: it is a file, not a folder") from None
    except OSError as error:
        raise OutputError(f"cannot create the folder {folder}: {error.strerror}") from None
    return folder


def writable_folder(folder: Path) -> Path:
    """`folder` if it, or the folder it would be made in, takes new files, else OutputError;
    checked before any work, and nothing is created (`make_folder` does that when writing)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        which = "it" if existing == folder else str(existing)
        raise OutputError(f"cannot write into {folder}: {which} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write into {existing}: permission denied (or a read-only disk)")
    return folder


def writable_file(path: Path) -> Path:
    """`path` if a file can be written there (checked before any work), else OutputError."""
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file name, such as {path / 'model.onnx'}")
    writable_folder(path.parent)
    return path


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write` on a temporary file beside `path`, then rename it over `path`.

    The file gets the mode a plain `open(path, "w")` would give: an existing file's own, else
    0666 less the umask (a temporary file alone would be 0600, unreadable to a group or a
    web server). An image is listed in its folder's `WRITTEN` file first, so that a later run
    over the folder never reads it as data.
    """
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
        os.chmod(temporary, _mode_for(path))
        if path.suffix.lower() in IMAGE_SUFFIXES:
            _list_as_written(path)
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {error.strerror or error}") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _mode_for(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o7777
    except OSError:  # a new file
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _list_as_written(path: Path) -> None:
    if path.name not in written_names(path.parent):
        with (path.parent / WRITTEN).open("a", encoding="utf-8") as handle:
            handle.write(f"{path.name}\n")
