"""The names the command line shows and matches before the library loads: methods, metrics,
the demo model. Plain constants, so that `reciprocam --help` does not import torch; the tests
check that they equal the registries' names."""

from __future__ import annotations

from .errors import OptionError

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
