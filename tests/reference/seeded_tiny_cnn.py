"""Deterministic random-weight tiny CNN (3 x 32 x 32 -> 5 classes) for the metrics reference.

Every parameter comes from ``numpy.random.default_rng`` (never from torch's RNG), so the model
is bit-identical across torch versions and machines.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

SEED = 20250311
"""Seed of the generator that fills the model's parameters."""

INPUT_SIZE = 32
CLASSES = 5


def build_model() -> nn.Module:
    """conv 3->8, ReLU, conv 8->16 (stride 2), ReLU, global average pool, linear 16->5."""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, CLASSES),
    )
    rng = np.random.default_rng(SEED)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            shape = tuple(tensor.shape)
            if name.endswith(".bias"):
                value = rng.standard_normal(shape) * 0.1
            else:  # He-normal weights
                fan_in = int(np.prod(shape[1:]))
                value = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
            tensor.copy_(torch.from_numpy(value.astype(np.float32)))
    return model.eval()
