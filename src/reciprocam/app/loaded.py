"""Models a page loads by name when first chosen, and keeps for the next requests."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

Value = TypeVar("Value")


class LoadedOnce(Generic[Value]):
    """`load(name)` once per name, kept for the next calls: the `permanent` ones (given, or
    None: loaded when first asked for) always, and at most `kept` others, the one asked for
    longest ago dropped first (and loaded again if asked for again). Thread-safe: one load
    at a time."""

    def __init__(
        self,
        load: Callable[[str], Value],
        *,
        kept: int = 2,
        permanent: Mapping[str, Value | None] | None = None,
    ) -> None:
        self._load = load
        self.kept = kept
        self._permanent = dict(permanent or {})
        self._recent: dict[str, Value] = {}
        self._turn = threading.Lock()

    def __getitem__(self, name: str) -> Value:
        with self._turn:
            if name in self._permanent:
                found = self._permanent[name]
                if found is None:
                    found = self._permanent[name] = self._load(name)
                return found
            found = self._recent.pop(name, None)
            if found is None:
                found = self._load(name)
                if len(self._recent) >= self.kept:
                    self._recent.pop(next(iter(self._recent)))
            self._recent[name] = found  # the most recently asked for last
            return found
