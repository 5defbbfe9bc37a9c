"""ReciproCAM (Byun & Lee, CVPR Workshops 2024): gradient-free CAM by spatial feature masking.

For a target layer output F (C, H, W) and each position k = i*W + j (row-major, K = H*W),
the masked copy F_k keeps the feature vector F[:, i, j] and zeroes the rest:

    pixel mask:     F_k = F * M_k,           M_k one-hot at (i, j)
    gaussian mask:  F_k = F[:, i, j] x G_k,  G_k = the 3x3 kernel [[1,2,1],[2,4,2],[1,2,1]]/16
                                             centred at (i, j), clipped at the borders

The K copies go through the rest of the network g in one batch and the class scores form the
map: S[c, i, j] = softmax(g(F_k))[c] (or the logit g(F_k)[c]), min-max normalised per class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, TypeAlias

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._model import probe_noise, same_output
from ..errors import OptionError
from ..explainer import ClassScoreExplainer
from ..layers import LayerSpecs, TargetLayer, resolve_layer, run_tapped, single_layer
from ..options import one_of

Score = Literal["softmax", "logit"]
Mask = Literal["pixel", "gaussian"]
BatchSize: TypeAlias = int | Literal["all"] | None

_GAUSSIAN_3X3 = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
# Automatic batch_size: as many masked copies per pass as fit in this many bytes.
_AUTO_BATCH_BYTES = 256 * 2**20


def spatial_masks(height: int, width: int, mask: Mask, like: Tensor) -> Tensor:
    """(K, 1, H, W) masks, row k for position k = i*W + j: one-hot, or the clipped 3x3 Gaussian."""
    positions = height * width
    one_hot = torch.eye(positions, dtype=like.dtype, device=like.device).view(
        positions, 1, height, width
    )
    if mask == "pixel":
        return one_hot
    kernel = _GAUSSIAN_3X3.to(like).view(1, 1, 3, 3)
    return F.conv2d(one_hot, kernel, padding=1)


class ReciproCAM(ClassScoreExplainer):
    """ReciproCAM for CNNs: one forward pass gives the maps of every class.

    Args:
        model: a classifier returning (B, N) logits.
        target_layer: a submodule, its dotted name, or None for the last spatial layer that
            alone determines the prediction (ResNet: `layer4`).
        score: "softmax" (the paper) or "logit" (what openvino_xai computes).
        mask: "pixel" (the paper's one-hot mask) or "gaussian" (the 3x3 variant).
        batch_size: masked copies per pass through the rest of the network; None picks as many
            as fit in 256 MiB, "all" runs every copy in one pass (as the exported ONNX graph
            does). With fewer than B*K, the layers before the target run again for each extra
            pass (on one image), so memory stays bounded for any K and B.
        upsample: True gives (B, H, W) maps at the input size, False at the feature size.
        fast_path: use the global-average-pooling shortcut where it is exact (see below);
            False forces the generic path.

    The shortcut: when the rest of the network starts with global average pooling,
    GAP(F_k) = F[:, i, j] * sum(M_k) / K, so each masked copy is fed as that (C, 1, 1) vector
    instead of a (C, H, W) map. It is used only when a check on the first call proves the
    head gives the same output for a map and for its 1x1 mean (on the real features and on
    random ones), which holds exactly when the head begins with GAP.
    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpecs = None,
        *,
        score: Score = "softmax",
        mask: Mask = "pixel",
        batch_size: BatchSize = None,
        upsample: bool = True,
        fast_path: bool = True,
    ) -> None:
        super().__init__(model, target_layer, upsample=upsample)
        check_options(score=score, batch_size=batch_size)
        one_of("mask", mask, ("pixel", "gaussian"))
        self.score = score
        self.mask = mask
        self.batch_size = batch_size
        self.fast_path = fast_path
        self._uses_gap_shortcut = False

    @property
    def uses_gap_shortcut(self) -> bool:
        """Whether the resolved layer's head takes the exact global-average-pooling shortcut."""
        return self._uses_gap_shortcut

    def _resolve(self, image: Tensor) -> list[TargetLayer]:
        layer = resolve_layer(self.model, single_layer(self._layer_spec, "ReciproCAM"), image)
        self._uses_gap_shortcut = self.fast_path and self._head_starts_with_gap(image, layer)
        return [layer]

    def _head_starts_with_gap(self, image: Tensor, layer: TargetLayer) -> bool:
        """True if the head maps the real features, and random ones, as it maps their 1x1 means."""
        noise: Tensor | None = None

        def with_noise(features: Tensor) -> Tensor:
            nonlocal noise
            noise = probe_noise(features) * features.std().clamp_min(1e-6)
            return torch.cat([features, noise])

        def as_means(features: Tensor) -> Tensor:
            assert noise is not None  # drawn by the first run
            return torch.cat([features, noise]).mean(dim=(2, 3), keepdim=True)

        full = run_tapped(self.model, image, layer, with_noise)
        try:
            pooled = run_tapped(self.model, image, layer, as_means)
        except (RuntimeError, ValueError, IndexError):
            return False
        return same_output(pooled, full)

    def _class_scores(self, x: Tensor) -> tuple[Tensor, Tensor]:
        layer = self.target_layer
        assert layer is not None  # resolved before
        batch = x.shape[0]
        copies: _MaskedCopies | None = None

        def first_pass(features: Tensor) -> Tensor:
            nonlocal copies
            copies = _MaskedCopies(features, self.mask, self._uses_gap_shortcut, self.batch_size)
            unmasked = features.mean(dim=(2, 3), keepdim=True) if copies.pooled else features
            return torch.cat([unmasked, copies.rows(copies.passes[0])])

        output = run_tapped(self.model, x, layer, first_pass)
        assert copies is not None  # made by the tap during the first pass
        logits, masked_logits = output[:batch], [output[batch:]]
        for rows in copies.passes[1:]:
            # The features are known; one image is enough to run the layers before the target.
            masked_logits.append(
                run_tapped(self.model, x[:1], layer, _replace_with(copies.rows(rows)))
            )
        return logits, score_maps(torch.cat(masked_logits), self.score, batch, copies.size)


class _MaskedCopies:
    """The B*K masked copies of (B, C, H, W) features, image-major, made a pass at a time.

    Copy r = b*K + k keeps image b's feature vector at position k: as a (C, H, W) map, or, when
    `pooled` (the GAP shortcut), as the (C, 1, 1) vector GAP would make of that map.
    """

    def __init__(self, features: Tensor, mask: Mask, pooled: bool, batch_size: BatchSize) -> None:
        batch, channels, height, width = features.shape
        self.size = (height, width)
        self.pooled = pooled
        self._positions = height * width
        self._vectors = features.flatten(2)  # (B, C, K)
        self._masks = spatial_masks(height, width, mask, features)
        self._mass = self._masks.flatten(1).sum(dim=1) / self._positions  # sum(M_k) / K
        row_bytes = channels * features.element_size() * (1 if pooled else self._positions)
        self.passes = row_passes(
            batch * self._positions, rows_per_pass(batch_size, row_bytes), features.device
        )

    def rows(self, rows: Tensor) -> Tensor:
        """The copies numbered `rows`, as one batch."""
        image, position = rows // self._positions, rows % self._positions
        centre = self._vectors[image, :, position]  # (n, C): the vector each copy keeps
        if self.pooled:
            return (centre * self._mass[position, None])[:, :, None, None]
        return centre[:, :, None, None] * self._masks[position]


def _replace_with(rows: Tensor) -> Callable[[Tensor], Tensor]:
    return lambda _: rows


def check_options(*, score: str, batch_size: BatchSize) -> None:
    """Raise OptionError for a score or batch_size the ReciproCAM methods do not take."""
    one_of("score", score, ("softmax", "logit"))
    if batch_size != "all" and (
        batch_size is not None
        and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1)
    ):
        raise OptionError(
            f'batch_size must be a positive integer, "all" or None, not {batch_size!r}'
        )


def score_maps(masked_logits: Tensor, score: Score, batch: int, size: tuple[int, int]) -> Tensor:
    """(B, N, h, w) class scores from the (B*K, N) logits of image-major masked copies."""
    logits = masked_logits.to(torch.promote_types(masked_logits.dtype, torch.float32))
    scores = logits.softmax(dim=1) if score == "softmax" else logits
    height, width = size
    by_position = scores.view(batch, height * width, -1).transpose(1, 2)
    return by_position.reshape(batch, -1, height, width)


def rows_per_pass(batch_size: BatchSize, row_bytes: int) -> int | None:
    """`batch_size`, None for "all", or as many copies of `row_bytes` as fit the budget."""
    if batch_size == "all":
        return None
    return batch_size or automatic_rows(row_bytes)


def automatic_rows(row_bytes: int) -> int:
    """As many rows of `row_bytes` each as fit the automatic budget (at least one)."""
    return max(1, _AUTO_BATCH_BYTES // row_bytes)


def row_passes(total: int, per_pass: int | None, device: torch.device) -> list[Tensor]:
    """The copy numbers [0, total) split into passes of `per_pass` (None: one pass).

    One pass is `arange(total)` with no Python arithmetic on `total`, so it traces with a
    symbolic batch size (the ONNX export's dynamic batch).
    """
    if per_pass is None or per_pass >= total:
        return [torch.arange(total, device=device)]
    return [
        torch.arange(start, min(start + per_pass, total), device=device)
        for start in range(0, total, per_pass)
    ]
