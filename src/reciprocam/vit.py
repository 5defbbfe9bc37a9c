"""Vision transformers: where the blocks, their first LayerNorm and the token layout are.

Supported families: torchvision's `VisionTransformer`; timm's models with a `blocks` stack of
pre-norm blocks after a patch-embedding convolution (ViT, DeiT, DeiT3, BEiT, EVA, CaiT, register
ViTs); Hugging Face transformers' ViT-like backbones (ViT, DeiT, BEiT, Dinov2, with or without
registers). A transformer inside a wrapper (`nn.Sequential(normalise, vit)`, `DataParallel`)
is found where it sits. The prefix tokens and the patch grid entering a block are read from a
forward pass at each input size (`reciprocam.layout`), never guessed from sqrt(N - 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ._model import explained_output, model_output, probe_noise, removing, same_output
from .errors import LayerError, ModelError, OptionError
from .layout import FeatureLayout, token_layout

SUPPORTED = (
    "torchvision VisionTransformer, timm ViT-like models (ViT, DeiT, BEiT, EVA, CaiT, registers)"
    " and Hugging Face ViT, DeiT, BEiT and Dinov2 classifiers"
)

# The first LayerNorm of a block, by family: torchvision, timm, Hugging Face.
_NORM1_NAMES = ("ln_1", "norm1", "layernorm_before")


@dataclass(frozen=True)
class ViTLayout:
    """The parts of a vision transformer that ViT-ReciproCAM uses."""

    family: str  # "torchvision", "timm" or "transformers"
    model: nn.Module  # the transformer itself (the explained model, or a submodule of it)
    blocks: tuple[nn.Module, ...]
    block_names: tuple[str, ...]  # dotted names from the explained model
    norm1_attribute: str  # the name of each block's first LayerNorm

    def norm1(self, block: int) -> nn.Module:
        """The first LayerNorm of block `block`."""
        module: nn.Module = getattr(self.blocks[block], self.norm1_attribute)
        return module


def find_layout(model: nn.Module) -> ViTLayout | None:
    """The layout of a supported vision transformer in `model` (itself or the outermost
    submodule that is one), or None."""
    for name, module in model.named_modules():
        found = _own_layout(module, f"{name}." if name else "")
        if found is not None:
            return found
    return None


def _own_layout(model: nn.Module, prefix: str) -> ViTLayout | None:
    import torchvision

    if isinstance(model, torchvision.models.vision_transformer.VisionTransformer):
        return _stack_layout("torchvision", model, "encoder.layers", prefix)
    projection = _submodule(model, "patch_embed.proj")
    if (
        isinstance(projection, nn.Conv2d)
        and _submodule(model, "blocks") is not None
        and _embeds_tokens(model, projection)
    ):
        return _stack_layout("timm", model, "blocks", prefix)
    projection = _submodule(model, "embeddings.patch_embeddings.projection")
    if isinstance(projection, nn.Conv2d):
        for stack in ("layers", "encoder.layer", "encoder.layers"):
            if _submodule(model, stack) is not None:
                return _stack_layout("transformers", model, stack, prefix)
    return None


def _embeds_tokens(model: nn.Module, projection: nn.Conv2d) -> bool:
    """Whether a timm patch embedding gives (B, L, D) tokens, not an NHWC map of patches that
    feeds 4-D blocks (SAM's ViT, SAM2's Hiera), unless the model flattens them itself for any
    input size. timm's PatchEmbed says so in `flatten`; another is run on a zero image (of
    two patches a side: a convolution's result is all its shape says)."""
    embedding = model.get_submodule("patch_embed")
    flatten = getattr(embedding, "flatten", None)
    if isinstance(flatten, bool):
        return flatten or getattr(model, "dynamic_img_size", False) is True
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in embedding.modules()):
        return True  # running it in training mode would move its statistics
    side = 2 * max(*projection.kernel_size, *projection.stride)
    image = projection.weight.new_zeros(1, projection.in_channels, side, side)
    try:
        with torch.no_grad():
            output = embedding(image)
    except Exception:  # an embedding that needs its own input size: a plain token ViT's
        return True
    return isinstance(output, Tensor) and output.ndim == 3


def _stack_layout(family: str, model: nn.Module, stack_name: str, prefix: str) -> ViTLayout | None:
    stack = model.get_submodule(stack_name)
    if not isinstance(stack, (nn.Sequential, nn.ModuleList)) or len(stack) == 0:
        return None
    for norm1 in _NORM1_NAMES:
        if all(isinstance(getattr(block, norm1, None), nn.LayerNorm) for block in stack):
            names = tuple(f"{prefix}{stack_name}.{name}" for name, _ in stack.named_children())
            return ViTLayout(family, model, tuple(stack.children()), names, norm1)
    return None


def _submodule(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
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


def target_block(
    model: nn.Module, layout: ViTLayout, spec: nn.Module | str | None, block: int
) -> int:
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


def token_grid(model: nn.Module, layout: ViTLayout, block: int, image: Tensor) -> FeatureLayout:
    """The token layout entering `block`, read from one forward pass of one image."""
    shapes: dict[str, tuple[int, ...]] = {}
    norm_calls = [0]

    def block_hook(module: nn.Module, args: tuple[object, ...], kwargs: dict[str, object]) -> None:
        tokens = args[0] if args else kwargs.get("hidden_states")
        shapes["tokens"] = tuple(tokens.shape) if isinstance(tokens, Tensor) else ()
        norm_calls[0] = 0

    def norm_hook(module: nn.Module, inputs: object, output: object) -> None:
        norm_calls[0] += 1

    with removing(
        layout.blocks[block].register_forward_pre_hook(block_hook, with_kwargs=True),
        layout.norm1(block).register_forward_hook(norm_hook),
    ):
        model_output(model, image)
    tokens = shapes.get("tokens", ())
    if len(tokens) != 3 or norm_calls[0] != 1:
        raise ModelError(
            f"{type(model).__name__}'s block {block} does not take (batch, tokens, dim) tokens"
            f" with one first LayerNorm call (saw tokens {tokens}, {norm_calls[0]} LayerNorm"
            " calls); it is not a plain ViT: use ReciproCAM"
        )
    declared = getattr(layout.model, "num_prefix_tokens", None)
    try:
        return token_layout(
            tokens,
            tuple(image.shape[2:]),
            layout.block_names[block],
            declared if isinstance(declared, int) else None,
        )
    except LayerError as error:
        raise ModelError(f"{error}; it is not a plain ViT: use ReciproCAM") from None


def head_reads_prefix_only(
    model: nn.Module, layout: ViTLayout, grid: FeatureLayout, image: Tensor
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

    reference = explained_output(model(image))
    for hook in (with_noise, prefix_only):
        try:
            with removing(layout.blocks[-1].register_forward_hook(hook)):
                changed = explained_output(model(image))
        except Exception:  # a head that fails without the patch tokens reads them
            return False
        if not same_output(changed, reference):
            return False
    return True
