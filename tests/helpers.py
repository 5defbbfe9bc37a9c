"""Small helpers the tests share."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import torch
import torchvision
from torch import nn

from reciprocam import ReciproCAMError
from reciprocam._model import model_lock
from reciprocam.synthetic.models import shapes_model
from reciprocam.synthetic.shapes import CLASSES, MEAN, SIZE, STD
from reciprocam.zoo import LoadedModel, Preprocessing

GRADIO_QUEUE_WARNINGS = [
    # What Gradio's queue warns of on pandas 3, in the app's tests.
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated:DeprecationWarning"),
]


def seeded(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """A standard-normal float32 tensor from its own generator."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def shapes_page_model(kind: str) -> LoadedModel:
    """The trained Shapes model `kind` ("cnn", "vit") as the app loads a model, as shapes_KIND."""
    preprocessing = Preprocessing(resize=SIZE, crop=SIZE, mean=MEAN, std=STD)
    return LoadedModel(f"shapes_{kind}", shapes_model(kind), preprocessing, CLASSES, True)


def build(name: str, seed: int = 0, **kwargs: object) -> nn.Module:
    """A torchvision model with random weights from `seed`, in eval mode."""
    torch.manual_seed(seed)
    return torchvision.models.get_model(name, weights=None, **kwargs).eval()


def error_message(
    error: type[ReciproCAMError], call: Callable[..., object], *args, **kwargs
) -> str:
    """The one-line message of the `error` (exactly that type) that `call(*args)` raises."""
    with pytest.raises(error) as caught:
        call(*args, **kwargs)
    assert type(caught.value) is error
    assert isinstance(caught.value, ReciproCAMError)
    message = str(caught.value)
    assert "\n" not in message
    return message


def hook_counts(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {
        name: (
            len(module._forward_hooks),
            len(module._forward_pre_hooks),
            len(module._backward_hooks),
            len(module._backward_pre_hooks),
        )
        for name, module in model.named_modules()
    }


def fingerprint(model: nn.Module) -> tuple[object, ...]:
    """What an explanation must leave alone, cheaply enough for every call: each parameter's,
    buffer's and `.grad`'s identity and version counter (which every in-place change bumps),
    the requires_grad and training flags, and the hooks."""

    def identity(tensor: torch.Tensor | None) -> tuple[int, int] | None:
        return None if tensor is None else (id(tensor), tensor._version)

    return (
        {name: identity(value) for name, value in model.state_dict(keep_vars=True).items()},
        {name: identity(p.grad) for name, p in model.named_parameters()},
        {name: p.requires_grad for name, p in model.named_parameters()},
        {name: module.training for name, module in model.named_modules()},
        hook_counts(model),
    )


def snapshot(model: nn.Module) -> dict[str, object]:
    return {
        "state": {name: value.clone() for name, value in model.state_dict(keep_vars=True).items()},
        "training": {name: module.training for name, module in model.named_modules()},
        "grad": {
            n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()
        },
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "hooks": hook_counts(model),
    }


def assert_unchanged(model: nn.Module, before: dict[str, object]) -> None:
    after = snapshot(model)
    for name, value in before["state"].items():
        assert torch.equal(after["state"][name], value), name
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    assert after["hooks"] == before["hooks"]
    for name, grad in before["grad"].items():
        if grad is None:
            assert after["grad"][name] is None, name
        else:
            assert torch.equal(after["grad"][name], grad), name


class ReadsInputBatchSize(nn.Module):
    """A head that reshapes with the input's batch size, as old EfficientNet code does."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.pool(self.conv(x)).view(x.size(0), -1))


def forwards_under_the_lock(model: nn.Module, call: Callable[[], object]) -> list[bool]:
    """For each forward pass of `model` during `call()`, whether the model's `model_lock` was
    held against other threads (one tried to take it then, and could not)."""
    lock, held = model_lock(model), []

    def try_from_another_thread(*_: object) -> None:
        def attempt() -> None:
            taken = lock.acquire(blocking=False)
            if taken:
                lock.release()
            held.append(not taken)

        other = threading.Thread(target=attempt)
        other.start()
        other.join()

    hook = model.register_forward_pre_hook(try_from_another_thread)
    try:
        call()
    finally:
        hook.remove()
    return held
