"""The base every explainer shares: model lifecycle, target layers, targets, normalisation.

A method subclasses `Explainer` and implements `_explain`: given the input batch and the
requested targets, return the logits, the chosen targets and raw maps (`Evidence`). The base
checks the input, keeps the model unchanged (eval mode only during the call, hooks removed even
on errors, `.grad` untouched), and turns raw maps into maps in [0, 1].
"""

from __future__ import annotations

import warnings
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

from ._model import (
    check_finite_logits,
    check_hookable,
    check_input,
    class_probabilities,
    eager,
    evaluation_mode,
    model_scores,
    restoring_attributes,
    structure_key,
)
from .errors import ModelError, TargetError
from .layers import LayerSpecs, TargetLayer

_Self = TypeVar("_Self", bound="Explainer")

# Input sizes whose resolved layers an explainer keeps (the oldest is dropped first).
_RESOLVED_SIZES = 16

Targets = int | Sequence[int] | Tensor | np.ndarray | None
"""Classes to explain: None (each image's top-1), one class for all images, or one per image."""


@dataclass(frozen=True)
class Explanation:
    """Everything one call computes for a batch of B images and N classes.

    maps: (B, H, W) target-class maps in [0, 1], at the input size if upsampled, else (B, h, w).
    targets: (B,) the explained class of each image.
    logits: (B, N) the model's output on the unmodified images.
    scores: (B, N, h, w) raw maps of every class, for methods whose one computation gives them
        all (ReciproCAM, ViT-ReciproCAM, CAM, Score-CAM, Ablation-CAM, RISE); else None.
    class_maps: (B, N, h, w) `scores` min-max normalised per image and class, or None.
    attributions: (B, C, H, W) signed pixel attributions (Guided Backprop and the guided
        CAMs), whose channel-wise largest magnitude makes `maps`; else None.
    multilabel: the classes are independent (score="sigmoid"): `probabilities` are each
        logit's sigmoid, not a softmax.
    """

    maps: Tensor
    targets: Tensor
    logits: Tensor
    scores: Tensor | None = None
    class_maps: Tensor | None = None
    attributions: Tensor | None = None
    multilabel: bool = False

    @property
    def predictions(self) -> Tensor:
        """(B,) the top-1 class of each image."""
        return self.logits.argmax(dim=1)

    @property
    def probabilities(self) -> Tensor:
        """(B, N) class probabilities: the softmax of the logits, or their sigmoids for a
        multi-label head or a one-logit binary one (`class_probabilities`)."""
        return class_probabilities(self.logits, self.multilabel)


@dataclass(frozen=True)
class Evidence:
    """What a method computes for a batch, before the base normalises it."""

    logits: Tensor  # (B, N)
    targets: Tensor  # (B,)
    maps: Tensor  # (B, h, w) raw maps of the targets
    scores: Tensor | None = None  # (B, N, h, w) raw maps of every class
    attributions: Tensor | None = None  # (B, C, H, W)


def normalize_maps(scores: Tensor) -> Tensor:
    """Min-max normalise (..., h, w) maps over their last two dims; a constant map gives zeros.

    Half-precision maps are normalised, and returned, in float32 (where max - min cannot
    overflow), so every method gives float32 maps on a half-precision model.
    """
    flat = scores.flatten(-2).to(torch.promote_types(scores.dtype, torch.float32))
    low = flat.amin(dim=-1, keepdim=True)
    spread = flat.amax(dim=-1, keepdim=True) - low
    normalised = (flat - low) / spread.clamp_min(torch.finfo(flat.dtype).tiny)
    return normalised.view(scores.shape)


def check_finite(evidence: Evidence, method: str, x: Tensor) -> None:
    """Raise ModelError if the model's logits or the method's raw maps are not finite."""
    check_finite_logits(evidence.logits, x)
    if not bool(torch.isfinite(evidence.maps).all()):
        raise ModelError(
            f"{method}'s maps have NaN or infinite values for this {x.dtype} input of shape"
            f" {tuple(x.shape)}: the model's scores overflow in this dtype; explain in float32"
        )


def warn_if_probabilities(logits: Tensor) -> None:
    """A warning when a model's outputs look like probabilities already (every value in [0, 1],
    several classes), which the softmax scores and `probabilities` would treat as logits."""
    varies = bool(logits.amax() > logits.amin())  # a zero-initialised head gives all zeros
    if logits.shape[1] > 1 and varies and bool(((logits >= 0) & (logits <= 1)).all()):
        warnings.warn(
            "the model's outputs all lie in [0, 1], as probabilities do (a sigmoid or softmax"
            " head), but are read as logits (softmax scores and probabilities): have the model"
            " return its logits, and explain a multi-label head with score='sigmoid'",
            UserWarning,
            stacklevel=3,
        )


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


def choose_targets(logits: Tensor, requested: Tensor | None) -> Tensor:
    """The requested targets, checked against the number of classes, or each row's top-1."""
    if requested is None:
        return logits.argmax(dim=1)
    check_target_range(requested, logits.shape[1])
    return requested.to(logits.device)


class Explainer(ABC):
    """Base class: `explainer(x, targets)` gives (B, H, W) maps, `explain(...)` everything.

    A method implements `_explain` (and `_resolve` if it works on layers). The base checks the
    input and the targets, runs the method with the model in eval mode (each submodule's own
    flag is restored afterwards), resolves the target layers for each input size it sees and
    reuses them for that size, and normalises and upsamples the maps. Use it as a context
    manager, or call `close()`, to drop what it caches; no hook outlives a call.

    Thread safety: explanations of one model (by one explainer or several) take turns under a
    per-model lock, so threads get correct results one after another; to explain in parallel,
    give each thread its own copy of the model (`copy.deepcopy`). The model must not run
    forward passes of its own in another thread during an explanation: they would pass
    through the explanation's hooks.
    """

    def __init__(
        self, model: nn.Module, target_layer: LayerSpecs = None, *, upsample: bool = True
    ) -> None:
        self.model = model
        self.upsample = upsample
        self._layer_spec = target_layer
        self._layers: list[TargetLayer] | None = None
        self._resolved: dict[tuple[object, ...], list[TargetLayer]] = {}

    @property
    def model(self) -> nn.Module:
        """The explained model; it may be replaced (layers are then found again)."""
        return self._model

    @model.setter
    def model(self, model: nn.Module) -> None:
        self._model = check_hookable(model)

    @property
    def multilabel(self) -> bool:
        """Whether the method scores the classes as independent sigmoids (multi-label)."""
        return False

    @property
    def target_layers(self) -> list[TargetLayer] | None:
        """The target layers resolved for the last call's input size (empty for methods without
        one), or None before a call."""
        return self._layers

    @property
    def target_layer(self) -> TargetLayer | None:
        """The first resolved target layer, or None."""
        return self._layers[0] if self._layers else None

    def __call__(self, x: Tensor, targets: Targets = None) -> Tensor:
        """(B, H, W) maps in [0, 1] of the target classes, on x's device."""
        return self.explain(x, targets).maps

    def explain(self, x: Tensor, targets: Targets = None) -> Explanation:
        """Explain a (B, C, H, W) batch: maps, targets, logits, and what else the method gives."""
        x = check_input(x, self.model)
        requested = parse_targets(targets, x.shape[0])
        with evaluation_mode(self.model), eager():
            self._layers = self._layers_for(x)
            evidence = self._explain(x, requested)
        check_finite(evidence, type(self).__name__, x)
        if not self.multilabel:
            warn_if_probabilities(evidence.logits)
        with torch.inference_mode():
            maps = normalize_maps(evidence.maps.detach())
            if self.upsample and maps.shape[-2:] != x.shape[-2:]:
                maps = upsample_maps(maps, (x.shape[2], x.shape[3]))
            scores = evidence.scores
            class_maps = None if scores is None else normalize_maps(scores)
        # Clones made outside inference mode are ordinary tensors the caller may modify freely.
        return Explanation(
            maps=maps.clone(),
            targets=evidence.targets.detach().clone(),
            logits=evidence.logits.detach().clone(),
            scores=None if scores is None else scores.detach().clone(),
            class_maps=None if class_maps is None else class_maps.clone(),
            attributions=None
            if evidence.attributions is None
            else evidence.attributions.detach().clone(),
            multilabel=self.multilabel,
        )

    def _layers_for(self, x: Tensor) -> list[TargetLayer]:
        """The target layers for x's model and input size, resolved once per size.

        The layer and its grid follow the input and the model: a fresh explainer and one that
        saw other sizes, or the model before a submodule was replaced, compute the same maps.
        """
        key = (self.model, tuple(x.shape[1:]), structure_key(self.model))
        layers = self._resolved.get(key)
        if layers is None:
            with torch.inference_mode(), restoring_attributes(self.model):
                layers = self._resolve(x[:1])
            if len(self._resolved) >= _RESOLVED_SIZES:
                del self._resolved[next(iter(self._resolved))]
            self._resolved[key] = layers
        return layers

    def _resolve(self, image: Tensor) -> list[TargetLayer]:
        """The target layers, found and checked on one image. By default none: the model is
        run once on the image, so that an input it refuses is an InputError (`model_scores`)."""
        model_scores(self.model, image)
        return []

    @abstractmethod
    def _explain(self, x: Tensor, requested: Tensor | None) -> Evidence:
        """The logits, targets and raw maps of a batch (targets: requested, else top-1)."""

    def close(self) -> None:
        """Forget the resolved layers and any cached state."""
        self._layers = None
        self._resolved.clear()

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class ClassScoreExplainer(Explainer):
    """A method whose one computation gives a raw map of every class, without gradients."""

    def _explain(self, x: Tensor, requested: Tensor | None) -> Evidence:
        with torch.inference_mode():
            logits, scores = self._class_scores(x)
            targets = choose_targets(logits, requested)
            maps = scores[torch.arange(x.shape[0], device=x.device), targets]
        return Evidence(logits, targets, maps, scores)

    @abstractmethod
    def _class_scores(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, N) logits of the unmodified input and (B, N, h, w) raw maps of every class."""
