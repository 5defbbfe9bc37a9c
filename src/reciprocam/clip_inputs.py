"""A video or volume file read for a clip model, and its map written beside it: what
`reciprocam explain clip.mp4` and the app's videos-and-volumes tab both do.

A video's model clip length of frames is taken evenly spaced over it, each frame resized and
centre-cropped as the model expects; a volume ((D, H, W), or (C, D, H, W), values in [0, 1])
is normalised as the model's frames are. Its map is written as `<base>.npy` (the (T, H, W) or
(D, H, W) map, float32 in [0, 1]) with its picture: `<base>.gif` or `.mp4` (each frame's crop
with its map) for a video, `<base>.png` (the volume's slices with the map) for a volume.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .clips import (
    VIDEO_SUFFIXES,
    VOLUME_SUFFIXES,
    is_volume,
    montage,
    read_video,
    read_volume,
    sample_clip,
    write_animation,
)
from .errors import InputError
from .files import write_atomically
from .photos import save_array, save_png
from .visualize import crop_to_box
from .zoo.video import LoadedClipModel


@dataclass(frozen=True)
class ClipInput:
    """A file read for the model: its input tensor, and what its picture is drawn from."""

    path: Path
    tensor: torch.Tensor  # (C, T, H, W) or (C, D, H, W)
    frames: np.ndarray | None  # a video's (T, h, w, 3) frames as the model sees them
    fps: float  # the animation's rate, so that it lasts as long as the video
    volume: np.ndarray | None  # a volume as read, for its montage


def file_stem(path: Path) -> str:
    """The name without its suffix, both of a .nii.gz."""
    return path.name[: -len(".nii.gz")] if path.name.lower().endswith(".nii.gz") else path.stem


def read_clip_input(path: Path, loaded: LoadedClipModel) -> ClipInput:
    """A video's clip, preprocessed, or a volume with its channel axis, checked to fit the
    model; an InputError says what does not."""
    if is_volume(path):
        volume = read_volume(path)
        channels = volume if volume.ndim == 4 else volume[None]
        if len(channels) != loaded.channels:
            count = f"{len(channels)} channel" + ("s" if len(channels) > 1 else "")
            raise InputError(
                f"{path}: a volume of shape {volume.shape} has {count};"
                f" {loaded.name} takes {loaded.channels}-channel volumes,"
                + (" (D, H, W)" if loaded.channels == 1 else f" ({loaded.channels}, D, H, W)")
            )
        return ClipInput(path, loaded.volume_input(channels), None, 0.0, volume)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(
            f"{path}: not a video ({', '.join(sorted(VIDEO_SUFFIXES))}) or a volume"
            f" ({', '.join(VOLUME_SUFFIXES)})"
        )
    if loaded.frames is None:
        raise InputError(
            f"{path}: {loaded.name} takes {loaded.channels}-channel volumes (.npy, .nii), not"
            " videos; explain a video with a video model (e.g. --model r3d_18)"
        )
    video, fps = read_video(path)
    clip = sample_clip(video, loaded.frames, source=path, model=loaded.name)
    photos = [Image.fromarray(frame) for frame in clip]
    tensors, boxes = zip(*(loaded.preprocessing(photo) for photo in photos), strict=True)
    shown = np.stack([np.asarray(crop_to_box(photo, boxes[0])) for photo in photos])
    tensor = torch.stack(tensors, dim=1)  # (3, T, H, W): channels, then time
    return ClipInput(path, tensor, shown, fps * len(clip) / len(video), None)


def write_clip_map(
    item: ClipInput,
    saliency: torch.Tensor,
    base: Path,
    *,
    animation: str = "gif",
    colormap: str = "jet",
    alpha: float = 0.5,
) -> Path:
    """Write `base`.npy (the map) and its picture (a `animation` file, gif or mp4, for a video;
    a montage .png for a volume); return the picture's path."""
    if item.frames is not None:
        picture = base.with_name(f"{base.name}.{animation}")
        write_animation(
            item.frames, saliency, picture, fps=item.fps, colormap=colormap, alpha=alpha
        )
    else:
        assert item.volume is not None  # an input is a video or a volume
        picture = base.with_name(f"{base.name}.png")
        sliced = montage(item.volume, saliency, colormap=colormap, alpha=alpha)
        write_atomically(picture, partial(save_png, sliced))
    write_atomically(base.with_name(f"{base.name}.npy"), partial(save_array, saliency.numpy()))
    return picture
