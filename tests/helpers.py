"""Small helpers the tests share."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torchvision
from torch import nn

from reciprocam import ReciproCAMError


def seeded(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """A standard-normal float32 tensor from its own generator."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


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
