"""ReciproCAM (Byun & Lee, CVPR Workshops 2024): gradient-free CAM by spatial feature masking.

For a target layer output F (C, H, W) and each position k = i*W + j (row-major, K = H*W),
the masked copy F_k keeps the feature vector F[:, i, j] and zeroes the rest:

    pixel mask:     F_k = F * M_k,           M_k one-hot at (i, j)
    gaussian mask:  F_k = F[:, i, j] x G_k,  G_k = the 3x3 kernel [[1,2,1],[2,4,2],[1,2,1]]/16
                                             centred at (i, j), clipped at the borders

A video or volume layer's (C, T, H, W) output is masked the same way at each of its K = T*H*W
positions (row-major); its Gaussian is the 3x3x3 kernel g (x) g (x) g, g = [1, 2, 1] / 4, of
which the 2-D kernel is g (x) g.

The K copies go through the rest of the network g in one batch and the class scores form the
map: S[c, i, j] = softmax(g(F_k))[c] (or the logit g(F_k)[c], or its sigmoid for a multi-label
head), min-max normalised per class; a one-logit binary head's softmax is its sigmoid. Any
target (`reciprocam.targets`) is scored the same way, S[t, i, j] = target_t(g(F_k)): a
segmentation region's mean class probability, an embedding's cosine similarity; every target
of an image comes from the same K copies.

F is the layer's output read through its layout (`reciprocam.layout`): channels-last maps and
token grids (Swin, LeViT, PVT, CaiT's patch blocks, ...) are masked the same way, and a token
layout's prefix tokens (a class token) stay unmasked in every copy, so the copies run the
remaining blocks and the head exactly as the model would.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, TypeAlias

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._model import OutputPart, probe_noise, same_output
from ..errors import OptionError
from ..explainer import ClassScoreExplainer
from ..grids import grid_axes
from ..layers import LayerSpecs, TargetLayer, resolve_layer, run_tapped, single_layer
from ..layout import FeatureLayout, LayoutSpec, layout_kind
from ..options import one_of
from ..targets import BoundTarget, Scale, Target
from .flatten_head import FlattenHead, flattening_linear

Score = Scale
Mask = Literal["pixel", "gaussian"]
BatchSize: TypeAlias = int | Literal["all"] | None

_BINOMIAL_3 = torch.tensor([1.0, 2.0, 1.0]) / 4  # the Gaussian mask's kernel along each axis
# Automatic batch_size: as many masked copies per pass as fit in this many bytes (of the
# layer's output, times `attention_factor`).
_AUTO_BATCH_BYTES = 256 * 2**20
# Automatic batch size where each copy runs the whole network (its activations are unknown).
WHOLE_NETWORK_ROWS = 32


def spatial_masks(height: int, width: int, mask: Mask, like: Tensor) -> Tensor:
    """(K, 1, H, W) masks, row k for position k = i*W + j: one-hot, or the clipped 3x3 Gaussian."""
    return grid_masks((height, width), mask, like)


def grid_masks(grid: tuple[int, ...], mask: Mask, like: Tensor) -> Tensor:
    """(K, 1, *grid) masks, row k for position k (row-major): one-hot, or the clipped Gaussian
    (3x3 on an (H, W) grid, 3x3x3 on a (T, H, W) one)."""
    positions = math.prod(grid)
    one_hot = torch.eye(positions, dtype=like.dtype, device=like.device).view(positions, 1, *grid)
    if mask == "pixel":
        return one_hot
    binomial = _BINOMIAL_3.to(like)
    kernel = binomial
    for _ in grid[1:]:
        kernel = kernel[..., None] * binomial
    convolve = F.conv3d if len(grid) == 3 else F.conv2d
    return convolve(one_hot, kernel[None, None], padding=1)


class ReciproCAM(ClassScoreExplainer):
    """ReciproCAM for CNNs: one forward pass gives the maps of every class.

    Args:
        model: a classifier returning (B, N) logits.
        target_layer: a submodule, its dotted name, or None for the last spatial layer that
            alone determines the prediction (ResNet: `layer4`).
        score: "softmax" (the paper), "logit" (what openvino_xai computes) or "sigmoid" (each
            class's own probability, for a multi-label head).
        mask: "pixel" (the paper's one-hot mask) or "gaussian" (the 3x3 variant).
        batch_size: masked copies per pass through the rest of the network; None picks as many
            as fit in 256 MiB, "all" runs every copy in one pass (as the exported ONNX graph
            does). With fewer than B*K, the layers before the target run again for each extra
            pass (on one image), so memory stays bounded for any K and B.
        upsample: True gives (B, H, W) maps at the input size, False at the feature size.
        fast_path: use the global-average-pooling shortcut where it is exact (see below);
            False forces the generic path.
        layout: how to read the layer's output: None decides it from the model
            (`reciprocam.layout`), or "nchw", "nhwc", "tokens".

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
        layout: LayoutSpec = None,
        output: OutputPart = None,
    ) -> None:
        super().__init__(model, target_layer, upsample=upsample, output=output)
        check_options(score=score, batch_size=batch_size)
        one_of("mask", mask, ("pixel", "gaussian"))
        self.score = score
        self.mask = mask
        self.batch_size = batch_size
        self.fast_path = fast_path
        layout_kind(layout)  # a misspelt layout is refused now, not at the first call
        self.layout = layout
        self._gap: dict[TargetLayer, bool] = {}
        self._flatten: dict[TargetLayer, FlattenHead | None] = {}

    @property
    def multilabel(self) -> bool:
        return self.score == "sigmoid"

    @property
    def uses_gap_shortcut(self) -> bool:
        """Whether the last call's layer has the exact global-average-pooling shortcut."""
        layer = self.target_layer
        return layer is not None and self._gap.get(layer, False)

    @property
    def uses_flatten_shortcut(self) -> bool:
        """Whether the last call's layer has the exact flatten + Linear shortcut (`flatten_head`),
        used with the pixel mask."""
        layer = self.target_layer
        return layer is not None and self._flatten.get(layer) is not None

    def _resolve(self, image: Tensor) -> list[TargetLayer]:
        spec = single_layer(self._layer_spec, "ReciproCAM")
        layer = resolve_layer(self.model, spec, image, layout=self.layout)
        # Copies that enter with copies of the input run the whole network: no shortcut applies.
        shortcuts = self.fast_path and not layer.copies_from_input
        gap = shortcuts and self._head_starts_with_gap(image, layer)
        linear = None
        if shortcuts and not gap and self.mask == "pixel":
            linear = flattening_linear(self.model, image, layer)
        self._gap[layer] = gap
        self._flatten[layer] = None if linear is None else FlattenHead(linear)
        return [layer]

    def close(self) -> None:
        super().close()
        self._gap.clear()
        self._flatten.clear()

    def _head_starts_with_gap(self, image: Tensor, layer: TargetLayer) -> bool:
        """True if the head maps the real features, and random ones, as it maps their means
        over the grid (a grid of one position)."""
        layout = layer.layout
        assert layout is not None
        noise: Tensor | None = None

        def with_noise(output: Tensor) -> Tensor:
            nonlocal noise
            noise = probe_noise(output) * output.std().clamp_min(1e-6)
            return torch.cat([output, noise])

        def as_means(output: Tensor) -> Tensor:
            assert noise is not None  # drawn by the first run
            both = torch.cat([output, noise])
            features = layout.to_channels_first(both)
            means = features.mean(dim=grid_axes(features), keepdim=True)
            return layout.pooled().from_channels_first(means, layout.prefix_tokens(both))

        full = run_tapped(self.model, image, layer, with_noise)
        try:
            pooled = run_tapped(self.model, image, layer, as_means)
        except Exception:  # a head that refuses a one-position grid does not start with GAP
            return False
        return same_output(pooled, full)

    def _target_scores(self, x: Tensor, target: Target) -> tuple[Tensor, BoundTarget, Tensor]:
        layer = self.target_layer
        assert layer is not None
        layout = layer.layout
        assert layout is not None  # resolved for this input size
        batch = x.shape[0]
        flatten_head = self._flatten[layer]
        if flatten_head is not None:
            return self._flatten_scores(x, layer, layout, flatten_head, target)
        copies: _MaskedCopies | None = None
        from_input = layer.copies_from_input

        def first_pass(output: Tensor) -> Tensor | None:
            nonlocal copies
            copies = _MaskedCopies(
                output, layout, self.mask, self._gap[layer], self.batch_size, from_input
            )
            if from_input:  # the rest takes only the input's batch: no copies in this pass
                return None
            return torch.cat([copies.unmasked(), copies.rows(copies.passes[0])])

        output = run_tapped(self.model, x, layer, first_pass)
        assert copies is not None  # made by the tap during the first pass
        logits = output[:batch]
        bound = target.bind(logits)
        every, positions = bound.every(), copies.positions
        # Each pass is scored as it ends: a segmenter's copies are never all held at once.
        masked = (
            [] if from_input else [every(output[batch:], copies.passes[0] // positions, self.score)]
        )
        for rows in copies.passes[len(masked) :]:
            # The features are known; one image is enough to run the layers before the target,
            # or, when copies enter with the input, the image of each copy.
            source = x[rows // positions] if from_input else x[:1]
            copy_output = run_tapped(self.model, source, layer, _replace_with(copies.rows(rows)))
            masked.append(every(copy_output, rows // positions, self.score))
        return logits, bound, score_maps(torch.cat(masked), batch, copies.size)

    def _flatten_scores(
        self,
        x: Tensor,
        layer: TargetLayer,
        layout: FeatureLayout,
        head: FlattenHead,
        target: Target,
    ) -> tuple[Tensor, BoundTarget, Tensor]:
        """Scores with the copies entering at the flattening Linear layer's output."""
        outputs: list[Tensor] = []

        def compute(output: Tensor) -> None:
            outputs.append(head.outputs(output, layout))

        with head.appending(outputs):
            output = run_tapped(self.model, x, layer, compute)
        batch = x.shape[0]
        bound = target.bind(output[:batch])
        images = torch.arange(batch, device=x.device).repeat_interleave(layout.positions)
        masked = bound.every()(output[batch:], images, self.score)
        return output[:batch], bound, score_maps(masked, batch, layout.grid)


class _MaskedCopies:
    """The B*K masked copies of a layer's output, image-major, made a pass at a time.

    Copy r = b*K + k keeps image b's feature vector at position k: as a (C, *grid) map, or, when
    `pooled` (the GAP shortcut), as the (C, 1, ...) vector GAP would make of that map; either goes
    back to the layer's layout, with image b's prefix tokens first for a token layout.
    `whole_network`: each copy runs the whole network, so fewer fit in a pass.
    """

    def __init__(
        self,
        output: Tensor,
        layout: FeatureLayout,
        mask: Mask,
        pooled: bool,
        batch_size: BatchSize,
        whole_network: bool = False,
    ) -> None:
        features = layout.to_channels_first(output)
        batch = features.shape[0]
        self.size = tuple(features.shape[2:])
        self.pooled = pooled
        self._output = output
        self._layout = layout.pooled() if pooled else layout
        self._prefix = layout.prefix_tokens(output)
        self.positions = math.prod(self.size)
        self._ones = (1,) * len(self.size)  # a vector's shape as a grid of one position
        self._vectors = features.flatten(2)  # (B, C, K)
        self._masks = grid_masks(self.size, mask, features)
        self._mass = self._masks.flatten(1).sum(dim=1) / self.positions  # sum(M_k) / K
        row_bytes = output[0].numel() * output.element_size()
        if pooled:
            row_bytes //= self.positions
        else:  # the rest may attend over the grid (a transformer's blocks, in any layout)
            row_bytes *= attention_factor(layout.prefix + self.positions)
        per_pass = (
            min(automatic_rows(row_bytes), WHOLE_NETWORK_ROWS)
            if whole_network and batch_size is None
            else rows_per_pass(batch_size, row_bytes)
        )
        self.passes = row_passes(batch * self.positions, per_pass, features.device)

    def unmasked(self) -> Tensor:
        """The batch's own output (its grid means, for the GAP shortcut)."""
        if not self.pooled:
            return self._output
        means = self._vectors.mean(dim=2).view(*self._vectors.shape[:2], *self._ones)
        return self._layout.from_channels_first(means, self._prefix)

    def rows(self, rows: Tensor) -> Tensor:
        """The copies numbered `rows`, as one batch in the layer's layout."""
        image, position = rows // self.positions, rows % self.positions
        centre = self._vectors[image, :, position]  # (n, C): the vector each copy keeps
        if self.pooled:
            features = (centre * self._mass[position, None]).view(*centre.shape, *self._ones)
        else:
            features = centre.view(*centre.shape, *self._ones) * self._masks[position]
        prefix = None if self._prefix is None else self._prefix[image]
        return self._layout.from_channels_first(features, prefix)


def _replace_with(rows: Tensor) -> Callable[[Tensor], Tensor]:
    return lambda _: rows


def check_options(*, score: str, batch_size: BatchSize) -> None:
    """Raise OptionError for a score or batch_size the ReciproCAM methods do not take."""
    one_of("score", score, ("softmax", "logit", "sigmoid"))
    if batch_size != "all" and (
        batch_size is not None
        and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1)
    ):
        raise OptionError(
            f'batch_size must be a positive integer, "all" or None, not {batch_size!r}'
        )


def score_maps(masked_scores: Tensor, batch: int, size: tuple[int, ...]) -> Tensor:
    """(B, T, *size) maps from the (B*K, T) scores of image-major masked copies."""
    scores = masked_scores.to(torch.promote_types(masked_scores.dtype, torch.float32))
    by_position = scores.view(batch, math.prod(size), -1).transpose(1, 2)
    return by_position.reshape(batch, -1, *size)


def attention_factor(tokens: int) -> int:
    """How many times its own size a copy of N tokens (or grid positions) can hold in the rest
    of a transformer: itself, and attention scores of N x N per head, with a head per 64
    channels (N / 64 times its size)."""
    return 1 + -(-tokens // 64)


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
