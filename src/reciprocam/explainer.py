"""The base every explainer shares: model lifecycle, target layers, targets, normalisation.

A method subclasses `Explainer` and implements `_explain`: given the input batch and the
target (`reciprocam.targets`), return the explained output, the target bound to it and the raw
maps of its T scores per image (`Evidence`). The base checks the input, reads the explained part
of the model's output (`output=`, `reciprocam._model.explained_output`), keeps the model
unchanged (eval mode only during the call, hooks removed even on errors, `.grad` untouched), and
turns raw maps into maps in [0, 1].
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

import torch
from torch import Tensor, nn

from ._model import (
    OutputPart,
    check_finite_logits,
    check_hookable,
    check_input,
    class_probabilities,
    eager,
    evaluation_mode,
    model_output,
    reading_output,
    restoring_attributes,
    structure_key,
)
from .errors import ModelError
from .grids import grid_rank, resize
from .layers import LayerSpecs, TargetLayer
from .targets import BoundTarget, Scale, Target, TargetSpec, as_target

_Self = TypeVar("_Self", bound="Explainer")

# Input sizes whose resolved layers an explainer keeps (the oldest is dropped first).
_RESOLVED_SIZES = 16

Targets = TargetSpec
"""What to explain (`reciprocam.targets`): classes (None: each image's top-1; an int; one per
image; a list per image), "all", a Target (Region, TopClasses, Similarity, ...) or a function."""


@dataclass(frozen=True)
class Explanation:
    """Everything one call computes for a batch of B images and T targets per image.

    maps: the targets' maps in [0, 1], at the input size if upsampled (else the feature grid's):
        (B, H, W) for one target per image, (B, T, H, W) for stacked targets (several classes
        per image, TopClasses, a list of references...); a video or volume input's maps have
        its (frames or depth, H, W) grid in place of (H, W).
    targets: (B,) or (B, T) what each map explains: its class, output index or number.
    logits: the model's explained output on the unmodified images: (B, N) logits of a
        classifier, (B, N, H, W) of a segmenter, (B, D) of an embedder.
    scores: raw maps of everything the method's one computation gives, for the forward-only
        methods (ReciproCAM, ViT-ReciproCAM, CAM, Score-CAM, Ablation-CAM, RISE): (B, N, h, w)
        of every class for class targets, (B, T, h, w) of the targets otherwise; else None.
    class_maps: `scores` min-max normalised per image and map, or None.
    attributions: signed pixel attributions, (B, C, H, W) or (B, T, C, H, W) (Guided
        Backprop and the guided CAMs), whose channel-wise largest magnitude makes `maps`.
    multilabel: the classes are independent (score="sigmoid"): `probabilities` are each
        logit's sigmoid, not a softmax.
    target: the target bound to this batch; `target(output, images, scale)` scores any
        outputs of these images as the maps explain them (the metrics use it).
    """

    maps: Tensor
    targets: Tensor
    logits: Tensor
    scores: Tensor | None = None
    class_maps: Tensor | None = None
    attributions: Tensor | None = None
    multilabel: bool = False
    target: BoundTarget | None = None

    @property
    def predictions(self) -> Tensor:
        """The top-1 class of each image, (B,), or of each pixel of a segmentation, (B, H, W)."""
        return self.logits.argmax(dim=1)

    @property
    def probabilities(self) -> Tensor:
        """Class probabilities over axis 1: the softmax of the logits, or their sigmoids for a
        multi-label head or a one-logit binary one (`class_probabilities`)."""
        return class_probabilities(self.logits, self.multilabel)

    @property
    def scale(self) -> Scale:
        """The probability scale of class targets: "sigmoid" for a multi-label explanation,
        else "softmax" (what the metrics read)."""
        return "sigmoid" if self.multilabel else "softmax"

    @property
    def target_probabilities(self) -> Tensor:
        """(B, T) each target's score on the unmodified images, on `scale`: its class
        probability, its region's mean class probability (other targets: their raw score)."""
        assert self.target is not None  # every explainer binds its target
        rows = torch.arange(self.logits.shape[0], device=self.logits.device)
        return self.target(self.logits, rows, self.scale)


@dataclass(frozen=True)
class Evidence:
    """What a method computes for a batch, before the base normalises it."""

    logits: Tensor  # (B, ...) the explained output of the unmodified images
    target: BoundTarget  # bound to that output
    maps: Tensor  # (B, T, h, w) raw maps of the targets, or (B, h, w): one for every target
    scores: Tensor | None = None  # (B, T', h, w) raw maps of `target.every()`
    attributions: Tensor | None = None  # (B, T, C, H, W)


def normalize_maps(scores: Tensor, rank: int = 2) -> Tensor:
    """Min-max normalise (..., *grid) maps over their last `rank` dims (the grid: 2 for images,
    3 for video and volumes); a constant map gives zeros.

    Half-precision maps are normalised, and returned, in float32 (where max - min cannot
    overflow), so every method gives float32 maps on a half-precision model.
    """
    flat = scores.flatten(-rank).to(torch.promote_types(scores.dtype, torch.float32))
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


def upsample_maps(maps: Tensor, size: tuple[int, ...]) -> Tensor:
    """Resize (..., *grid) maps to `size`, bilinearly (images) or trilinearly (video, volumes),
    clipped to [0, 1]."""
    return resize(maps, size).clamp(0.0, 1.0)


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
        self,
        model: nn.Module,
        target_layer: LayerSpecs = None,
        *,
        upsample: bool = True,
        output: OutputPart = None,
    ) -> None:
        self.model = model
        self.upsample = upsample
        self.output = output
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
        """The targets' maps in [0, 1] ((B, H, W), or (B, T, H, W) when stacked), on x's device."""
        return self.explain(x, targets).maps

    def explain(self, x: Tensor, targets: Targets = None) -> Explanation:
        """Explain a (B, C, H, W) batch of images, or a (B, C, T, H, W) batch of clips or
        volumes: maps, targets, logits, and what else the method gives."""
        x = check_input(x, self.model)
        target = as_target(targets)
        with evaluation_mode(self.model), eager(), reading_output(self.output):
            self._layers = self._layers_for(x)
            evidence = self._explain(x, target)
        check_finite(evidence, type(self).__name__, x)
        bound = evidence.target
        if not self.multilabel and bound.reads_classes and evidence.logits.ndim == 2:
            warn_if_probabilities(evidence.logits)
        rank = grid_rank(x)
        with torch.inference_mode():
            maps = evidence.maps.detach()
            if maps.ndim == 1 + rank:
                maps = maps[:, None].expand(-1, bound.count, *maps.shape[1:])
            maps = normalize_maps(maps, rank)
            if self.upsample and maps.shape[-rank:] != x.shape[2:]:
                maps = upsample_maps(maps, tuple(x.shape[2:]))
            scores = evidence.scores
            class_maps = None if scores is None else normalize_maps(scores, rank)
        attributions = evidence.attributions
        indices = bound.indices
        if not bound.stacked:  # one target per image: (B, ...) without the T axis
            maps, indices = maps[:, 0], indices[:, 0]
            attributions = None if attributions is None else attributions[:, 0]
        # Clones made outside inference mode are ordinary tensors the caller may modify freely.
        return Explanation(
            maps=maps.clone(),
            targets=indices.detach().to(x.device).clone(),
            logits=evidence.logits.detach().clone(),
            scores=None if scores is None else scores.detach().clone(),
            class_maps=None if class_maps is None else class_maps.clone(),
            attributions=None if attributions is None else attributions.detach().clone(),
            multilabel=self.multilabel,
            target=bound,
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
        run once on the image, so that an input it refuses is an InputError (`model_output`)."""
        model_output(self.model, image)
        return []

    @abstractmethod
    def _explain(self, x: Tensor, target: Target) -> Evidence:
        """The explained output, the target bound to it and the raw maps of a batch."""

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
    """A method whose one forward computation scores every target, without gradients."""

    def _explain(self, x: Tensor, target: Target) -> Evidence:
        with torch.inference_mode():
            logits, bound, scores = self._target_scores(x, target)
            return Evidence(logits, bound, bound.pick(scores), scores)

    @abstractmethod
    def _target_scores(self, x: Tensor, target: Target) -> tuple[Tensor, BoundTarget, Tensor]:
        """The explained output of the unmodified input, the target bound to it, and the
        (B, T', h, w) raw maps of the bound target's `every()`."""
