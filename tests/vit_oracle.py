"""ViT-ReciproCAM from its definition, one masked copy at a time, for the tests.

Each family's block is run piece by piece as its source reads: the first LayerNorm, the token
weights applied to its output (written with loops), attention, the skip connection (unmasked, or
masked with mask_residual), the MLP half, the later blocks, the final norm and the head.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from oracle import GAUSSIAN
from torch import Tensor, nn


def copy_weights(
    k: int, height: int, width: int, prefix: int, mask: str, cls_token: bool
) -> Tensor:
    """(N,) weight of each token in the masked copy of patch k = i * width + j."""
    i, j = divmod(k, width)
    weights = [1.0 if cls_token else 0.0] * prefix
    for u in range(height):
        for v in range(width):
            if mask == "token":
                weights.append(1.0 if (u, v) == (i, j) else 0.0)
            elif abs(u - i) <= 1 and abs(v - j) <= 1:
                weights.append(GAUSSIAN[u - i + 1][v - j + 1])
            else:
                weights.append(0.0)
    return torch.tensor(weights)


# A family's pieces: (tokens entering each block, the block, its norm1, attention, rest, head).
Pieces = tuple[
    Callable[[Tensor], Tensor],  # image -> tokens entering block 0
    list[nn.Module],  # the blocks
    Callable[[nn.Module, Tensor], Tensor],  # (block, normed tokens) -> attention output
    Callable[[nn.Module, Tensor, Tensor], Tensor],  # (block, skip, attention) -> block output
    Callable[[Tensor], Tensor],  # last tokens -> logits
    str,  # the name of the blocks' first LayerNorm
]


def torchvision_pieces(model: nn.Module) -> Pieces:
    def embed(x: Tensor) -> Tensor:
        tokens = model._process_input(x)
        tokens = torch.cat([model.class_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        return tokens + model.encoder.pos_embedding

    def attend(block: nn.Module, normed: Tensor) -> Tensor:
        return block.self_attention(normed, normed, normed, need_weights=False)[0]

    def finish(block: nn.Module, skip: Tensor, attended: Tensor) -> Tensor:
        x = skip + attended
        return x + block.mlp(block.ln_2(x))

    def head(tokens: Tensor) -> Tensor:
        return model.heads(model.encoder.ln(tokens)[:, 0])

    return embed, list(model.encoder.layers), attend, finish, head, "ln_1"


def timm_pieces(model: nn.Module) -> Pieces:
    def embed(x: Tensor) -> Tensor:
        return model.norm_pre(model._pos_embed(model.patch_embed(x)))

    def attend(block: nn.Module, normed: Tensor) -> Tensor:
        return block.attn(normed)

    def finish(block: nn.Module, skip: Tensor, attended: Tensor) -> Tensor:
        x = skip + block.ls1(attended)
        return x + block.ls2(block.mlp(block.norm2(x)))

    def head(tokens: Tensor) -> Tensor:
        return model.forward_head(model.norm(tokens))

    return embed, list(model.blocks), attend, finish, head, "norm1"


def transformers_pieces(model: nn.Module) -> Pieces:
    def embed(x: Tensor) -> Tensor:
        return model.vit.embeddings(x)

    def attend(block: nn.Module, normed: Tensor) -> Tensor:
        return block.attention(normed)[0]

    def finish(block: nn.Module, skip: Tensor, attended: Tensor) -> Tensor:
        x = skip + attended
        return x + block.mlp(block.layernorm_after(x))

    def head(tokens: Tensor) -> Tensor:
        return model.classifier(model.vit.layernorm(tokens)[:, 0])

    return embed, list(model.vit.layers), attend, finish, head, "layernorm_before"


def explicit_vit_scores(
    pieces: Pieces,
    x: Tensor,
    grid: tuple[int, int],
    prefix: int,
    *,
    block: int = -1,
    mask: str = "gaussian",
    cls_token: bool = True,
    mask_residual: bool = False,
    score: str = "softmax",
) -> Tensor:
    """(B, classes, h, w) scores of every masked copy, each run through the model alone."""
    embed, blocks, attend, finish, head, norm1 = pieces
    block %= len(blocks)
    height, width = grid
    maps = []
    with torch.no_grad():
        entering = embed(x)
        for earlier in blocks[:block]:
            entering = earlier(entering)
        target = blocks[block]
        for b in range(x.shape[0]):
            tokens = entering[b : b + 1]
            normed = getattr(target, norm1)(tokens)
            per_copy = []
            for k in range(height * width):
                weights = copy_weights(k, height, width, prefix, mask, cls_token)[None, :, None]
                skip = tokens * weights if mask_residual else tokens
                out = finish(target, skip, attend(target, normed * weights))
                for later in blocks[block + 1 :]:
                    out = later(out)
                logits = head(out)[0]
                per_copy.append(logits.softmax(0) if score == "softmax" else logits)
            maps.append(torch.stack(per_copy, dim=1).view(-1, height, width))
    return torch.stack(maps)
