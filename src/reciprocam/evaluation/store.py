"""The results of an evaluation, one SQLite row per (image, method), written as they come.

Each batch's rows are committed in one transaction, so a run stopped in any way (Ctrl-C, a
crash, kill -9) loses at most the batch in flight; rerunning resumes from the rows present
and tries skipped images again. The database belongs to one run: its settings' key is
stored, and opening it with other settings is an error rather than a mix of results. Several
processes (torchrun's ranks) may write to it at once; SQLite serialises their transactions.
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..files import make_folder

DATABASE = "evaluation.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS run (key TEXT PRIMARY KEY, settings TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    image TEXT NOT NULL,
    method TEXT NOT NULL,
    label INTEGER,
    target INTEGER NOT NULL,
    prediction INTEGER NOT NULL,
    probability REAL NOT NULL,
    seconds REAL NOT NULL,
    metrics TEXT NOT NULL,
    deletion_curve BLOB,
    insertion_curve BLOB,
    saliency BLOB,
    PRIMARY KEY (image, method)
);
CREATE TABLE IF NOT EXISTS skipped (image TEXT PRIMARY KEY, reason TEXT NOT NULL);
"""


@dataclass(frozen=True)
class ResultRow:
    """One image explained by one method, and its metric values.

    probability: the softmax probability of `target` on the image. seconds: the time the
    explanation took, per image. metrics: per-image values (None where not applicable).
    Curves are the Deletion/Insertion probabilities; saliency is the map as uint8 (H, W),
    kept only for the images the report shows.
    """

    image: str
    method: str
    label: int | None
    target: int
    prediction: int
    probability: float
    seconds: float
    metrics: Mapping[str, float | None]
    deletion_curve: np.ndarray | None = None
    insertion_curve: np.ndarray | None = None
    saliency: np.ndarray | None = None


def run_key(settings: Mapping[str, Any]) -> str:
    """A short hash of the settings that decide the results."""
    text = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ResultStore:
    """The evaluation database in an output folder."""

    def __init__(self, folder: Path) -> None:
        make_folder(folder)
        self.path = folder / DATABASE
        try:
            self._connection = sqlite3.connect(self.path, timeout=300, isolation_level=None)
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.executescript(_SCHEMA)
        except sqlite3.DatabaseError as error:
            raise InputError(
                f"{self.path}: not a usable evaluation database ({error}); choose another --output"
            ) from None

    def claim(self, settings: Mapping[str, Any]) -> None:
        """Record the run's settings, or check that the database holds the same run."""
        key = run_key(settings)
        with self._transaction():
            found = self._connection.execute("SELECT key, settings FROM run").fetchone()
            if found is None:
                self._connection.execute(
                    "INSERT INTO run VALUES (?, ?)", (key, json.dumps(settings, sort_keys=True))
                )
                return
        if found[0] != key:
            # JSON both, so tuples compare equal to the stored lists.
            differ = _differences(json.loads(found[1]), json.loads(json.dumps(settings)))
            raise InputError(
                f"{self.path.parent} holds the results of a different run ({', '.join(differ)}"
                " differ); choose another --output, or delete that folder to start over"
            )

    def done(self) -> set[tuple[str, str]]:
        """The (image, method) pairs already evaluated."""
        return set(self._connection.execute("SELECT image, method FROM results").fetchall())

    def skipped(self) -> dict[str, str]:
        """Images that could not be evaluated, and why."""
        return dict(self._connection.execute("SELECT image, reason FROM skipped").fetchall())

    def write(self, rows: Iterable[ResultRow], skipped: Mapping[str, str] | None = None) -> None:
        """Store a batch's rows and skipped images in one transaction; an image with rows is
        no longer skipped (a file fixed between runs)."""
        rows = list(rows)
        with self._transaction():
            self._connection.executemany(
                "DELETE FROM skipped WHERE image = ?", [(row.image,) for row in rows]
            )
            self._connection.executemany(
                "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        row.image,
                        row.method,
                        row.label,
                        row.target,
                        row.prediction,
                        row.probability,
                        row.seconds,
                        json.dumps(dict(row.metrics)),
                        _blob(row.deletion_curve, np.float32),
                        _blob(row.insertion_curve, np.float32),
                        _blob(row.saliency, np.uint8),
                    )
                    for row in rows
                ],
            )
            self._connection.executemany(
                "INSERT OR REPLACE INTO skipped VALUES (?, ?)", list((skipped or {}).items())
            )

    def rows(self) -> list[ResultRow]:
        """Every stored row, by image then method."""
        found = self._connection.execute("SELECT * FROM results ORDER BY image, method")
        return [
            ResultRow(
                image=image,
                method=method,
                label=label,
                target=target,
                prediction=prediction,
                probability=probability,
                seconds=seconds,
                metrics=json.loads(metrics),
                deletion_curve=_array(deletion, np.float32),
                insertion_curve=_array(insertion, np.float32),
                saliency=_array(saliency, np.uint8),
            )
            for (
                image,
                method,
                label,
                target,
                prediction,
                probability,
                seconds,
                metrics,
                deletion,
                insertion,
                saliency,
            ) in found.fetchall()
        ]

    def close(self) -> None:
        self._connection.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): one writer at a time, all or nothing."""
        self._connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._connection.execute("ROLLBACK")
            raise
        self._connection.execute("COMMIT")


def _differences(stored: Any, given: Any, prefix: str = "") -> list[str]:
    """The dotted names of the settings that differ ("options.step")."""
    if not isinstance(stored, dict) or not isinstance(given, dict):
        return [] if stored == given else [prefix.rstrip(".")]
    return [
        difference
        for name in sorted({*stored, *given})
        for difference in _differences(stored.get(name), given.get(name), f"{prefix}{name}.")
    ]


def _blob(values: np.ndarray | None, dtype: type) -> bytes | None:
    """An array as .npy bytes."""
    if values is None:
        return None
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(values, dtype=dtype), allow_pickle=False)
    return buffer.getvalue()


def _array(blob: bytes | None, dtype: type) -> np.ndarray | None:
    return None if blob is None else np.load(io.BytesIO(blob), allow_pickle=False).astype(dtype)
