"""ViT-ReciproCAM's exact fast path: the masked block without its redundant work.

Every masked copy k of a block's input differs only in token weights a[k, t] (1 for kept
prefix tokens, the mask weight for patches near k, 0 for the rest) applied to the first
LayerNorm's output n. Queries, keys and values are linear in it: a * (n W) + b. So:

- every token with a = 0 has the same key b_k and value b_v: they collapse into one token whose
  attention logit gets + log(count), which is exact;
- queries are needed only where the rest of the network reads: at the prefix tokens when the
  target block is the last one and the head pools the class token(s), at every token otherwise.

Per copy that is about (prefix + 9 + 1) keys instead of N, and, for the last block, prefix-token
MLPs instead of N. Supported blocks: torchvision's `EncoderBlock`, timm's `Block` with plain
`Attention` (no qk-norm, no gate), and Hugging Face's ViT, DeiT, ViT-MSN, I-JEPA and Dinov2
layers (separate query, key and value projections); anything else (relative position biases,
rotary embeddings, class attention) uses the generic batched path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class BlockParts:
    """A pre-norm block: x + after_attention(attention(norm1(x))), then + after_mlp(mlp(norm2))."""

    norm1: nn.Module
    qkv_weight: Tensor  # (3 * A, D): queries, keys, values stacked
    qkv_bias: Tensor | None
    heads: int
    scale: float
    projection: Callable[[Tensor], Tensor]  # concatenated heads (.., A) -> (.., D)
    after_attention: Callable[[Tensor], Tensor]
    norm2: nn.Module
    mlp: Callable[[Tensor], Tensor]
    after_mlp: Callable[[Tensor], Tensor]


def block_parts(block: nn.Module) -> BlockParts | None:
    """The parts of a block the fast path can compute exactly, or None."""
    from torchvision.models.vision_transformer import EncoderBlock

    if type(block) is EncoderBlock:
        return _torchvision_parts(block)
    if type(block).__name__ in _HF_LAYERS:
        return _transformers_parts(block)
    try:
        from timm.layers.attention import Attention
        from timm.models.vision_transformer import Block
    except ImportError:
        return None
    if type(block) is Block and type(block.attn) is Attention:
        return _timm_parts(block)
    return None


def _torchvision_parts(block: Any) -> BlockParts | None:
    attention: nn.MultiheadAttention = block.self_attention
    if not (
        attention.batch_first
        and attention._qkv_same_embed_dim
        and attention.bias_k is None
        and not attention.add_zero_attn
    ):
        return None
    head_dim = attention.embed_dim // attention.num_heads
    return BlockParts(
        block.ln_1,
        attention.in_proj_weight,
        attention.in_proj_bias,
        attention.num_heads,
        head_dim**-0.5,
        attention.out_proj,
        block.dropout,
        block.ln_2,
        block.mlp,
        nn.Identity(),
    )


def _timm_parts(block: Any) -> BlockParts | None:
    attention = block.attn
    extras = [getattr(attention, name, nn.Identity()) for name in ("q_norm", "k_norm", "norm")]
    if not all(isinstance(extra, nn.Identity) for extra in extras):
        return None
    if getattr(attention, "gate", None) is not None:
        return None
    return BlockParts(
        block.norm1,
        attention.qkv.weight,
        attention.qkv.bias,
        attention.num_heads,
        float(attention.scale),
        lambda t: attention.proj_drop(attention.proj(t)),
        lambda t: block.drop_path1(block.ls1(t)),
        block.norm2,
        block.mlp,
        lambda t: block.drop_path2(block.ls2(t)),
    )


# Hugging Face layers: pre-norm blocks whose attention has q/k/v/o projections.
_HF_LAYERS = (
    "ViTLayer",
    "DeiTLayer",
    "ViTMSNLayer",
    "IJepaLayer",
    "Dinov2Layer",
    "Dinov2WithRegistersLayer",
)


def _transformers_parts(block: Any) -> BlockParts | None:
    attention = block.attention
    found = [getattr(attention, name, None) for name in ("q_proj", "k_proj", "v_proj", "o_proj")]
    projections = [p for p in found[:3] if isinstance(p, nn.Linear)]
    if len(projections) != 3 or not isinstance(found[3], nn.Linear):
        return None
    weight = torch.cat([p.weight for p in projections])
    biases = [p.bias for p in projections]
    bias = (
        None
        if all(b is None for b in biases)
        else torch.cat(
            [
                torch.zeros_like(p.weight[:, 0]) if b is None else b
                for p, b in zip(projections, biases, strict=True)
            ]
        )
    )
    if hasattr(block, "layernorm_before"):  # ViT, DeiT: dropout after each branch
        norm1, norm2 = block.layernorm_before, block.layernorm_after
        after_attention = after_mlp = block.dropout
    else:  # Dinov2: layer scale and drop path after each branch
        norm1, norm2 = block.norm1, block.norm2

        def after_attention(t: Tensor) -> Tensor:
            scaled: Tensor = block.drop_path(block.layer_scale1(t))
            return scaled

        def after_mlp(t: Tensor) -> Tensor:
            scaled: Tensor = block.drop_path(block.layer_scale2(t))
            return scaled

    return BlockParts(
        norm1,
        weight,
        bias,
        attention.num_attention_heads,
        float(attention.scaling),
        attention.o_proj,
        after_attention,
        norm2,
        block.mlp,
        after_mlp,
    )


@dataclass(frozen=True)
class KeptTokens:
    """The tokens each of K masked copies keeps (weight != 0), first and in order, padded.

    The tokens a copy drops collapse into one null token, whose attention logit gets
    + log(dropped count). Made once per token grid, so the export traces it as constants.
    """

    weights: Tensor  # (K, N) token weights of each copy
    index: Tensor  # (K, W) the kept tokens, W = the most any copy keeps
    valid: Tensor  # (K, W) False where a row is padding
    kept_weights: Tensor  # (K, W) their weights, 0 on padding
    log_null: Tensor  # (K,) log of the dropped count (-inf if none)

    @classmethod
    def of(cls, weights: Tensor) -> KeptTokens:
        kept = weights != 0
        count = kept.sum(dim=1)
        width = int(count.max())
        index = torch.argsort((~kept).to(torch.int8), dim=1, stable=True)[:, :width]
        valid = torch.arange(width, device=weights.device) < count[:, None]
        return cls(
            weights,
            index,
            valid,
            weights.gather(1, index) * valid,
            torch.log((weights.shape[1] - count).to(weights.dtype)),
        )


class MaskedBlock:
    """The block's output on masked copies of (B, N, D) input tokens, at the `queries` tokens.

    `kept` gives the token weights of the K copies; `mask_residual` also scales the skip
    connection by them (the openvino_xai variant), otherwise it stays unmasked (the paper).
    """

    def __init__(
        self,
        parts: BlockParts,
        tokens: Tensor,
        kept: KeptTokens,
        queries: int,
        mask_residual: bool,
    ) -> None:
        self.parts = parts
        self.tokens = tokens
        self.kept = kept
        self.queries = queries
        self.mask_residual = mask_residual
        normed = parts.norm1(tokens)
        attention_dim = parts.qkv_weight.shape[0] // 3
        self.q0, self.k0, self.v0 = torch.split(normed @ parts.qkv_weight.T, attention_dim, dim=-1)
        bias = parts.qkv_bias if parts.qkv_bias is not None else tokens.new_zeros(3 * attention_dim)
        self.q_bias, self.k_bias, self.v_bias = torch.split(bias, attention_dim)

    def __call__(self, image: Tensor, position: Tensor) -> Tensor:
        """(n, queries, D) block outputs of copies (image[i], position[i])."""
        parts, heads = self.parts, self.parts.heads
        n = image.shape[0]
        kept = self.kept
        query_weights = kept.weights[position, : self.queries, None]  # (n, Q, 1)
        q = query_weights * self.q0[image, : self.queries] + self.q_bias
        gather = image[:, None], kept.index[position]
        active_weights = kept.kept_weights[position][..., None]
        k = active_weights * self.k0[gather] + self.k_bias
        v = active_weights * self.v0[gather] + self.v_bias
        q, k, v = (t.view(n, t.shape[1], heads, -1).transpose(1, 2) for t in (q, k, v))
        head_dim = q.shape[-1]
        logits = (q @ k.transpose(-2, -1)) * parts.scale
        logits = logits.masked_fill(~kept.valid[position][:, None, None, :], float("-inf"))
        null_key = self.k_bias.view(heads, 1, head_dim)
        null_logit = (q * null_key).sum(-1, keepdim=True) * parts.scale
        null_logit = null_logit + kept.log_null[position].view(n, 1, 1, 1)
        probabilities = torch.cat([logits, null_logit], dim=-1).softmax(dim=-1)
        null_value = self.v_bias.view(heads, 1, head_dim)
        mixed = probabilities[..., :-1] @ v + probabilities[..., -1:] * null_value
        attended = parts.projection(mixed.transpose(1, 2).reshape(n, self.queries, -1))
        skip = self.tokens[image, : self.queries]
        if self.mask_residual:
            skip = skip * query_weights
        x = skip + parts.after_attention(attended)
        result: Tensor = x + parts.after_mlp(parts.mlp(parts.norm2(x)))
        return result
