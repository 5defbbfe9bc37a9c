"""One batch under evaluation, and the model outputs that several metrics share.

Average Drop, Increase in Confidence and ADCC all need the class probability on the same
explanation images E = x * L; Coherency needs the maps of E. A `Batch` computes each of these
once, on first use, so a suite of metrics costs no more forwards than its most demanding member.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._model import check_input, class_probabilities, class_scores, evaluation_mode
from ..errors import InputError
from ..explainer import Explainer, check_target_range, parse_targets
from ..options import positive


@dataclass
class Batch:
    """Images, their maps and targets, with a cache of what metrics compute on them.

    images: (B, C, H, W) the model's (normalised) input.
    maps: (B, H, W) saliency maps in [0, 1] at the input size.
    targets: (B,) the explained classes, or None for each image's top-1 prediction.
    ground_truth: (B, H, W) bool, the pixels of the explained object, or None.
    """

    images: Tensor
    maps: Tensor
    targets: Tensor | None = None
    ground_truth: Tensor | None = None
    _cache: dict[tuple[Any, ...], Tensor] = field(default_factory=dict, repr=False)

    @staticmethod
    def create(
        images: Tensor,
        maps: Tensor,
        targets: object = None,
        ground_truth: Tensor | None = None,
    ) -> Batch:
        """Check and bundle one batch; low-resolution maps are upsampled bilinearly."""
        if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise InputError(f"images must be a float tensor (B, C, H, W), got {shape}")
        batch, _, height, width = images.shape
        maps = _check_maps(maps, batch, (height, width)).to(images)
        parsed = parse_targets(targets, batch)  # type: ignore[arg-type]
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
        chosen = None if parsed is None else parsed.to(images.device)
        return Batch(images, maps, chosen, ground_truth)

    def cached(self, key: tuple[Any, ...], compute: Callable[[], Tensor]) -> Tensor:
        """`compute()` on the first request for `key`, the same tensor afterwards."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def probabilities(self, model: nn.Module, batch_size: int) -> Tensor:
        """(B, N) class probabilities of the model on the unmodified images."""
        return self.cached(
            ("probabilities", id(model)), lambda: probabilities(model, self.images, batch_size)
        )

    def classes(self, model: nn.Module, batch_size: int) -> Tensor:
        """(B,) the targets, or the model's top-1 on each image when none were given."""
        logits = self.probabilities(model, batch_size)
        if self.targets is None:
            return logits.argmax(dim=1)
        check_target_range(self.targets, logits.shape[1])
        return self.targets

    def confidence(self, model: nn.Module, batch_size: int) -> Tensor:
        """(B,) Y: the probability of each image's class on the image."""
        chosen = self.classes(model, batch_size)
        return self.probabilities(model, batch_size).gather(1, chosen[:, None])[:, 0]

    def explanation_images(self) -> Tensor:
        """(B, C, H, W) E = x * L, masking in the normalised space (0 = the mean colour)."""
        return self.cached(("explanation_images",), lambda: self.images * self.maps[:, None])

    def explanation_confidence(self, model: nn.Module, batch_size: int) -> Tensor:
        """(B,) O: the probability of each image's class on its explanation image E."""

        def compute() -> Tensor:
            chosen = self.classes(model, batch_size)
            seen = probabilities(model, self.explanation_images(), batch_size)
            return seen.gather(1, chosen[:, None])[:, 0]

        return self.cached(("explanation_confidence", id(model)), compute)

    def explanation_maps(self, explainer: Explainer, batch_size: int) -> Tensor:
        """(B, H, W) the explainer's maps of E for the same classes, at the input size."""

        def compute() -> Tensor:
            chosen = self.classes(explainer.model, batch_size)
            maps = explainer(self.explanation_images(), chosen).detach()
            return _check_maps(maps, self.images.shape[0], tuple(self.images.shape[-2:]))

        return self.cached(("explanation_maps", id(explainer)), compute)


def probabilities(model: nn.Module, images: Tensor, batch_size: int) -> Tensor:
    """(B, N) class probabilities (`class_probabilities`), `batch_size` images per forward,
    in eval mode."""
    positive("batch_size", batch_size)
    check_input(images, model)
    with evaluation_mode(model), torch.inference_mode():
        chunks = [class_scores(model(part)) for part in torch.split(images, batch_size)]
    logits = torch.cat(chunks)
    # float16/bfloat16 logits are promoted: probabilities near 1 need float32's resolution.
    return class_probabilities(logits.to(torch.promote_types(logits.dtype, torch.float32)))


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
