"""Deterministic random-weight torchvision ResNet-18 and input for reference tests.

All values come from ``numpy.random.default_rng`` (never from torch's RNG), so the model and
the input are bit-identical across torch versions and machines.
"""

from __future__ import annotations

import numpy as np
import torch
import torchvision

SEED = 20240917
"""Seed of the generator that fills the model's parameters and buffers."""

INPUT_SEED = 7
"""Seed of the generator that draws the input tensor."""

INPUT_SHAPE = (1, 3, 224, 224)


def _draw(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Draw the value of one ``state_dict`` entry of ResNet-18."""
    if len(shape) == 4:  # convolution weight (all convolutions are bias-free)
        fan_in = shape[1] * shape[2] * shape[3]
        return rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
    if name == "fc.weight":
        return rng.standard_normal(shape) * np.sqrt(2.0 / shape[1])
    if name == "fc.bias":
        return np.zeros(shape)
    if name.endswith(".weight"):  # batch-norm scale
        return rng.uniform(0.5, 1.5, shape)
    if name.endswith(".bias") or name.endswith(".running_mean"):
        return rng.standard_normal(shape) * 0.1
    if name.endswith(".running_var"):
        return rng.uniform(0.5, 1.5, shape)
    raise ValueError(f"unexpected state_dict entry {name!r} with shape {shape}")


def build_model() -> torch.nn.Module:
    """Return ``resnet18(weights=None)`` in eval mode with every weight drawn from ``SEED``."""
    model = torchvision.models.resnet18(weights=None)
    rng = np.random.default_rng(SEED)
    state = model.state_dict()
    with torch.no_grad():
        for name, tensor in state.items():
            if name.endswith("num_batches_tracked"):
                continue
            value = _draw(rng, name, tuple(tensor.shape)).astype(np.float32)
            tensor.copy_(torch.from_numpy(value))
    return model.eval()


def make_input() -> torch.Tensor:
    """Return a float32 input of shape ``(1, 3, 224, 224)`` drawn from ``INPUT_SEED``."""
    rng = np.random.default_rng(INPUT_SEED)
    return torch.from_numpy(rng.standard_normal(INPUT_SHAPE).astype(np.float32))
