"""Vision transformers: where the blocks, their first LayerNorm and the patch grid are.

Supported families: torchvision's `VisionTransformer`, timm's ViT and DeiT (any number of
prefix tokens: class, distillation, registers), and Hugging Face transformers'
`ViTForImageClassification` / `DeiTForImageClassification`. The number of prefix tokens and the
patch grid are read from a forward pass (the patch-embedding convolution's output and the
token count), never guessed from sqrt(N - 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ._model import class_scores, probe_noise, same_output
from .errors import LayerError, ModelError, OptionError
from .layers import LayerSpec, TokenGrid, removing

SUPPORTED = (
    "torchvision VisionTransformer, timm VisionTransformer / DeiT (with any prefix tokens) and"
    " Hugging Face ViTForImageClassification / DeiTForImageClassification"
)


@dataclass(frozen=True)
class ViTLayout:
    """The parts of a vision transformer that ViT-ReciproCAM uses."""

    family: str  # "torchvision", "timm" or "transformers"
    blocks: tuple[nn.Module, ...]
    block_names: tuple[str, ...]
    norm1_attribute: str  # the name of each block's first LayerNorm
    patch_embedding: nn.Conv2d  # cuts the image into patches: its output grid is the map's

    def norm1(self, block: int) -> nn.Module:
        """The first LayerNorm of block `block`."""
        module: nn.Module = getattr(self.blocks[block], self.norm1_attribute)
        return module


def find_layout(model: nn.Module) -> ViTLayout | None:
    """The layout of a supported vision transformer, or None for any other model."""
    import torchvision

    if isinstance(model, torchvision.models.vision_transformer.VisionTransformer):
        names = tuple(f"encoder.layers.{name}" for name, _ in model.encoder.layers.named_children())
        return ViTLayout("torchvision", tuple(model.encoder.layers), names, "ln_1", model.conv_proj)
    blocks = getattr(model, "blocks", None)
    projection = getattr(getattr(model, "patch_embed", None), "proj", None)
    if _is_stack(blocks, "norm1") and isinstance(projection, nn.Conv2d):
        assert isinstance(blocks, nn.Module)
        names = tuple(f"blocks.{name}" for name, _ in blocks.named_children())
        return ViTLayout("timm", tuple(blocks.children()), names, "norm1", projection)
    for backbone_name in ("vit", "deit"):
        backbone = getattr(model, backbone_name, None)
        if backbone is None:
            continue
        stack_name = "layers" if hasattr(backbone, "layers") else "encoder.layer"
        stack = backbone.get_submodule(stack_name) if _has(backbone, stack_name) else None
        embeddings = getattr(backbone, "embeddings", None)
        projection = getattr(getattr(embeddings, "patch_embeddings", None), "projection", None)
        if _is_stack(stack, "layernorm_before") and isinstance(projection, nn.Conv2d):
            assert isinstance(stack, nn.Module)
            prefix = f"{backbone_name}.{stack_name}"
            names = tuple(f"{prefix}.{name}" for name, _ in stack.named_children())
            return ViTLayout(
                "transformers", tuple(stack.children()), names, "layernorm_before", projection
            )
    return None


def require_layout(model: nn.Module) -> ViTLayout:
    """The layout of `model`, or a ModelError that says which transformers are supported."""
    layout = find_layout(model)
    if layout is None:
        raise ModelError(
            f"{type(model).__name__} is not a supported vision transformer; ViT-ReciproCAM"
            f" supports {SUPPORTED} (use ReciproCAM for CNNs)"
        )
    return layout


def target_block(model: nn.Module, layout: ViTLayout, spec: LayerSpec, block: int) -> int:
    """The index of the block to mask: `spec` names a block or its first LayerNorm, else `block`."""
    if spec is None:
        if not -len(layout.blocks) <= block < len(layout.blocks):
            raise OptionError(
                f"block {block} is out of range: the model has {len(layout.blocks)} blocks"
                f" (0 to {len(layout.blocks) - 1}, or negative from the end)"
            )
        return block % len(layout.blocks)
    modules = dict(model.named_modules())
    module = modules.get(spec) if isinstance(spec, str) else spec
    for index, candidate in enumerate(layout.blocks):
        if module is candidate or module is layout.norm1(index):
            return index
    name = spec if isinstance(spec, str) else type(spec).__name__
    raise LayerError(
        f"'{name}' is neither a transformer block nor a block's first LayerNorm; give one such"
        f" as '{layout.block_names[-1]}' or '{layout.block_names[-1]}.{layout.norm1_attribute}'"
    )


def token_grid(model: nn.Module, layout: ViTLayout, block: int, image: Tensor) -> TokenGrid:
    """Read the token layout entering `block` from one forward pass of one image."""
    shapes: dict[str, tuple[int, ...]] = {}
    norm_calls = [0]

    def patch_hook(module: nn.Module, inputs: object, output: Tensor) -> None:
        shapes["patches"] = tuple(output.shape)

    def block_hook(module: nn.Module, args: tuple[object, ...], kwargs: dict[str, object]) -> None:
        tokens = args[0] if args else kwargs.get("hidden_states")
        shapes["tokens"] = tuple(tokens.shape) if isinstance(tokens, Tensor) else ()
        norm_calls[0] = 0

    def norm_hook(module: nn.Module, inputs: object, output: object) -> None:
        norm_calls[0] += 1

    with removing(
        layout.patch_embedding.register_forward_hook(patch_hook),
        layout.blocks[block].register_forward_pre_hook(block_hook, with_kwargs=True),
        layout.norm1(block).register_forward_hook(norm_hook),
    ):
        class_scores(model(image))
    patches, tokens = shapes.get("patches", ()), shapes.get("tokens", ())
    if len(patches) != 4 or len(tokens) != 3 or norm_calls[0] != 1:
        raise ModelError(
            f"{type(model).__name__}'s block {block} does not take (batch, tokens, dim) tokens"
            f" from a patch embedding with one first LayerNorm call (saw patches {patches},"
            f" tokens {tokens}, {norm_calls[0]} LayerNorm calls); it is not a plain ViT"
        )
    height, width = patches[2], patches[3]
    grid = TokenGrid(tokens[1] - height * width, height, width, tokens[2])
    declared = getattr(model, "num_prefix_tokens", grid.prefix)
    if grid.prefix < 0 or declared != grid.prefix:
        raise ModelError(
            f"the token count {tokens[1]} does not fit a {height}x{width} patch grid with"
            f" {declared} prefix tokens; the model does not lay out its tokens as a plain ViT"
        )
    return grid


def _has(module: nn.Module, name: str) -> bool:
    try:
        module.get_submodule(name)
    except AttributeError:
        return False
    return True


def _is_stack(stack: object, norm1: str) -> bool:
    return (
        isinstance(stack, (nn.Sequential, nn.ModuleList))
        and len(stack) > 0
        and all(isinstance(getattr(b, norm1, None), nn.LayerNorm) for b in stack)
    )


def head_reads_prefix_only(
    model: nn.Module, layout: ViTLayout, grid: TokenGrid, image: Tensor
) -> bool:
    """Whether the prediction depends on the last block's prefix tokens alone.

    True when the output stays the same with the patch tokens replaced by noise, and with them
    removed (a sequence of the prefix tokens only), as with class-token pooling.
    """
    if grid.prefix == 0:
        return False

    def with_noise(module: nn.Module, inputs: object, output: Tensor) -> Tensor:
        return torch.cat([output[:, : grid.prefix], probe_noise(output[:, grid.prefix :])], 1)

    def prefix_only(module: nn.Module, inputs: object, output: Tensor) -> Tensor:
        return output[:, : grid.prefix]

    reference = class_scores(model(image))
    for hook in (with_noise, prefix_only):
        try:
            with removing(layout.blocks[-1].register_forward_hook(hook)):
                changed = class_scores(model(image))
        except (RuntimeError, ValueError, IndexError, TypeError):
            return False
        if not same_output(changed, reference):
            return False
    return True
