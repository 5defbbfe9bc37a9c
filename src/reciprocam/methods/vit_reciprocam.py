"""ViT-ReciproCAM (Byun & Lee, arXiv 2310.02588): gradient-free CAM for vision transformers.

Take the tokens X (N, D) entering a transformer block (the last one by default) and the output
n = LN1(X) of its first LayerNorm. For each patch position k = i*w + j of the h x w grid, a
masked copy keeps the prefix tokens (class, distillation, registers; zeroed if
cls_token=False) and weights each patch token m by a[k, m]:

    gaussian (the paper's 3x3 mask): a[k, m] = G(m - k), G = [[1,2,1],[2,4,2],[1,2,1]]/16,
                                     centred at k, clipped at the borders
    token:                           a[k, m] = 1 if m == k else 0

Each copy runs through the rest of the block, with the skip connection unmasked (the paper;
`mask_residual=True` masks it too, as openvino_xai does), then the later blocks and the head:
S[c, i, j] = softmax(logits(copy k))[c] (or the logit), min-max normalised per class.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from .._model import OutputPart, explained_output, removing
from ..errors import InputError, ModelError, ReciproCAMError, first_line
from ..explainer import ClassScoreExplainer
from ..layers import LayerSpecs, TargetLayer, single_layer
from ..layout import FeatureLayout
from ..options import one_of
from ..targets import BoundTarget, Target
from ..vit import (
    head_reads_prefix_only,
    require_layout,
    target_block,
    token_grid,
)
from .reciprocam import (
    BatchSize,
    Score,
    attention_factor,
    check_options,
    row_passes,
    rows_per_pass,
    score_maps,
    spatial_masks,
)
from .vit_fast import BlockParts, KeptTokens, MaskedBlock, block_parts

TokenMask = Literal["gaussian", "token"]

# A masked copy through the rest of a transformer holds a few times its tokens in activations
# (the MLP's hidden layer, norms), or its attention scores where more (`attention_factor`).
_ACTIVATIONS = 8


def token_weights(grid: FeatureLayout, mask: TokenMask, cls_token: bool, like: Tensor) -> Tensor:
    """(K, N) weights of each token in each of the K masked copies."""
    height, width = grid.grid
    patches = spatial_masks(height, width, "pixel" if mask == "token" else mask, like)
    prefix = torch.full(
        (grid.positions, grid.prefix), float(cls_token), dtype=like.dtype, device=like.device
    )
    return torch.cat([prefix, patches.view(grid.positions, grid.positions)], dim=1)


class ViTReciproCAM(ClassScoreExplainer):
    """ViT-ReciproCAM: maps of every class from one batched pass, with an exact fast path.

    Args:
        model: a torchvision, timm or Hugging Face vision transformer classifier.
        target_layer: a transformer block or its first LayerNorm (module or name); None uses
            `block`.
        block: the index of the block to mask (default -1, the last one, as in the paper).
        mask: "gaussian" (the paper's 3x3 token mask) or "token" (one patch).
        cls_token: keep the prefix tokens in the masked copies (the paper) or zero them.
        mask_residual: also mask the block's skip connection (openvino_xai's variant).
        score: "softmax" (the paper), "logit" or "sigmoid" (multi-label).
        batch_size: masked copies per pass; None fits them in 256 MiB of activations, "all"
            runs every copy in one pass (as the exported ONNX graph does).
        upsample: maps at the input size (True) or the patch-grid size (False).
        fast_path: compute torchvision and timm blocks with the exact fast path (see
            `vit_fast`); False, or another block type, uses the generic batched path, in which
            hooks feed the masked copies through the model's own block.
    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpecs = None,
        *,
        block: int = -1,
        mask: TokenMask = "gaussian",
        cls_token: bool = True,
        mask_residual: bool = False,
        score: Score = "softmax",
        batch_size: BatchSize = None,
        upsample: bool = True,
        fast_path: bool = True,
        output: OutputPart = None,
    ) -> None:
        super().__init__(model, target_layer, upsample=upsample, output=output)
        check_options(score=score, batch_size=batch_size)
        one_of("mask", mask, ("gaussian", "token"))
        self.layout = require_layout(model)
        self.block = target_block(
            model, self.layout, single_layer(target_layer, "ViT-ReciproCAM"), block
        )
        self.mask = mask
        self.cls_token = cls_token
        self.mask_residual = mask_residual
        self.score = score
        self.batch_size = batch_size
        self.fast_path = fast_path
        self._parts = block_parts(self.layout.blocks[self.block]) if fast_path else None
        self._head_tokens: dict[TargetLayer, int] = {}
        self._kept: dict[tuple[FeatureLayout, torch.dtype, torch.device], KeptTokens] = {}

    @property
    def uses_fast_path(self) -> bool:
        """Whether the block is computed by the exact fast path."""
        return self._parts is not None

    @property
    def grid(self) -> FeatureLayout | None:
        """The token layout (prefix tokens, patch grid) entering the block at the last call's
        input size, or None before a call."""
        layer = self.target_layer
        return None if layer is None else layer.layout

    def _resolve(self, image: Tensor) -> list[TargetLayer]:
        if image.ndim != 4:
            raise InputError(
                f"ViT-ReciproCAM explains image transformers on (batch, channels, height, width)"
                f" inputs, not {tuple(image.shape)}; explain a video transformer (MViT, Swin3D)"
                " with ReciproCAM, which masks its tokens"
            )
        grid = token_grid(self.model, self.layout, self.block, image)
        name = f"{self.layout.block_names[self.block]}.{self.layout.norm1_attribute}"
        layer = TargetLayer(name, self.layout.norm1(self.block), layout=grid)
        last = self.block == len(self.layout.blocks) - 1
        prefix_only = (
            self._parts is not None
            and last
            and head_reads_prefix_only(self.model, self.layout, grid, image)
        )
        self._head_tokens[layer] = grid.prefix if prefix_only else grid.prefix + grid.positions
        return [layer]

    @property
    def multilabel(self) -> bool:
        return self.score == "sigmoid"

    def _target_scores(self, x: Tensor, target: Target) -> tuple[Tensor, BoundTarget, Tensor]:
        layer = self.target_layer
        assert layer is not None
        assert layer.layout is not None
        grid = layer.layout
        kept = self._kept_tokens(grid, x)
        block = self.layout.blocks[self.block]
        copies: _FastCopies | _GenericCopies
        if self._parts is not None:
            queries = self._head_tokens[layer]
            copies = _FastCopies(self._parts, block, kept, queries, self.mask_residual)
        else:
            norm1 = self.layout.norm1(self.block)
            copies = _GenericCopies(block, norm1, kept.weights, self.mask_residual)
        batch = x.shape[0]
        held = max(_ACTIVATIONS, attention_factor(grid.prefix + grid.positions))
        row_bytes = copies.tokens_per_copy(grid) * grid.channels * x.element_size() * held
        passes = row_passes(
            batch * grid.positions, rows_per_pass(self.batch_size, row_bytes), x.device
        )
        logits: Tensor | None = None
        masked: list[Tensor] = []
        every: BoundTarget | None = None
        for index, rows in enumerate(passes):
            with removing(*copies.register(rows // grid.positions, rows % grid.positions)):
                # After the first pass the block input is known: one image runs the layers before.
                output = self._masked_pass(x if index == 0 else x[:1])
            if logits is None:
                logits, output = output[:batch], output[batch:]
                bound = target.bind(logits)
                every = bound.every()
            assert every is not None
            masked.append(every(output, rows // grid.positions, self.score))
        assert logits is not None
        return logits, bound, score_maps(torch.cat(masked), batch, grid.grid)

    def _masked_pass(self, x: Tensor) -> Tensor:
        """The logits of a pass whose block output holds masked copies after x's own rows."""
        try:
            return explained_output(self.model(x))
        except ReciproCAMError:
            raise
        except Exception as error:  # the model's own code refused the copies' batch
            raise ModelError(
                f"the layers after {self.layout.block_names[self.block]} do not accept a batch"
                f" of masked copies ({first_line(error)}); the model may reshape with the"
                " input's batch size: use ReciproCAM, which then runs each masked copy with its"
                " own copy of the input"
            ) from None

    def _kept_tokens(self, grid: FeatureLayout, like: Tensor) -> KeptTokens:
        """The copies' token weights for the grid, made once per grid, dtype and device."""
        key = (grid, like.dtype, like.device)
        if key not in self._kept:
            self._kept[key] = KeptTokens.of(token_weights(grid, self.mask, self.cls_token, like))
        return self._kept[key]

    def close(self) -> None:
        super().close()
        self._head_tokens.clear()
        self._kept.clear()


class _FastCopies:
    """Hooks that replace the block's output with the fast path's output on the masked copies."""

    def __init__(
        self,
        parts: BlockParts,
        block: nn.Module,
        kept: KeptTokens,
        queries: int,
        mask_residual: bool,
        output: OutputPart = None,
    ) -> None:
        self.parts, self.block, self.kept = parts, block, kept
        self.queries, self.mask_residual = queries, mask_residual
        self.masked: MaskedBlock | None = None

    def tokens_per_copy(self, grid: FeatureLayout) -> int:
        return self.queries

    def register(self, image: Tensor, position: Tensor) -> list[RemovableHandle]:
        def replace_output(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
            if self.masked is None:  # the first pass: the batch's own output comes first
                self.masked = MaskedBlock(
                    self.parts, inputs[0], self.kept, self.queries, self.mask_residual
                )
                return torch.cat([output[:, : self.queries], self.masked(image, position)])
            return self.masked(image, position)

        return [self.block.register_forward_hook(replace_output)]


class _GenericCopies:
    """Hooks that feed masked copies through the model's own block.

    Before the block, the input becomes the copies' skip connections (the image's tokens, or
    their masked version); after the block's first LayerNorm, its output becomes the masked
    LayerNorm output of the image's tokens. On the first pass the batch itself runs too.
    """

    def __init__(self, block: nn.Module, norm1: nn.Module, weights: Tensor, mask_residual: bool):
        self.block, self.norm1, self.weights = block, norm1, weights
        self.mask_residual = mask_residual
        self.tokens: Tensor | None = None
        self.normed: Tensor | None = None

    def tokens_per_copy(self, grid: FeatureLayout) -> int:
        return grid.prefix + grid.positions

    def register(self, image: Tensor, position: Tensor) -> list[RemovableHandle]:
        first = self.tokens is None
        token_weights = self.weights[position][..., None]

        def before_block(
            module: nn.Module, args: tuple[object, ...], kwargs: dict[str, object]
        ) -> tuple[tuple[object, ...], dict[str, object]]:
            given = args[0] if args else kwargs["hidden_states"]
            assert isinstance(given, Tensor)
            if self.tokens is None:
                self.tokens = given
            skip = self.tokens[image] * token_weights if self.mask_residual else self.tokens[image]
            tokens = torch.cat([given, skip]) if first else skip
            if args:
                return (tokens, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": tokens}

        def after_norm(module: nn.Module, inputs: object, output: Tensor) -> Tensor:
            assert self.tokens is not None  # seen before the block ran
            batch = self.tokens.shape[0]
            if self.normed is None:
                self.normed = output[:batch]
            masked = self.normed[image] * token_weights
            return torch.cat([output[:batch], masked]) if first else masked

        return [
            self.block.register_forward_pre_hook(before_block, with_kwargs=True),
            self.norm1.register_forward_hook(after_norm),
        ]
