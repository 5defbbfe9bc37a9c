"""How a layer's output is laid out: where its channels, its spatial grid and its extra tokens are.

Every layer-based method reads a target layer's output through a `FeatureLayout` and works on
channels-first features (B, C, *grid); masked or ablated copies go back to the layer's own
layout, so no method can misread axes:

- channels-first (B, C, *grid): CNNs, (B, C, H, W);
- channels-last (B, *grid, C): Swin stages, ConvNeXt and MaxViT blocks in NHWC;
- tokens (B, prefix + prod(grid), C): transformers; `prefix` class, distillation or register
  tokens come first, then the grid in row-major order.

The grid is a tuple: (H, W) for images; (T, H, W) for video clips and (D, H, W) for volumes,
the same concept with one axis more (Conv3d maps, Swin3D's channels-last stages, the tokens of
video transformers such as MViT).

`read_layout` decides an output's layout from the model, never from its shape alone:

1. the module that produced it: a convolution, batch norm or pooling (2-D or 3-D) works on
   channels-first maps; a LayerNorm or Linear applied to a 4-D or 5-D tensor works on its last
   axis (channels-last);
   a container, in-place or element-wise module passes on the layout of the very tensor it
   returns (`reciprocam.layers` tracks that during its probe);
2. the input's grid: a feature grid is the input's (H, W) divided by one integer stride s, with
   one rounding on every axis (all floor(H / s) or all ceil(H / s)), and a 3-D grid's first
   axis (time, depth) the input's divided by a stride of its own (video networks downsample
   time less than space); for tokens, the model's declared prefix count, or the fewest prefix
   tokens, that leave such a grid (for a 3-D grid, the one with the most frames).

A 4-D (or 5-D) output whose producer says nothing and whose two readings both fit the input
(e.g. H == C) is read channels-first in a model with no module that works on a 4-D tensor's last
axis, and is otherwise refused as ambiguous with the option to pass (`layout="nhwc"`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor, nn

from .errors import LayerError, OptionError

Kind = Literal["channels_first", "channels_last", "tokens"]

_KINDS: dict[str, Kind] = {
    "channels_first": "channels_first",
    "nchw": "channels_first",
    "channels_last": "channels_last",
    "nhwc": "channels_last",
    "tokens": "tokens",
}

LayoutSpec = str | None
"""A layout as users give it: "nchw" (or "channels_first"), "nhwc" ("channels_last"), "tokens",
or None to decide it from the model."""


@dataclass(frozen=True)
class FeatureLayout:
    """The layout of one layer's output: its kind, grid, channel count and prefix tokens."""

    kind: Kind
    grid: tuple[int, ...]
    channels: int
    prefix: int = 0

    @property
    def positions(self) -> int:
        """K, the number of grid positions."""
        return math.prod(self.grid)

    def shape(self, batch: int) -> tuple[int, ...]:
        """The output's shape for a batch of `batch`."""
        if self.kind == "channels_first":
            return (batch, self.channels, *self.grid)
        if self.kind == "channels_last":
            return (batch, *self.grid, self.channels)
        return (batch, self.prefix + self.positions, self.channels)

    def to_channels_first(self, output: Tensor) -> Tensor:
        """(B, C, *grid) features of an output in this layout (a view; prefix tokens dropped)."""
        if self.kind == "channels_first":
            return output
        if self.kind == "tokens":
            output = output[:, self.prefix :].reshape(output.shape[0], *self.grid, -1)
        return output.movedim(-1, 1)

    def from_channels_first(self, features: Tensor, prefix_tokens: Tensor | None = None) -> Tensor:
        """An output in this layout from (n, C, *grid) features and, for tokens with a prefix,
        the (n, prefix, C) prefix tokens to put first."""
        if self.kind == "channels_first":
            return features
        last = features.movedim(1, -1)
        if self.kind == "channels_last":
            return last
        tokens = last.reshape(features.shape[0], -1, features.shape[1])
        if self.prefix == 0:
            return tokens
        if prefix_tokens is None:
            raise ValueError("a token layout with prefix tokens needs them to rebuild the output")
        return torch.cat([prefix_tokens, tokens], dim=1)

    def prefix_tokens(self, output: Tensor) -> Tensor | None:
        """The (B, prefix, C) prefix tokens of an output, or None for a layout without them."""
        return output[:, : self.prefix] if self.kind == "tokens" and self.prefix else None

    def pooled(self) -> FeatureLayout:
        """The same layout with a grid of one position (what global average pooling keeps)."""
        return replace(self, grid=(1,) * len(self.grid))

    def __str__(self) -> str:
        grid = "DHW" if len(self.grid) == 3 else "HW"  # PyTorch's names: NCDHW, NDHWC
        name = {"channels_first": f"NC{grid}", "channels_last": f"N{grid}C"}.get(
            self.kind, "tokens"
        )
        extra = f" + {self.prefix} prefix" if self.prefix else ""
        return f"{name} {grid_text(self.grid)}{extra}, {self.channels} channels"


def grid_text(grid: tuple[int, ...]) -> str:
    """A grid as people write it: "7x7"."""
    return "x".join(map(str, grid))


def layout_kind(spec: LayoutSpec) -> Kind | None:
    """The kind a user's `layout` option names, or OptionError listing the choices."""
    if spec is None:
        return None
    kind = _KINDS.get(spec.lower()) if isinstance(spec, str) else None
    if kind is None:
        raise OptionError(
            f"unknown layout {spec!r}; choose 'nchw', 'nhwc' or 'tokens' (or None to decide it"
            " from the model)"
        )
    return kind


# Class, distillation and register tokens: no model has more than a few dozen.
_MOST_PREFIX_TOKENS = 64

# Modules whose output is channels-first whatever its shape: they work on axis 1.
_CHANNELS_FIRST_MODULES: tuple[type[nn.Module], ...] = (
    nn.Conv2d,
    nn.ConvTranspose2d,
    nn.BatchNorm2d,
    nn.SyncBatchNorm,
    nn.InstanceNorm2d,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.LPPool2d,
    nn.Dropout2d,
    nn.Upsample,
    nn.PixelShuffle,
    nn.ZeroPad2d,
    nn.ReflectionPad2d,
    nn.ReplicationPad2d,
    nn.Conv1d,
    nn.BatchNorm1d,
    nn.Conv3d,
    nn.ConvTranspose3d,
    nn.BatchNorm3d,
    nn.InstanceNorm3d,
    nn.MaxPool3d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool3d,
    nn.Dropout3d,
)
# Modules that work on the last axis: on a 4-D or 5-D tensor, that axis holds the channels.
_LAST_AXIS_MODULES: tuple[type[nn.Module], ...] = (nn.LayerNorm, nn.Linear, nn.RMSNorm)


def produced_kind(module: nn.Module, shape: tuple[int, ...]) -> Kind | None:
    """What the module's type says of its output's layout, or None if it says nothing."""
    # timm's LayerNorm2d subclasses nn.LayerNorm but normalises axis 1, as its name says.
    if type(module).__name__.endswith(("1d", "2d", "3d")) or isinstance(
        module, _CHANNELS_FIRST_MODULES
    ):
        return "channels_first"
    if isinstance(module, _LAST_AXIS_MODULES) and len(shape) in (4, 5):
        shaped = getattr(module, "normalized_shape", None)
        if shaped is None or tuple(shaped) == shape[-1:]:
            return "channels_last"
    return None


def follows_input(grid: tuple[int, ...], input_grid: tuple[int, ...]) -> bool:
    """Whether `grid` is `input_grid` divided by one integer stride s with one rounding on every
    axis: all sizes floor(size / s), or all ceil(size / s). A 3-D grid's first axis (time or
    depth) has a stride of its own, its (H, W) one shared stride."""
    if len(grid) != len(input_grid):
        return False
    if len(grid) == 3:
        return _strided(grid[:1], input_grid[:1]) and _strided(grid[1:], input_grid[1:])
    return _strided(grid, input_grid)


def _strided(grid: tuple[int, ...], input_grid: tuple[int, ...]) -> bool:
    """Whether every axis of `grid` is `input_grid`'s divided by one stride, one rounding."""
    if any(g < 1 or g > i for g, i in zip(grid, input_grid, strict=True)):
        return False
    # floor(i / s) or ceil(i / s) == g needs i / (g + 1) < s < i / (g - 1).
    lowest = max(1, input_grid[0] // (grid[0] + 1))
    highest = input_grid[0] // (grid[0] - 1) if grid[0] > 1 else input_grid[0]
    return any(
        all(g == i // stride for g, i in zip(grid, input_grid, strict=True))
        or all(g == -(-i // stride) for g, i in zip(grid, input_grid, strict=True))
        for stride in range(lowest, highest + 1)
    )


def read_layout(
    shape: tuple[int, ...],
    input_grid: tuple[int, ...],
    produced: Kind | None,
    requested: Kind | None,
    where: str,
    only_channels_first: bool = False,
) -> FeatureLayout:
    """The layout of an output of `shape` for an input with spatial size `input_grid`.

    `produced` is what the producing module's type says (`produced_kind`), `requested` what the
    user asked for; `where` names the layer in messages. `only_channels_first` says the model
    has no module that works on a 4-D tensor's last axis: both readings fitting, its outputs
    are channels-first. LayerError if the layout cannot be decided.
    """
    dims = len(input_grid)
    if len(shape) == dims + 2:
        first = FeatureLayout("channels_first", tuple(shape[2:]), shape[1])
        last = FeatureLayout("channels_last", tuple(shape[1:-1]), shape[-1])
        if requested == "tokens":
            raise LayerError(f"layer '{where}' outputs {shape}, not (batch, tokens, channels)")
        if requested is not None:
            return first if requested == "channels_first" else last
        if produced is not None:
            return first if produced == "channels_first" else last
        fitting = [layout for layout in (first, last) if follows_input(layout.grid, input_grid)]
        if len(fitting) == 1:
            return fitting[0]
        if fitting and only_channels_first:
            return first
        problem = "both" if fitting else "neither"
        raise LayerError(
            f"layer '{where}' outputs {shape}: {problem} channels-first and channels-last"
            f" readings fit the input's {grid_text(input_grid)} grid; pass"
            " layout='nchw' or layout='nhwc'"
        )
    if len(shape) == 3:
        if requested not in (None, "tokens"):
            raise LayerError(
                f"layer '{where}' outputs {shape}, (batch, tokens, channels): pass"
                " layout='tokens' or choose a layer with a spatial feature map"
            )
        if produced == "channels_first" and requested is None:
            raise LayerError(
                f"layer '{where}' outputs {shape}, a 1-D channels-first sequence, not a"
                " spatial grid of tokens"
            )
        return token_layout(shape, input_grid, where)
    raise LayerError(
        f"layer '{where}' outputs a tensor of shape {shape}; explaining needs a spatial feature"
        " map (batch, channels, height, width), channels-last, or (batch, tokens, channels)"
    )


def token_layout(
    shape: tuple[int, ...], input_grid: tuple[int, ...], where: str, declared: int | None = None
) -> FeatureLayout:
    """(B, N, C) tokens as prefix tokens followed by a grid that follows the input: the model's
    `declared` prefix count if it leaves such a grid, else the fewest that do."""
    tokens = shape[1]
    counts = range(min(tokens, _MOST_PREFIX_TOKENS + 1))
    for prefix in ([declared] if declared is not None else []) + list(counts):
        grid = _grid_of(tokens - prefix, input_grid)
        if grid is not None:
            return FeatureLayout("tokens", grid, shape[2], prefix)
    raise LayerError(
        f"layer '{where}' outputs {tokens} tokens, which do not fold into a grid of the input's"
        f" {grid_text(input_grid)} shape after any number of prefix tokens"
    )


def _grid_of(positions: int, input_grid: tuple[int, ...]) -> tuple[int, ...] | None:
    """The grid of `positions` cells that follows `input_grid`, if there is one; of 3-D grids,
    the one with the most frames (video transformers keep time finer than space)."""
    if len(input_grid) == 3:
        for frames in range(min(positions, input_grid[0]), 0, -1):
            if positions % frames or not _strided((frames,), input_grid[:1]):
                continue
            plane = _grid_of(positions // frames, input_grid[1:])
            if plane is not None:
                return (frames, *plane)
        return None
    if len(input_grid) != 2:
        return None
    for height in range(1, positions + 1):
        if positions % height == 0 and follows_input((height, positions // height), input_grid):
            return (height, positions // height)
    return None
