"""Loading a video or volume classifier by name: torchvision's video models, the Shapes ones."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ModelError
from .checkpoints import load_state
from .loading import checkpoint_state, torchvision_model
from .preprocessing import Preprocessing

CLIP_LENGTHS = {
    "r3d_18": 16,
    "mc3_18": 16,
    "r2plus1d_18": 16,
    "s3d": 128,
    "mvit_v1_b": 16,
    "mvit_v2_s": 16,
    "swin3d_t": 32,
    "swin3d_s": 32,
    "swin3d_b": 32,
}
"""Frames per clip of torchvision's video classifiers: the `clip_len` their Kinetics-400
weights are evaluated with (each weights' documentation; MViT's input is fixed at 16)."""
SHAPES_VIDEO = "shapes_video"
SHAPES_VOLUME = "shapes_volume"


@dataclass(frozen=True)
class LoadedClipModel:
    """A video or volume classifier in eval mode, with what it takes to use it on files.

    frames: the frames of a video clip it takes (None: a volume model, no videos);
    preprocessing: each frame's resize, centre crop and normalisation (a volume's channels
        are normalised alike, see `volume_input`).
    """

    name: str
    model: nn.Module
    preprocessing: Preprocessing
    categories: tuple[str, ...]
    pretrained: bool
    frames: int | None

    @property
    def channels(self) -> int:
        """The input channels it takes: its first convolution's (3 for RGB video)."""
        first = next(m for m in self.model.modules() if isinstance(m, nn.modules.conv._ConvNd))
        return int(first.in_channels)

    def volume_input(self, volume: np.ndarray) -> Tensor:
        """The (C, D, H, W) input of a float32 (C, D, H, W) volume whose values are in [0, 1]
        as a frame's pixels / 255 are: each channel c as (x - mean[c]) / std[c]."""
        channels = len(volume)
        mean = torch.tensor(self.preprocessing.mean[:channels]).view(channels, 1, 1, 1)
        std = torch.tensor(self.preprocessing.std[:channels]).view(channels, 1, 1, 1)
        return (torch.from_numpy(volume) - mean) / std


def video_model_names() -> list[str]:
    """Every name `load_video_model` accepts."""
    return [*CLIP_LENGTHS, SHAPES_VIDEO, SHAPES_VOLUME]


def load_video_model(
    name: str, weights: str | None = None, checkpoint: str | Path | None = None
) -> LoadedClipModel:
    """Build the video or volume classifier `name` in eval mode.

    name: a torchvision video classifier (r3d_18, s3d, mvit_v2_s, swin3d_t, ...: Kinetics-400,
        RGB clips), `shapes_video` ((B, 3, 16, 64, 64) moving-shapes clips) or `shapes_volume`
        ((B, 1, 32, 32, 32) Shapes volumes), the last two with their trained weights.
    weights: torchvision weights to download ("DEFAULT", "KINETICS400_V1"), or None for random
        weights.
    checkpoint: a state_dict file for the architecture (a torchvision model with another
        number of classes is rebuilt to match it).
    """
    state = checkpoint_state(weights, checkpoint)
    if name in (SHAPES_VIDEO, SHAPES_VOLUME):
        if weights is not None:
            raise ModelError(f"{name} comes with its own weights; give no --weights")
        # Imported when asked for, as the Shapes segmenter is.
        from ..synthetic import shapes, video, video_models, volume

        bare: Callable[[], nn.Module]
        trained: Callable[[], nn.Module]
        if name == SHAPES_VIDEO:
            bare, trained = video_models.ShapesVideoCNN, video_models.shapes_video_model
            categories, frames = shapes.CLASSES, video.FRAMES
        else:
            bare, trained = video_models.ShapesVolumeCNN, video_models.shapes_volume_model
            categories, frames = volume.CLASSES_3D, None
        # A checkpoint's weights replace the shipped ones, which need not be there then.
        model = trained() if state is None else bare()
        if state is not None:
            load_state(model, state, checkpoint)
        preprocessing = Preprocessing(
            resize=shapes.SIZE, crop=shapes.SIZE, mean=shapes.MEAN, std=shapes.STD
        )
        return LoadedClipModel(name, model.eval(), preprocessing, categories, True, frames)
    if name not in CLIP_LENGTHS:
        close = difflib.get_close_matches(name, video_model_names(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ModelError(
            f"unknown video model '{name}'{hint} (torchvision's {', '.join(CLIP_LENGTHS)},"
            f" {SHAPES_VIDEO} or {SHAPES_VOLUME})"
        )
    loaded = torchvision_model(name, weights, state, checkpoint)
    return LoadedClipModel(
        name,
        loaded.model,
        loaded.preprocessing,
        loaded.categories,
        loaded.pretrained,
        CLIP_LENGTHS[name],
    )
