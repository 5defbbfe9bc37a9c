"""The library's exceptions: one base class, one subclass per kind of user mistake.

Every message is one line that says what is wrong and how to fix it; the CLI prints it
as it is and exits with a non-zero code.
"""

from __future__ import annotations


class ReciproCAMError(Exception):
    """Base class of every error this library raises for bad input or unsupported models."""


class InputError(ReciproCAMError, ValueError):
    """The input tensor has the wrong type, shape, dtype or device."""


class TargetError(ReciproCAMError, ValueError):
    """A requested class is out of range, or the targets do not match the batch."""


class NoDetectionError(TargetError):
    """No detection of an image scores the threshold: `finding` says so (and what the best
    one scores), the message adds what to do."""

    def __init__(self, finding: str, advice: str) -> None:
        super().__init__(f"{finding}: {advice}")
        self.finding = finding


class OptionError(ReciproCAMError, ValueError):
    """An explainer option has a value it does not accept."""


class LayerError(ReciproCAMError, ValueError):
    """The target layer is unknown, not spatial, or not the only path to the prediction."""


class ModelError(ReciproCAMError):
    """The model cannot be loaded, or its structure or output cannot be explained."""


class ImageError(ReciproCAMError, OSError):
    """An image file is missing, unreadable, truncated or too large."""


class OutputError(ReciproCAMError, OSError):
    """A result cannot be written: the output folder is a file, not writable, or full."""


def first_line(error: BaseException) -> str:
    """The first line of a foreign exception's message (its type's name if it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
