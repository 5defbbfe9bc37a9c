"""Checkpoints: reading a state_dict safely and loading it into an architecture."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import ModelError


def read_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """A state_dict from `path`, read with weights_only=True (no code in the file is run).

    Accepts a plain state_dict, one nested under "state_dict", "model" or "model_state_dict",
    and strips the "module." prefix that DataParallel adds.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such checkpoint file")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # A pickled class or function ("Unsupported global"); any other unpickling error
        # (an unknown opcode, a bad load key) means the file is not a checkpoint at all.
        if "Unsupported global" in str(error) or "Unsupported class" in str(error):
            raise ModelError(
                f"{path}: the checkpoint holds Python objects, not only tensors; save"
                " model.state_dict() instead (checkpoints are loaded with weights_only=True)"
            ) from None
        raise ModelError(_unreadable(path, "not a torch.save file")) from None
    except Exception as error:  # torch.load raises KeyError, EOFError, RuntimeError... on junk
        lines = str(error).strip().splitlines()
        reason = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
        raise ModelError(_unreadable(path, reason)) from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(content, Mapping) and isinstance(content.get(key), Mapping):
            content = content[key]
    if not isinstance(content, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in content.items()
    ):
        raise ModelError(
            f"{path}: not a state_dict (a mapping of parameter names to tensors);"
            " save model.state_dict()"
        )
    return {key.removeprefix("module."): value for key, value in content.items()}


def _unreadable(path: Path, reason: str) -> str:
    return (
        f"{path}: not a readable PyTorch checkpoint ({reason}); give a file written by"
        " torch.save(model.state_dict(), path)"
    )


def checkpoint_classes(model: nn.Module, state: Mapping[str, Tensor]) -> int:
    """The checkpoint's class count: the rows of the classifier's weight (the last 2+-dim one)."""
    own = model.state_dict()
    weights = [key for key, value in own.items() if key.endswith("weight") and value.ndim >= 2]
    classifier = weights[-1]
    return int(state.get(classifier, own[classifier]).shape[0])


def load_state(model: nn.Module, state: Mapping[str, Tensor], source: object) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        details = str(error).replace("\n", " ").replace("\t", "")
        raise ModelError(
            f"{source}: does not fit the {type(model).__name__} architecture (name the model it"
            f" was saved from): {details[:300]}"
        ) from None
