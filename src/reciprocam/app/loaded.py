"""What a page loads when first asked for (models, explainers), kept for the next requests."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Mapping
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)
Value = TypeVar("Value")


class LoadedOnce(Generic[Key, Value]):
    """`load(key)` once per key, kept for the next calls: the `permanent` ones (given, or
    None: loaded when first asked for) always, and at most `kept` others, the one asked for
    longest ago dropped first (passed to `drop`, e.g. to close it; loaded again if asked for
    again). Thread-safe: one load at a time."""

    def __init__(
        self,
        load: Callable[[Key], Value],
        *,
        kept: int = 2,
        permanent: Mapping[Key, Value | None] | None = None,
        drop: Callable[[Value], object] | None = None,
    ) -> None:
        self._load = load
        self.kept = kept
        self._permanent = dict(permanent or {})
        self._drop = drop
        self._recent: dict[Key, Value] = {}
        self._turn = threading.Lock()

    def __getitem__(self, key: Key) -> Value:
        with self._turn:
            if key in self._permanent:
                found = self._permanent[key]
                if found is None:
                    found = self._permanent[key] = self._load(key)
                return found
            found = self._recent.pop(key, None)
            if found is None:
                found = self._load(key)
                if len(self._recent) >= self.kept:
                    dropped = self._recent.pop(next(iter(self._recent)))
                    if self._drop is not None:
                        self._drop(dropped)
            self._recent[key] = found  # the most recently asked for last
            return found
