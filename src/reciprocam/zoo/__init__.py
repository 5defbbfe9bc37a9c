"""Models by name, with the preprocessing and class names that go with them."""

from .loading import (
    DEMO_MODEL,
    IMAGENET_CATEGORIES,
    LoadedModel,
    load_model,
    model_names,
    read_checkpoint,
)
from .preprocessing import Preprocessing

__all__ = [
    "DEMO_MODEL",
    "IMAGENET_CATEGORIES",
    "LoadedModel",
    "Preprocessing",
    "load_model",
    "model_names",
    "read_checkpoint",
]
