"""The names the command line shows and matches before the library loads: methods, metrics,
the demo model, the suffixes of videos and volumes. Plain constants (and the test of a file's
suffix), so that `reciprocam --help` and a usage error do not import torch; the tests check
that they equal the registries' names."""

from __future__ import annotations

from .errors import OptionError

# typing.TYPE_CHECKING without importing typing; pathlib too waits for a path to be given.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

METHODS = (
    "reciprocam",
    "vit-reciprocam",
    "cam",
    "gradcam",
    "gradcam++",
    "smooth-gradcam++",
    "xgradcam",
    "hirescam",
    "layercam",
    "scorecam",
    "ablationcam",
    "eigencam",
    "eigengradcam",
    "fullgrad",
    "rise",
    "guided-backprop",
    "guided-gradcam",
    "guided-gradcam++",
)
"""What `reciprocam.registry.methods()` lists, in its order."""

DETECTION_METHODS = ("reciprocam", "rise", "drise", "gradcam", "odam", "eigencam", "ablationcam")
"""What `reciprocam.registry.detection_methods()` lists, in its order."""

PAPER_METRICS = (
    "average_drop",
    "increase_in_confidence",
    "deletion",
    "insertion",
    "coherency",
    "complexity",
    "adcc",
)
"""The columns of the ReciproCAM papers' tables: Drop, Inc, Del, Ins, Coher, Compl, ADCC."""

METRICS = (*PAPER_METRICS, "pointing_game", "energy_pointing_game")
"""What `reciprocam.metrics.metric_names()` lists, in its order."""

DEMO_MODEL = "efficientnet_lite0"
"""The offline demo's real ImageNet model, the default --model."""

DEMO_GRID = "demo.png"
"""The file of `reciprocam demo` that shows every photo beside its map."""

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg"})
"""Files read as videos (an animated .gif stays a photo, as `reciprocam explain` reads it)."""
VOLUME_SUFFIXES = (".npy", ".nii", ".nii.gz")
"""Files read as volumes: a NumPy array, or NIfTI."""


def is_volume(path: Path) -> bool:
    """Whether `path` names a volume file by its suffix (.npy, .nii, .nii.gz)."""
    return path.name.lower().endswith(VOLUME_SUFFIXES)


def is_clip(path: Path) -> bool:
    """Whether `path` names a video or a volume by its suffix."""
    return is_volume(path) or path.suffix.lower() in VIDEO_SUFFIXES


def _key(name: str) -> str:
    key = "".join(name.lower().split()).replace("-", "").replace("_", "")
    key = key.replace("plusplus", "++")
    return key[:-2] + "++" if key.endswith("campp") else key


_BY_KEY = {_key(name): name for name in [*METHODS, *DETECTION_METHODS]}


def canonical_name(name: str) -> str:
    """The registered name a user's spelling means (matched as `reciprocam.registry` says), or
    OptionError listing the methods."""
    registered = _BY_KEY.get(_key(name))
    if registered is None:
        raise OptionError(
            f"unknown method '{name}'; choose one of {', '.join(METHODS)} (detectors:"
            f" {', '.join(DETECTION_METHODS)})"
        )
    return registered
