"""Target layers: find the layer an explainer works on, check it, and tap its output.

A target layer is one call of one module (a module that runs several times in a forward,
such as a shared ReLU, is tapped at its last call). It must output a spatial grid of
features, every side > 1, in a layout `reciprocam.layout` decides (channels-first,
channels-last or tokens), and the prediction must depend on the input through that output
alone: masking it is then the same as masking everything the rest of the network sees.
"""

from __future__ import annotations

import difflib
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Literal

import torch
from torch import Tensor, nn

from ._model import (
    check_finite_logits,
    explained_output,
    model_output,
    probe_noise,
    removing,
    same_output,
)
from .errors import LayerError
from .layout import (
    FeatureLayout,
    Kind,
    LayoutSpec,
    grid_text,
    layout_kind,
    produced_kind,
    read_layout,
)
from .vit import find_layout

LayerSpec = nn.Module | str | None
"""A target layer as users give it: a submodule, its dotted name, or None for automatic."""

LayerSpecs = LayerSpec | Sequence[nn.Module | str]
"""One target layer, or several for methods that fuse the maps of several layers."""

Entry = Literal["layer", "input"]
"""Where copies of a layer's output enter the model (see `copies_entry`)."""

# Modules that keep their input's layout, value by value.
_ELEMENTWISE = (
    nn.Identity,
    nn.ReLU,
    nn.ReLU6,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
    nn.LeakyReLU,
    nn.ELU,
    nn.Mish,
    nn.Dropout,
)

# Pooling to a fixed output size belongs to the head: its output is never a target.
_HEAD_POOLING = (
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool3d,
)


@dataclass(frozen=True)
class TargetLayer:
    """One call of one module of the model; `call` counts from 0 within a forward pass.

    `layout` says how the output is laid out (channels-first, channels-last or tokens, its grid
    at the input size it was resolved for); None for layers that are not read as feature maps
    (FullGrad's bias layers). `copies_from_input`: the layers after it take only the input's
    batch size, so copies of its output enter with copies of the input (see `copies_entry`).
    """

    name: str
    module: nn.Module
    call: int = 0
    layout: FeatureLayout | None = None
    copies_from_input: bool = False

    def __str__(self) -> str:
        return self.name if self.call == 0 else f"{self.name} (call {self.call + 1})"

    def features(self, output: Tensor) -> Tensor:
        """The layer's output as (B, C, *grid) channels-first features."""
        assert self.layout is not None  # resolved with a layout
        return self.layout.to_channels_first(output)


class LayerTap:
    """A forward hook on a target layer, registered only inside a `with` block.

    `on_output` receives the layer's output features (`output_features`); if it returns a
    tensor, that tensor replaces them for the rest of the forward pass.
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

    def _hook(self, module: nn.Module, inputs: tuple[object, ...], output: object) -> object:
        call = self._calls
        self._calls += 1
        features = output_features(output)
        if call != self.layer.call or features is None:
            return None
        replaced = self.on_output(features)
        if replaced is None or isinstance(output, Tensor):
            return replaced
        assert isinstance(output, tuple)
        return (replaced, *output[1:])


def output_features(output: object) -> Tensor | None:
    """A module's output features: the tensor it returns, or the first of a tuple (a Hugging
    Face layer's (hidden_states, attentions...)); None for other outputs."""
    if type(output) is tuple and output and isinstance(output[0], Tensor):
        return output[0]
    return output if isinstance(output, Tensor) else None


def run_tapped(
    model: nn.Module, x: Tensor, layer: TargetLayer, on_output: Callable[[Tensor], Tensor | None]
) -> Tensor:
    """Run `model(x)` with `on_output` tapping `layer`; return the (batch, classes) logits."""
    with LayerTap(layer, on_output):
        return explained_output(model(x))


@dataclass(frozen=True)
class _Call:
    name: str
    module: nn.Module
    index: int
    shape: tuple[int, ...] | None
    produced: Kind | None  # what the producing module's type says of the layout


def _probe(model: nn.Module, x: Tensor) -> tuple[list[_Call], Tensor]:
    """Run the model once, recording every submodule call in the order the calls finish."""
    calls: list[_Call] = []
    counts: dict[nn.Module, int] = {}
    # 4-D and 5-D tensors whose layout is known (the input's, and outputs a module's type
    # decides), by storage: a container or an in-place module that returns that very tensor
    # (same data, same strides), or an element-wise module applied to it, inherits it; a
    # permuted view does not.
    # Weak references: the probe keeps no activation alive (a freed one cannot be returned).
    typed: dict[int, tuple[weakref.ref[Tensor], Kind]] = {
        x.data_ptr(): (weakref.ref(x), "channels_first")
    }

    def known(tensor: object) -> Kind | None:
        if not isinstance(tensor, Tensor):
            return None
        found = typed.get(tensor.data_ptr())
        return found[1] if found is not None and _same_view(found[0](), tensor) else None

    def recorder(name: str) -> Callable[[nn.Module, object, object], None]:
        def record(module: nn.Module, inputs: object, output: object) -> None:
            index = counts.get(module, 0)
            counts[module] = index + 1
            output = output_features(output)
            shape = tuple(output.shape) if isinstance(output, Tensor) else None
            produced = None if shape is None else produced_kind(module, shape)
            if isinstance(output, Tensor) and output.ndim in (4, 5):
                if produced is None:
                    produced = known(output)
                if produced is None and isinstance(module, _ELEMENTWISE):
                    given = inputs[0] if isinstance(inputs, tuple) and inputs else None
                    produced = known(given) if _same_view(given, output) else None
                if produced is not None:
                    typed[output.data_ptr()] = (weakref.ref(output), produced)
            calls.append(_Call(name, module, index, shape, produced))

        return record

    handles = [m.register_forward_hook(recorder(n)) for n, m in model.named_modules() if n]
    with removing(*handles):
        logits = model_output(model, x)
    return calls, check_finite_logits(logits, x)


def _same_view(a: object, b: Tensor) -> bool:
    return isinstance(a, Tensor) and a.shape == b.shape and a.stride() == b.stride()


def _spatial_layout(
    call: _Call, x: Tensor, requested: Kind | None, channels_first: bool
) -> FeatureLayout | None:
    """The call's layout if its output is a spatial grid (every side > 1) of x's batch."""
    if call.shape is None or len(call.shape) not in (3, x.ndim) or call.shape[0] != x.shape[0]:
        return None
    try:
        layout = _read(call, x, requested, channels_first)
    except LayerError:
        return None
    return layout if min(layout.grid) > 1 else None


def spatial_layers(model: nn.Module, x: Tensor) -> list[TargetLayer]:
    """Every layer whose output on the one input `x` is a spatial grid (every side > 1), with
    its layout, in the order its last call finishes: the layers a map can be read at."""
    with torch.inference_mode():
        calls, _ = _probe(model, x)
    return [
        TargetLayer(call.name, call.module, call.index, layout)
        for call, layout in _spatial_calls(calls, x, None)
    ]


def _spatial_calls(
    calls: list[_Call], x: Tensor, requested: Kind | None
) -> list[tuple[_Call, FeatureLayout]]:
    """Each module's last call whose output is a spatial grid, with its layout."""
    last_calls = {call.module: call for call in calls}
    channels_first = _only_channels_first(calls)
    return [
        (call, layout)
        for call in calls
        if last_calls[call.module] is call
        for layout in [_spatial_layout(call, x, requested, channels_first)]
        if layout is not None
    ]


def _only_channels_first(calls: list[_Call]) -> bool:
    """Whether no module of the model works on the last axis of a 4-D or 5-D tensor."""
    return all(call.produced != "channels_last" for call in calls)


def _read(call: _Call, x: Tensor, requested: Kind | None, channels_first: bool) -> FeatureLayout:
    assert call.shape is not None
    return read_layout(
        call.shape, _input_grid(x), call.produced, requested, call.name, channels_first
    )


def _input_grid(x: Tensor) -> tuple[int, ...]:
    return tuple(x.shape[2:])


def _first_row_copies(copies: int) -> Callable[[Tensor], Tensor]:
    return lambda features: features[:1].expand(copies, *features.shape[1:]).clone()


def copies_entry(model: nn.Module, x: Tensor, logits: Tensor, layer: TargetLayer) -> Entry | None:
    """Where copies of `layer`'s output can enter the model so that the rest of it runs on them,
    or None if the prediction depends on one image `x` through more than that output.

    The layer is run on [x, noise] with its output replaced by copies of x's features: if
    every row's prediction equals x's, nothing reaches the head except through the layer.
    "layer": the rest takes a batch of any size (three rows from a two-image input), so copies
    made from one image's output run as one batch there. "input": the rest takes only the
    input's batch size (it reshapes with it, as PiT's stages and Hugging Face's PVT-v2 do), so
    each copy replaces the layer's output for its own copy of the input.
    """
    pair = torch.cat([x, probe_noise(x)])
    tries: tuple[tuple[int, Entry], ...] = ((3, "layer"), (2, "input"))
    for copies, entry in tries:
        try:
            output = run_tapped(model, pair, layer, _first_row_copies(copies))
        except Exception:  # a rest that refuses this batch size, or any failure of the probe
            continue
        if len(output) != copies:  # reshaped with the input's batch size into other rows
            continue
        return entry if same_output(output, logits.expand_as(output)) else None
    return None


def _bypassed(layer: TargetLayer) -> str:
    return (
        f"layer '{layer}' is bypassed: the prediction also depends on computation that skips"
        " it (a skip connection or a parallel branch); choose a layer whose output alone"
        " determines the prediction, such as a block output, or target_layer=None"
    )


def _lookup(model: nn.Module, spec: nn.Module | str) -> tuple[str, nn.Module]:
    modules = dict(model.named_modules())
    if isinstance(spec, str):
        if spec and spec in modules:
            return spec, modules[spec]
        names = [name for name in modules if name]
        # The same layer inside a wrapper (DataParallel's module., torch.compile's _orig_mod.)
        wrapped = [name for name in names if name.endswith(f".{spec}")]
        close = (wrapped or difflib.get_close_matches(spec, names, n=3))[:3]
        top = [name for name, _ in model.named_children()]
        listed = ", ".join(top[:12]) + (", ..." if len(top) > 12 else "")
        hint = (
            f"; did you mean {', '.join(repr(name) for name in close)}?"
            if close
            else f"; its top-level layers are {listed} (dotted names reach inside them)"
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
    model: nn.Module,
    spec: LayerSpec,
    x: Tensor,
    *,
    sole_path: bool = True,
    layout: LayoutSpec = None,
) -> TargetLayer:
    """The target layer for `spec` (None = automatic), checked on one image `x`.

    Automatic: the last module call, in the order calls finish, whose output is a spatial grid
    (channels-first, channels-last or tokens, every side > 1, see `reciprocam.layout`) that
    alone determines the prediction, and on whose grid the prediction depends (not only on its
    prefix tokens, as a ViT's class-token head after the last block). So a container such as
    ResNet's `layer4` wins over its last child, and a Swin's final norm over its last stage.
    Pooling to a fixed size (`AdaptiveAvgPool2d`) counts as part of the head.

    `sole_path=True` (the masking methods) refuses a layer that computation bypasses.
    `sole_path=False` (methods that read a layer's activations and gradients) accepts any
    spatial layer; on a supported vision transformer its automatic layer is the last block's
    first LayerNorm. `layout` forces how the output is read ("nchw", "nhwc", "tokens").
    """
    requested = layout_kind(layout)
    if spec is None and not sole_path:
        found = find_layout(model)
        if found is not None:
            spec = found.norm1(len(found.blocks) - 1)
    calls, logits = _probe(model, x)
    last_calls = {call.module: call for call in calls}
    if spec is None:
        return _automatic_layer(model, x, logits, calls, requested)
    name, module = _lookup(model, spec)
    last = last_calls.get(module)
    if last is None:
        raise LayerError(f"layer '{name}' did not run in the model's forward pass")
    if last.shape is None:
        raise LayerError(
            f"layer '{name}' outputs no tensor; explaining needs a spatial feature map"
            " (batch, channels, height, width)"
        )
    found_layout = _read(last, x, requested, _only_channels_first(calls))
    layer = TargetLayer(name, module, last.index, found_layout)
    if min(found_layout.grid) < 2:
        raise LayerError(
            f"layer '{layer}' outputs a {grid_text(found_layout.grid)} map at this"
            " input size; explaining needs every side > 1: use a larger input or an"
            " earlier layer"
        )
    if not sole_path:
        return layer
    entry = copies_entry(model, x, logits, layer)
    if entry is None:
        raise LayerError(_bypassed(layer))
    return replace(layer, copies_from_input=entry == "input")


def _automatic_layer(
    model: nn.Module, x: Tensor, logits: Tensor, calls: list[_Call], requested: Kind | None
) -> TargetLayer:
    """The last spatial layer that alone determines the prediction, on whose grid it depends.

    For a model whose output is itself a grid (a segmenter), the search runs inside its encoder
    (`_encoder_name`) when it has one: the decoder's layers would explain the output with
    itself.

    Once the candidates' grids get finer than a later candidate's that failed (the stem, when
    the last stages are bypassed by class tokens), the search stops with a LayerError: a map
    at the stem would not explain the model's last stages. Grids inside a candidate's module
    (an attention's downsampled keys) do not count as a later stage's.
    """
    dense = logits.ndim > 2  # a segmenter: the output is a grid too
    encoder = _encoder_name(model) if dense else None
    spatial = [
        (call, layout)
        for call, layout in _spatial_calls(calls, x, requested)
        if not isinstance(call.module, _HEAD_POOLING)
        if encoder is None or call.name == encoder or call.name.startswith(f"{encoder}.")
    ]
    candidates = {call.name for call, _ in spatial}
    coarsest: tuple[TargetLayer, int] | None = None  # the coarsest later grid, which failed
    for call, layout in reversed(spatial):
        layer = TargetLayer(call.name, call.module, call.index, layout)
        # A segmenter's encoder gets finer towards the input; a finer stage that alone
        # determines the output (LRASPP's, under its skip) is its answer.
        if coarsest is not None and layout.positions > coarsest[1] and not dense:
            raise LayerError(
                f"{type(model).__name__}'s last grid, '{coarsest[0]}', is not the only path to"
                " its prediction (class tokens or a branch bypass it), and the layers before it"
                " are finer grids nearer the input; pass target_layer to explain one of them"
                " anyway"
            )
        entry = copies_entry(model, x, logits, layer)
        if entry is not None and _grid_matters(model, x, logits, layer):
            return replace(layer, copies_from_input=entry == "input")
        # A grid inside a candidate block (CvT's key/value downsampling) is not a stage's.
        inside = any(call.name.startswith(f"{name}.") for name in candidates)
        if not inside and (coarsest is None or layout.positions < coarsest[1]):
            coarsest = (layer, layout.positions)
    raise LayerError(
        f"found no layer in {type(model).__name__} whose output is a spatial feature map"
        " (channels-first, channels-last or tokens on a grid) that alone determines the"
        " prediction; pass target_layer with a layer name"
    )


_ENCODER_NAMES = ("backbone", "encoder")


def _encoder_name(model: nn.Module) -> str | None:
    """The dotted name of a segmenter's encoder: its first submodule named `backbone`
    (torchvision) or `encoder` (segmentation_models_pytorch, Hugging Face, U-Nets), or None."""
    names: list[str] = [name for name, _ in model.named_modules()]
    return next((name for name in names if name.rsplit(".", 1)[-1] in _ENCODER_NAMES), None)


def _grid_matters(model: nn.Module, x: Tensor, logits: Tensor, layer: TargetLayer) -> bool:
    """Whether the prediction depends on the layer's grid, not only on its prefix tokens."""
    assert layer.layout is not None
    layout = layer.layout
    if layout.prefix == 0:
        return True

    def noisy_grid(output: Tensor) -> Tensor:
        noise = probe_noise(layout.to_channels_first(output)) * output.std()
        return layout.from_channels_first(noise, layout.prefix_tokens(output))

    try:
        changed = run_tapped(model, x, layer, noisy_grid)
    except Exception:  # a head that cannot take noise there reads more than the prefix
        return True
    return not same_output(changed, logits)


def resolve_layers(
    model: nn.Module, specs: LayerSpecs, x: Tensor, *, layout: LayoutSpec = None
) -> list[TargetLayer]:
    """The layers of a method that reads activations (one, or several to fuse), on one image."""
    if isinstance(specs, Sequence) and not isinstance(specs, str):
        if not specs:
            raise LayerError("target_layer is an empty list; give at least one layer")
        return [resolve_layer(model, spec, x, sole_path=False, layout=layout) for spec in specs]
    return [resolve_layer(model, specs, x, sole_path=False, layout=layout)]
