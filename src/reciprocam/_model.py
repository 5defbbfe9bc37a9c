"""Running a user's model: one explanation at a time, eval mode restored afterwards, inputs
checked, logits read."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from .errors import InputError, ModelError

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


def class_scores(output: object) -> Tensor:
    """The (batch, classes) logits in a model's output: a tensor, `.logits`, or `["logits"]`."""
    logits = output
    if isinstance(output, Mapping) and "logits" in output:
        logits = output["logits"]
    elif not isinstance(output, Tensor) and isinstance(getattr(output, "logits", None), Tensor):
        logits = output.logits  # type: ignore[attr-defined]
    if not isinstance(logits, Tensor) or logits.ndim != 2:
        found = tuple(logits.shape) if isinstance(logits, Tensor) else type(output).__name__
        raise ModelError(
            f"the model returned {found}; explaining needs class scores of shape (batch, classes)"
            " (a classifier's logits)"
        )
    return logits


def check_finite_logits(logits: Tensor, x: Tensor) -> Tensor:
    """`logits` if every value is finite, else ModelError (a broken model or an overflow)."""
    if not bool(torch.isfinite(logits).all()):
        raise ModelError(
            f"the model's output has NaN or infinite values for this {x.dtype} input of shape"
            f" {tuple(x.shape)}; check that the model itself gives finite logits on it (half"
            " precision on CPU can overflow: try float32)"
        )
    return logits


def check_input(x: object, model: nn.Module) -> Tensor:
    """Return `x` if it is a finite (B, C, H, W) float tensor on the model's device and dtype."""
    if not isinstance(x, Tensor):
        raise InputError(
            "the input must be a torch.Tensor of shape (batch, 3, height, width),"
            f" not {type(x).__name__}"
        )
    if x.ndim != 4:
        hint = "; add a batch dimension with x.unsqueeze(0)" if x.ndim == 3 else ""
        raise InputError(
            "the input must have shape (batch, channels, height, width),"
            f" got {tuple(x.shape)}{hint}"
        )
    if min(x.shape) == 0:
        raise InputError(f"the input is empty: shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise InputError(
            f"the input has dtype {x.dtype}; convert it to float and normalise it as the model"
            " expects"
        )
    reference: Tensor | None = next(model.parameters(), None)
    if reference is None:
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
