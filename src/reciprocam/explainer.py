"""The base every explainer shares: model lifecycle, the target layer, targets, normalisation.

A method subclasses `Explainer` and implements `_class_scores`: given the input batch and the
resolved target layer, return the model's logits and a raw score map per class. The base
checks the input, keeps the model unchanged (eval mode only during the call, no gradients,
hooks removed even on errors), picks the targets and turns scores into maps in [0, 1].
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral
from types import TracebackType
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._model import check_input, evaluation_mode
from .errors import ModelError, TargetError
from .layers import LayerSpec, TargetLayer, resolve_layer

_Self = TypeVar("_Self", bound="Explainer")

Targets = int | Sequence[int] | Tensor | np.ndarray | None
"""Classes to explain: None (each image's top-1), one class for all images, or one per image."""


@dataclass(frozen=True)
class Explanation:
    """Everything one call computes for a batch of B images and N classes.

    maps: (B, H, W) target-class maps in [0, 1], at the input size if upsampled, else (B, h, w).
    targets: (B,) the explained class of each image.
    logits: (B, N) the model's output on the unmodified images.
    scores: (B, N, h, w) raw per-position scores of every class (before normalisation).
    class_maps: (B, N, h, w) `scores` min-max normalised per image and class, in [0, 1].
    """

    maps: Tensor
    targets: Tensor
    logits: Tensor
    scores: Tensor
    class_maps: Tensor

    @property
    def predictions(self) -> Tensor:
        """(B,) the top-1 class of each image."""
        return self.logits.argmax(dim=1)

    @property
    def probabilities(self) -> Tensor:
        """(B, N) softmax of the logits."""
        return self.logits.softmax(dim=1)


def normalize_maps(scores: Tensor) -> Tensor:
    """Min-max normalise (..., h, w) maps over their last two dims; a constant map gives zeros."""
    flat = scores.flatten(-2)
    low = flat.amin(dim=-1, keepdim=True)
    spread = flat.amax(dim=-1, keepdim=True) - low
    normalised = (flat - low) / spread.clamp_min(torch.finfo(flat.dtype).tiny)
    return normalised.view_as(scores)


def upsample_maps(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinearly resize (B, h, w) maps to `size`, clipped to [0, 1]."""
    resized = F.interpolate(maps.unsqueeze(1), size=size, mode="bilinear", align_corners=False)
    return resized.squeeze(1).clamp(0.0, 1.0)


def parse_targets(targets: Targets, batch: int) -> Tensor | None:
    """Check the form of `targets` for a batch; the class range is checked once N is known."""
    if targets is None:
        return None
    if isinstance(targets, np.ndarray):
        targets = torch.from_numpy(targets)
    if isinstance(targets, Tensor):
        if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
            raise TargetError(f"targets must be integer class indices, not {targets.dtype}")
        if targets.ndim > 1:
            raise TargetError(
                f"targets must be one class or one per image, got shape {tuple(targets.shape)}"
            )
        values = targets.reshape(-1).tolist()
        scalar = targets.ndim == 0
    elif isinstance(targets, Integral) and not isinstance(targets, bool):
        values, scalar = [int(targets)], True
    elif isinstance(targets, Sequence) and not isinstance(targets, str):
        values, scalar = list(targets), False
    else:
        raise TargetError(
            "targets must be None, a class index or one index per image,"
            f" not {type(targets).__name__}"
        )
    if any(isinstance(v, bool) or not isinstance(v, Integral) for v in values):
        raise TargetError(f"targets must be integer class indices, got {values!r}")
    if scalar:
        values = values * batch
    elif len(values) != batch:
        raise TargetError(
            f"got {len(values)} targets for a batch of {batch} images; give one per image"
        )
    return torch.tensor(values, dtype=torch.long)


def check_target_range(targets: Tensor, classes: int) -> None:
    """Raise TargetError unless every target is a valid class index in [0, classes)."""
    bad = [int(t) for t in targets if not 0 <= int(t) < classes]
    if bad:
        raise TargetError(
            f"class {bad[0]} is out of range: the model has {classes} classes (0 to {classes - 1})"
        )


class Explainer(ABC):
    """Base class: `explainer(x, targets)` gives (B, H, W) maps, `explain(...)` everything.

    The target layer is resolved (and checked) on the first call and reused afterwards. Use it
    as a context manager, or call `close()`, to drop what it caches.
    """

    def __init__(self, model: nn.Module, target_layer: LayerSpec = None, *, upsample: bool = True):
        if not isinstance(model, nn.Module):
            raise ModelError(f"model must be a torch.nn.Module, not {type(model).__name__}")
        self.model = model
        self.upsample = upsample
        self._layer_spec = target_layer
        self._layer: TargetLayer | None = None

    @property
    def target_layer(self) -> TargetLayer | None:
        """The resolved target layer, or None before the first call."""
        return self._layer

    def __call__(self, x: Tensor, targets: Targets = None) -> Tensor:
        """(B, H, W) maps in [0, 1] of the target classes, on x's device."""
        return self.explain(x, targets).maps

    def explain(self, x: Tensor, targets: Targets = None) -> Explanation:
        """Explain a (B, C, H, W) batch: maps, targets, logits and every class's scores."""
        x = check_input(x, self.model)
        requested = parse_targets(targets, x.shape[0])
        with evaluation_mode(self.model), torch.inference_mode():
            if self._layer is None:
                self._layer = self._resolve(x[:1])
            logits, scores = self._class_scores(x, self._layer)
            chosen = logits.argmax(dim=1) if requested is None else requested.to(x.device)
            if requested is not None:
                check_target_range(requested, logits.shape[1])
            class_maps = normalize_maps(scores)
            maps = class_maps[torch.arange(x.shape[0], device=x.device), chosen]
            if self.upsample:
                maps = upsample_maps(maps, (x.shape[2], x.shape[3]))
        # Clones made outside inference mode are ordinary tensors the caller may modify freely.
        return Explanation(
            maps=maps.clone(),
            targets=chosen.clone(),
            logits=logits.clone(),
            scores=scores.clone(),
            class_maps=class_maps.clone(),
        )

    def _resolve(self, image: Tensor) -> TargetLayer:
        """Resolve the target layer on one image; a method may add checks of its own."""
        return resolve_layer(self.model, self._layer_spec, image)

    @abstractmethod
    def _class_scores(self, x: Tensor, layer: TargetLayer) -> tuple[Tensor, Tensor]:
        """(B, N) logits of the unmodified input and (B, N, h, w) raw scores of every class."""

    def close(self) -> None:
        """Forget the resolved layer and any cached state (no hook outlives a call anyway)."""
        self._layer = None

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
