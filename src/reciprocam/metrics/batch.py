"""One batch under evaluation, and the model outputs that several metrics share.

Average Drop, Increase in Confidence and ADCC all need the target's score (a class probability,
a region's mean probability) on the same explanation images E = x * L; Coherency needs the maps
of E. A `Batch` computes each of these once, on first use, so a suite of metrics costs no more
forwards than its most demanding member.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._model import check_input, evaluation_mode, explained_output
from ..errors import InputError, TargetError
from ..explainer import Explainer
from ..options import one_of, positive
from ..targets import BoundTarget, Classes, Scale, Target, TargetSpec, as_target

_Value = TypeVar("_Value")


@dataclass
class Batch:
    """Images, their maps and target, with a cache of what metrics compute on them.

    images: (B, C, H, W) the model's (normalised) input.
    maps: (B, H, W) saliency maps in [0, 1] at the input size.
    target: what the maps explain (`reciprocam.targets`; default each image's top-1 class),
        one score per image; it is bound on the unmodified images, so a region the model
        predicts is the one of the image, not of its perturbed copies.
    ground_truth: (B, H, W) bool, the pixels of the explained object, or None.
    score: the scale class targets are read on: "softmax" (the papers' class probability) or
        "sigmoid" (a multi-label head's label probability).
    """

    images: Tensor
    maps: Tensor
    target: Target = field(default_factory=Classes)
    ground_truth: Tensor | None = None
    score: Scale = "softmax"
    _cache: dict[tuple[Any, ...], Any] = field(default_factory=dict, repr=False)

    @staticmethod
    def create(
        images: Tensor,
        maps: Tensor,
        targets: TargetSpec = None,
        ground_truth: Tensor | None = None,
        *,
        score: Scale = "softmax",
    ) -> Batch:
        """Check and bundle one batch; low-resolution maps are upsampled bilinearly."""
        if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise InputError(f"images must be a float tensor (B, C, H, W), got {shape}")
        batch, _, height, width = images.shape
        maps = _check_maps(maps, batch, (height, width)).to(images)
        target = as_target(targets)
        one_of("score", score, ("softmax", "sigmoid"))
        if ground_truth is not None:
            if not isinstance(ground_truth, Tensor) or ground_truth.shape != (batch, height, width):
                found = (
                    tuple(ground_truth.shape)
                    if isinstance(ground_truth, Tensor)
                    else type(ground_truth).__name__
                )
                raise InputError(
                    f"ground_truth must be a (B, H, W) = {(batch, height, width)} mask, got {found}"
                )
            ground_truth = ground_truth.to(device=images.device, dtype=torch.bool)
        return Batch(images, maps, target, ground_truth, score)

    def cached(self, key: tuple[Any, ...], compute: Callable[[], _Value]) -> _Value:
        """`compute()` on the first request for `key`, the same value afterwards."""
        if key not in self._cache:
            self._cache[key] = compute()
        value: _Value = self._cache[key]
        return value

    def bound(self, model: nn.Module, batch_size: int) -> BoundTarget:
        """The target bound to the model's output on the unmodified images (one per image)."""

        def compute() -> BoundTarget:
            bound = self.target.bind(self.image_outputs(model, batch_size))
            if bound.count != 1:
                raise TargetError(
                    f"the metrics measure one map per image, but the target gives {bound.count};"
                    " measure each target's maps on their own"
                )
            return bound

        return self.cached(("bound", id(model)), compute)

    def image_outputs(self, model: nn.Module, batch_size: int) -> Tensor:
        """The model's explained output on the unmodified images."""
        return self.cached(("outputs", id(model)), lambda: outputs(model, self.images, batch_size))

    def scores(self, model: nn.Module, images: Tensor, batch_size: int, of: Tensor) -> Tensor:
        """(n,) the target's score on n images, image i scored as an image of batch image
        `of[i]` (its class, its region)."""
        return self.scores_of(model, outputs(model, images, batch_size), batch_size, of)

    def scores_of(self, model: nn.Module, output: Tensor, batch_size: int, of: Tensor) -> Tensor:
        """(n,) the target's score read from n outputs of the model, as `scores`."""
        bound = self.bound(model, batch_size)
        return bound(output, of.to(output.device), self.score)[:, 0]

    def confidence(self, model: nn.Module, batch_size: int) -> Tensor:
        """(B,) Y: the target's score (a class probability, a region's mean probability) on
        each image."""
        output = self.image_outputs(model, batch_size)
        return self.scores_of(model, output, batch_size, self._rows())

    def explanation_images(self) -> Tensor:
        """(B, C, H, W) E = x * L, masking in the normalised space (0 = the mean colour)."""
        return self.cached(("explanation_images",), lambda: self.images * self.maps[:, None])

    def explanation_confidence(self, model: nn.Module, batch_size: int) -> Tensor:
        """(B,) O: the target's score on each image's explanation image E."""
        return self.cached(
            ("explanation_confidence", id(model)),
            lambda: self.scores(model, self.explanation_images(), batch_size, self._rows()),
        )

    def explanation_maps(self, explainer: Explainer, batch_size: int) -> Tensor:
        """(B, H, W) the explainer's maps of E for the same targets, at the input size."""

        def compute() -> Tensor:
            bound = self.bound(explainer.model, batch_size)
            maps = explainer(self.explanation_images(), bound).detach()
            if maps.ndim == 4:
                maps = maps[:, 0]
            return _check_maps(maps, self.images.shape[0], tuple(self.images.shape[-2:]))

        return self.cached(("explanation_maps", id(explainer)), compute)

    def _rows(self) -> Tensor:
        return torch.arange(self.images.shape[0], device=self.images.device)


def outputs(model: nn.Module, images: Tensor, batch_size: int) -> Tensor:
    """The model's explained outputs on `images`, `batch_size` images per forward, in eval
    mode (float16/bfloat16 promoted: probabilities near 1 need float32's resolution)."""
    positive("batch_size", batch_size)
    check_input(images, model)
    with evaluation_mode(model), torch.inference_mode():
        chunks = [explained_output(model(part)) for part in torch.split(images, batch_size)]
    output = torch.cat(chunks)
    return output.to(torch.promote_types(output.dtype, torch.float32))


def _check_maps(maps: object, batch: int, size: tuple[int, ...]) -> Tensor:
    if not isinstance(maps, Tensor) or maps.ndim != 3 or maps.shape[0] != batch:
        found = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        raise InputError(f"maps must be (B, H, W) = ({batch}, ...) saliency maps, got {found}")
    if not maps.is_floating_point() or not bool(torch.isfinite(maps).all()):
        raise InputError("maps must be finite float values in [0, 1]")
    if float(maps.min()) < 0.0 or float(maps.max()) > 1.0:
        raise InputError(
            "maps must lie in [0, 1]; min-max normalise them first"
            " (reciprocam.explainer.normalize_maps)"
        )
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)
        maps = maps[:, 0].clamp(0.0, 1.0)
    return maps.detach()
