"""Models by name, with the preprocessing and class names that go with them."""

from ..names import DEMO_MODEL
from .checkpoints import read_checkpoint
from .loaded import IMAGENET_CATEGORIES, LoadedModel
from .loading import load_model, model_names
from .preprocessing import Preprocessing
from .video import LoadedClipModel, load_video_model, video_model_names

__all__ = [
    "DEMO_MODEL",
    "IMAGENET_CATEGORIES",
    "LoadedClipModel",
    "LoadedModel",
    "Preprocessing",
    "load_model",
    "load_video_model",
    "model_names",
    "read_checkpoint",
    "video_model_names",
]
