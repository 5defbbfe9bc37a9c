"""Checking explainer options: each bad value is an OptionError that names the option."""

from __future__ import annotations

from collections.abc import Collection
from typing import TypeVar

from .errors import OptionError

_T = TypeVar("_T")


def positive(name: str, value: int) -> int:
    """`value` if it is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(f"{name} must be a positive integer, not {value!r}")
    return value


def positive_or_none(name: str, value: int | None) -> int | None:
    """`value` if it is None or a positive integer."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise OptionError(f"{name} must be a positive integer or None, not {value!r}")
    return value


def one_of(name: str, value: _T, allowed: Collection[_T]) -> _T:
    """`value` if it is one of `allowed`."""
    if value not in allowed:
        names = [repr(a) for a in allowed]
        choices = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
        raise OptionError(f"{name} must be {choices}, not {value!r}")
    return value
