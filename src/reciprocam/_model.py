"""Running a user's model: one explanation at a time, its modes restored afterwards (and its
attributes after probes), inputs checked, logits read, hooks removed."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from .errors import InputError, ModelError, ReciproCAMError, first_line
from .grids import GRID_RANKS

_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The model's own lock, held while it is explained or measured.

    An explanation hooks the model's layers and switches its modes, so two explanations of
    one model in two threads would see each other's activations: they take turns instead.
    The lock is re-entrant (a method may call another explainer on the same model) and
    disappears with the model.
    """
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(model, threading.RLock())


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[None]:
    """Hold the model's lock and put every submodule in eval mode for the block, then restore
    each one's own flag."""
    with model_lock(model):
        flags = [(module, module.training) for module in model.modules()]
        try:
            model.eval()
            yield
        finally:
            for module, training in flags:
                module.training = training


@contextmanager
def restoring_attributes(model: nn.Module) -> Iterator[None]:
    """Put back every plain attribute of every submodule (outside its parameters, buffers and
    submodules) as it was before the block.

    Probes run the model on inputs the user never gives (a one-position grid, noise), and some
    models adapt attributes to what they see (Hugging Face Swin shrinks `window_size` to a
    small grid, for good): a probe must leave no trace.
    """
    saved = [(module, _plain_attributes(module)) for module in model.modules()]
    try:
        yield
    finally:
        for module, attributes in saved:
            _restore_attributes(module, attributes)


# A module's own state, which explanations do not replace (its contents are checked apart).
_TENSORS_AND_CHILDREN = ("_parameters", "_buffers", "_modules")


def _plain_attributes(module: nn.Module) -> dict[str, Any]:
    return {n: v for n, v in vars(module).items() if n not in _TENSORS_AND_CHILDREN}


def _restore_attributes(module: nn.Module, attributes: dict[str, Any]) -> None:
    current = vars(module)
    for name in [n for n in current if n not in attributes and n not in _TENSORS_AND_CHILDREN]:
        del current[name]
    for name, value in attributes.items():
        if current.get(name) is not value:
            current[name] = value


def structure_key(model: nn.Module) -> tuple[tuple[str, type, int, str], ...]:
    """What the model is built of: each submodule's name, type, identity and settings.

    A replaced or reconfigured submodule (a new pooling layer in the head) changes the key,
    so what was found on the old structure (a layer, a shortcut) is found again; new weights
    in the same modules do not.
    """
    return tuple((name, type(m), id(m), m.extra_repr()) for name, m in model.named_modules())


@contextmanager
def autograd_on() -> Iterator[None]:
    """Autograd on, even inside the caller's `torch.no_grad()` or `torch.inference_mode()`
    (inputs made there are copied by `differentiable`)."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


@contextmanager
def eager() -> Iterator[None]:
    """Run a `torch.compile`d model (or one with compiled submodules) eagerly, so that hooks on
    its submodules see every call; the compiled code is kept for the caller."""
    with torch.compiler.set_stance("force_eager"):
        yield


def check_hookable(model: object) -> nn.Module:
    """`model` if forward hooks on its submodules run, else ModelError (TorchScript)."""
    if not isinstance(model, nn.Module):
        raise ModelError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    if isinstance(model, torch.jit.ScriptModule):
        raise ModelError(
            "a TorchScript model (torch.jit.script or torch.jit.trace) runs no hooks on its"
            " layers: explain the original nn.Module, or export it to ONNX and add the maps"
            " with `reciprocam insert`"
        )
    return model


@contextmanager
def removing(*handles: RemovableHandle) -> Iterator[None]:
    """Remove the hooks when the block ends, also on errors."""
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


OutputPart = str | int | Callable[[Any], Tensor] | None
"""Which part of a model's output is explained: None (the rule of `explained_output`), a key
or attribute name, a sequence index, or a function of the output."""

_PART: ContextVar[OutputPart] = ContextVar("reciprocam_output_part", default=None)


@contextmanager
def reading_output(part: OutputPart) -> Iterator[None]:
    """Within the block, `explained_output` reads `part` of every model output."""
    token = _PART.set(part)
    try:
        yield
    finally:
        _PART.reset(token)


def explained_output(output: object) -> Tensor:
    """The part of a model's output that is explained, by one rule (or the block's
    `reading_output` part):

    a tensor is itself; a mapping gives its "logits", else its "out" (torchvision's
    segmentation models, whose "aux" is a training head), else its only tensor; an object
    gives its `.logits` (Hugging Face); a tuple or list gives its first element.
    """
    part = _PART.get()
    if part is None:
        found = _by_rule(output)
    elif callable(part):
        found = part(output)
    elif isinstance(part, int):
        found = output[part] if isinstance(output, (tuple, list)) else None
    elif isinstance(output, Mapping):
        found = output.get(part)
    else:
        found = getattr(output, part, None)
    if not isinstance(found, Tensor) or found.ndim < 2:
        shape = tuple(found.shape) if isinstance(found, Tensor) else type(output).__name__
        where = "" if part is None else f" (output={part!r})"
        raise ModelError(
            f"the model returned {shape}{where}; explaining needs a (batch, ...) tensor of"
            " scores: name the part to explain with output= (a key, an attribute, an index or"
            " a function of the output)"
        )
    return found


def _by_rule(output: object) -> object:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, Mapping):
        for key in ("logits", "out"):
            if key in output:
                return output[key]
        tensors = [v for v in output.values() if isinstance(v, Tensor)]
        return tensors[0] if len(tensors) == 1 else output
    logits = getattr(output, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output:
        return output[0]
    return output


def class_probabilities(logits: Tensor, multilabel: bool = False) -> Tensor:
    """(B, N, ...) probabilities of (B, N, ...) logits: the softmax over the classes; each class's
    own sigmoid for a multi-label head; for a one-logit binary head (N = 1), sigmoid(z) =
    softmax([0, z])[1], its class's probability (a softmax over one class would be 1 whatever
    the image)."""
    if multilabel or logits.shape[1] == 1:
        return logits.sigmoid()
    return logits.softmax(dim=1)


def model_output(model: nn.Module, x: Tensor) -> Tensor:
    """The explained output of `model(x)`; the model refusing x is an InputError.

    Models check their own input (a ViT's fixed size, a convolution's channel count) with
    assertions and errors of every type: their first line says what the model expects.
    """
    try:
        output = model(x)
    except ReciproCAMError:
        raise
    except Exception as error:
        raise InputError(
            f"the model failed on an input of shape {tuple(x.shape)}: {first_line(error)}"
        ) from None
    return explained_output(output)


def check_finite_logits(logits: Tensor, x: Tensor) -> Tensor:
    """`logits` if every value is finite, else ModelError (a broken model or an overflow)."""
    if not bool(torch.isfinite(logits).all()):
        raise ModelError(
            f"the model's output has NaN or infinite values for this {x.dtype} input of shape"
            f" {tuple(x.shape)}; check that the model itself gives finite logits on it (half"
            " precision on CPU can overflow: try float32)"
        )
    return logits


def check_input(x: object, model: nn.Module | None) -> Tensor:
    """Return `x` if it is a finite (B, C, H, W) float tensor, or (B, C, T, H, W) for clips and
    volumes, on the model's device and dtype (any device and float dtype without a model: an
    ONNX graph's input)."""
    if not isinstance(x, Tensor):
        raise InputError(
            "the input must be a torch.Tensor of shape (batch, 3, height, width),"
            f" not {type(x).__name__}"
        )
    if x.ndim - 2 not in GRID_RANKS:
        hint = "; add a batch dimension with x.unsqueeze(0)" if x.ndim == 3 else ""
        raise InputError(
            "the input (a clip or volume: (batch, channels, frames or depth, height, width))"
            f" must have shape (batch, channels, height, width), got {tuple(x.shape)}{hint}"
        )
    if min(x.shape) == 0:
        raise InputError(f"the input is empty: shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise InputError(
            f"the input has dtype {x.dtype}; convert it to float and normalise it as the model"
            " expects"
        )
    reference: Tensor | None = None if model is None else next(model.parameters(), None)
    if reference is None and model is not None:
        reference = next(model.buffers(), None)
    if reference is not None:
        if reference.device != x.device:
            raise InputError(
                f"the input is on {x.device} but the model is on {reference.device};"
                " move both to the same device"
            )
        if reference.is_floating_point() and reference.dtype != x.dtype:
            raise InputError(
                f"the input has dtype {x.dtype} but the model's parameters are {reference.dtype};"
                f" use x.to({reference.dtype})"
            )
    if not bool(torch.isfinite(x).all()):
        raise InputError("the input contains NaN or infinite values")
    return x


# Seed of the probes' random inputs: unlike any real image (and unlike tests' seed-0 inputs).
_PROBE_SEED = 0x5EED


def probe_noise(like: Tensor) -> Tensor:
    """A seeded standard-normal tensor with the shape, dtype and device of `like`."""
    return torch.randn(like.shape, generator=torch.Generator().manual_seed(_PROBE_SEED)).to(like)


def same_output(a: Tensor, b: Tensor) -> bool:
    """Whether two model outputs agree up to float rounding of differently batched passes."""
    tolerance = max(1e-4, 16 * torch.finfo(b.dtype).eps)
    return torch.allclose(a, b, rtol=tolerance, atol=tolerance * float(b.abs().max()) + 1e-12)


def differentiable(x: Tensor) -> Tensor:
    """A copy of x that requires grad, whatever x is (even a tensor made in inference mode)."""
    return x.detach().clone().requires_grad_(True)
