"""Target layers: find the layer an explainer works on, check it, and tap its output.

A target layer is one call of one module (a module that runs several times in a forward,
such as a shared ReLU, is tapped at its last call). It must output a spatial feature map
(B, C, H, W) with H, W > 1, and the prediction must depend on the input through that output
alone: masking it is then the same as masking everything the rest of the network sees.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from ._model import check_finite_logits, class_scores, probe_noise, same_output
from .errors import InputError, LayerError, first_line

LayerSpec = nn.Module | str | None
"""A target layer as users give it: a submodule, its dotted name, or None for automatic."""

LayerSpecs = LayerSpec | Sequence[nn.Module | str]
"""One target layer, or several for methods that fuse the maps of several layers."""

# Pooling to a fixed output size belongs to the head: its output is never a target.
_HEAD_POOLING = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


@dataclass(frozen=True)
class TokenGrid:
    """How a block's (B, N, D) tokens are laid out: `prefix` tokens, then a row-major grid."""

    prefix: int
    height: int
    width: int
    dim: int

    @property
    def patches(self) -> int:
        return self.height * self.width

    @property
    def tokens(self) -> int:
        return self.prefix + self.patches


@dataclass(frozen=True)
class TargetLayer:
    """One call of one module of the model; `call` counts from 0 within a forward pass.

    `tokens` is set when the layer outputs a vision transformer's (B, N, D) tokens: how they fold
    into a (B, D, h, w) feature map.
    """

    name: str
    module: nn.Module
    call: int = 0
    tokens: TokenGrid | None = None

    def __str__(self) -> str:
        return self.name if self.call == 0 else f"{self.name} (call {self.call + 1})"


class LayerTap:
    """A forward hook on a target layer, registered only inside a `with` block.

    `on_output` receives the layer's output; if it returns a tensor, that tensor replaces the
    output for the rest of the forward pass.
    """

    def __init__(self, layer: TargetLayer, on_output: Callable[[Tensor], Tensor | None]) -> None:
        self.layer = layer
        self.on_output = on_output
        self._calls = 0
        self._handle: torch.utils.hooks.RemovableHandle | None = None

    def __enter__(self) -> LayerTap:
        self._calls = 0
        self._handle = self.layer.module.register_forward_hook(self._hook)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _hook(self, module: nn.Module, inputs: tuple[object, ...], output: object) -> Tensor | None:
        call = self._calls
        self._calls += 1
        if call != self.layer.call or not isinstance(output, Tensor):
            return None
        return self.on_output(output)


@contextmanager
def removing(*handles: RemovableHandle) -> Iterator[None]:
    """Remove the hooks when the block ends, also on errors."""
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def feature_map(output: Tensor, layer: TargetLayer) -> Tensor:
    """The layer's output as a (B, C, h, w) map; tokens lose the prefix and fold into the grid."""
    grid = layer.tokens
    if grid is None:
        return output
    patches = output[:, grid.prefix :]
    return patches.reshape(output.shape[0], grid.height, grid.width, -1).permute(0, 3, 1, 2)


def run_tapped(
    model: nn.Module, x: Tensor, layer: TargetLayer, on_output: Callable[[Tensor], Tensor | None]
) -> Tensor:
    """Run `model(x)` with `on_output` tapping `layer`; return the (batch, classes) logits."""
    with LayerTap(layer, on_output):
        return class_scores(model(x))


@dataclass(frozen=True)
class _Call:
    name: str
    module: nn.Module
    index: int
    shape: tuple[int, ...] | None


def _probe(model: nn.Module, x: Tensor) -> tuple[list[_Call], Tensor]:
    """Run the model once, recording every submodule call in the order the calls finish."""
    calls: list[_Call] = []
    counts: dict[nn.Module, int] = {}

    def recorder(name: str) -> Callable[[nn.Module, object, object], None]:
        def record(module: nn.Module, inputs: object, output: object) -> None:
            index = counts.get(module, 0)
            counts[module] = index + 1
            shape = tuple(output.shape) if isinstance(output, Tensor) else None
            calls.append(_Call(name, module, index, shape))

        return record

    handles = [m.register_forward_hook(recorder(n)) for n, m in model.named_modules() if n]
    try:
        output = model(x)
    except RuntimeError as error:
        reason = first_line(error)
        raise InputError(
            f"the model failed on an input of shape {tuple(x.shape)}: {reason}"
        ) from None
    finally:
        for handle in handles:
            handle.remove()
    return calls, check_finite_logits(class_scores(output), x)


def _is_spatial(shape: tuple[int, ...] | None) -> bool:
    return shape is not None and len(shape) == 4 and shape[2] > 1 and shape[3] > 1


def _first_row_copies(copies: int) -> Callable[[Tensor], Tensor]:
    return lambda features: features[:1].expand(copies, *features.shape[1:]).clone()


def sole_path_problem(
    model: nn.Module, x: Tensor, logits: Tensor, layer: TargetLayer
) -> str | None:
    """Why `layer` is not the only path from one image `x` to its `logits`, or None if it is.

    The layer is run on [x, noise] with its output replaced by copies of x's features. If
    every row's prediction equals x's, nothing reaches the head except through the layer, and
    the head accepts a batch of another size (three rows from a two-image input).
    """
    pair = torch.cat([x, probe_noise(x)])
    try:
        copies = run_tapped(model, pair, layer, _first_row_copies(3))
        if same_output(copies, logits.expand_as(copies)):
            return None
    except (RuntimeError, ValueError, IndexError):
        pass
    try:
        same_size = run_tapped(model, pair, layer, _first_row_copies(2))
        bypassed = not same_output(same_size, logits.expand_as(same_size))
    except (RuntimeError, ValueError, IndexError):
        bypassed = True
    if bypassed:
        return (
            f"layer '{layer}' is bypassed: the prediction also depends on computation that skips"
            " it (a skip connection or a parallel branch); choose a layer whose output alone"
            " determines the prediction, such as a block output, or target_layer=None"
        )
    return (
        f"the layers after '{layer}' do not accept a batch of another size than the model's"
        " input (the model may reshape with the input's batch size, e.g."
        " x.view(input.size(0), -1)); the rest of the network must work on any batch"
    )


def _lookup(model: nn.Module, spec: nn.Module | str) -> tuple[str, nn.Module]:
    modules = dict(model.named_modules())
    if isinstance(spec, str):
        if spec and spec in modules:
            return spec, modules[spec]
        close = difflib.get_close_matches(spec, [name for name in modules if name], n=3)
        hint = (
            f"; did you mean {', '.join(repr(name) for name in close)}?"
            if close
            else "; list the names with [name for name, _ in model.named_modules()]"
        )
        raise LayerError(f"the model has no layer named '{spec}'{hint}")
    if isinstance(spec, nn.Module):
        for name, module in modules.items():
            if module is spec and name:
                return name, module
        raise LayerError("the target layer is not a submodule of the model (or is the whole model)")
    raise LayerError(
        f"target_layer must be None, a layer name or an nn.Module, not {type(spec).__name__}"
    )


def single_layer(spec: LayerSpecs, method: str) -> LayerSpec:
    """The one layer in `spec` (a list of one is accepted), or LayerError for several."""
    if isinstance(spec, Sequence) and not isinstance(spec, str):
        if len(spec) != 1:
            raise LayerError(f"{method} masks one layer; give one target layer, not {len(spec)}")
        return spec[0]
    return spec


def resolve_layer(
    model: nn.Module, spec: LayerSpec, x: Tensor, *, sole_path: bool = True
) -> TargetLayer:
    """The target layer for `spec` (None = automatic), checked on one image `x`.

    Automatic: the last module call, in the order calls finish, whose output is a spatial map
    that alone determines the prediction (so a container such as ResNet's `layer4` wins over
    its last child). Pooling to a fixed size (`AdaptiveAvgPool2d`) counts as part of the head.

    `sole_path=True` (the masking methods) refuses a layer that computation bypasses.
    `sole_path=False` (methods that read a layer's activations and gradients) accepts any
    spatial layer, and the tokens of a supported vision transformer, whose automatic layer is
    then the last block's first LayerNorm.
    """
    if spec is None and not sole_path:
        from .vit import find_layout

        layout = find_layout(model)
        if layout is not None:
            spec = layout.norm1(len(layout.blocks) - 1)
    calls, logits = _probe(model, x)
    last_calls = {call.module: call for call in calls}
    if spec is None:
        candidates = [
            call
            for call in calls
            if last_calls[call.module] is call
            and _is_spatial(call.shape)
            and not isinstance(call.module, _HEAD_POOLING)
        ]
        for call in reversed(candidates):
            layer = TargetLayer(call.name, call.module, call.index)
            if sole_path_problem(model, x, logits, layer) is None:
                return layer
        raise LayerError(
            f"found no layer in {type(model).__name__} whose output is a spatial feature map"
            " (batch, channels, height > 1, width > 1) that alone determines the prediction;"
            " pass target_layer with a layer name"
        )
    name, module = _lookup(model, spec)
    last = last_calls.get(module)
    if last is None:
        raise LayerError(f"layer '{name}' did not run in the model's forward pass")
    layer = TargetLayer(name, module, last.index)
    if not sole_path and last.shape is not None and len(last.shape) == 3:
        return TargetLayer(name, module, last.index, _token_grid(model, x, layer, last.shape))
    if last.shape is None or len(last.shape) != 4:
        found = "no tensor" if last.shape is None else f"a tensor of shape {last.shape}"
        raise LayerError(
            f"layer '{layer}' outputs {found}; explaining needs a spatial feature map"
            " (batch, channels, height, width)"
        )
    if not _is_spatial(last.shape):
        raise LayerError(
            f"layer '{layer}' outputs a {last.shape[2]}x{last.shape[3]} map at this input size;"
            " explaining needs height and width > 1: use a larger input or an earlier layer"
        )
    problem = sole_path_problem(model, x, logits, layer) if sole_path else None
    if problem is not None:
        raise LayerError(problem)
    return layer


def _token_grid(
    model: nn.Module, x: Tensor, layer: TargetLayer, shape: tuple[int, ...]
) -> TokenGrid:
    """How a vision transformer layer's (1, N, D) tokens fold into the patch grid."""
    from .vit import find_layout

    layout = find_layout(model)
    if layout is None:
        raise LayerError(
            f"layer '{layer}' outputs tokens of shape {shape}, but {type(model).__name__} is not"
            " a supported vision transformer, so the patch grid is unknown; choose a layer with"
            " a (batch, channels, height, width) output"
        )
    patches: list[tuple[int, ...]] = []
    handle = layout.patch_embedding.register_forward_hook(
        lambda module, inputs, output: patches.append(tuple(output.shape))
    )
    try:
        class_scores(model(x))
    finally:
        handle.remove()
    height, width = patches[-1][2], patches[-1][3]
    if shape[1] < height * width:
        raise LayerError(
            f"layer '{layer}' outputs {shape[1]} tokens, fewer than the {height}x{width} patches"
        )
    return TokenGrid(shape[1] - height * width, height, width, shape[2])


def resolve_layers(model: nn.Module, specs: LayerSpecs, x: Tensor) -> list[TargetLayer]:
    """The layers of a method that reads activations (one, or several to fuse), on one image."""
    if isinstance(specs, Sequence) and not isinstance(specs, str):
        if not specs:
            raise LayerError("target_layer is an empty list; give at least one layer")
        return [resolve_layer(model, spec, x, sole_path=False) for spec in specs]
    return [resolve_layer(model, specs, x, sole_path=False)]
