"""`reciprocam explain CLIP... --model NAME`: the maps of videos and volumes.

A video (.mp4, .mov, .avi, .mkv, .webm, ...) is explained on the model's clip length of frames,
evenly spaced over it, each resized and centre-cropped as the model expects; into --output go
`<name>_<method>.gif` (or `.mp4` with --animation mp4: each frame's crop with its map) and
`<name>_<method>.npy` (the (T, H, W) map, float32 in [0, 1] at the clip's input size). A
volume (.npy, .nii, .nii.gz: (D, H, W), or (C, D, H, W), values in [0, 1]) is normalised as
the model's frames are: `<name>_<method>.png` (its slices with the map) and `.npy` ((D, H,
W)). Every file is read before the first is explained, so that a bad one stops the run before
anything is written.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..clips import (
    VIDEO_SUFFIXES,
    is_volume,
    montage,
    read_video,
    read_volume,
    sample_clip,
    write_animation,
)
from ..errors import InputError, OptionError
from ..files import make_folder, writable_folder, write_atomically
from ..photos import category_name, save_array, save_png, top_predictions, unique_stem
from ..visualize import crop_to_box
from ..zoo.video import LoadedClipModel, load_video_model, video_model_names
from .common import (
    chosen_classes,
    classification_target,
    device_from,
    method_explainer,
    note_if_random,
)

# Options of `reciprocam explain` that have no meaning for a video or volume.
_NOT_FOR_CLIPS = (
    ("--onnx", "onnx"),
    ("--region", "region"),
    ("--boxes", "boxes"),
    ("--threshold", "threshold"),
    ("--image-size", "image_size"),
)


@dataclass(frozen=True)
class _Input:
    """A file read for the model: its input tensor, and what its picture is drawn from."""

    path: Path
    tensor: torch.Tensor  # (C, T, H, W) or (C, D, H, W)
    frames: np.ndarray | None  # a video's (T, h, w, 3) frames as the model sees them
    fps: float  # the animation's rate, so that it lasts as long as the video
    volume: np.ndarray | None  # a volume as read, for its montage


def takes(sources: Sequence[Path]) -> bool:
    """Whether `sources` are videos and volumes (this command's) rather than photos; a mix of
    the two raises OptionError."""
    clips = [path for path in sources if is_volume(path) or path.suffix.lower() in VIDEO_SUFFIXES]
    others = [path for path in sources if path not in clips]
    if clips and others:
        raise OptionError(
            f"explain photos, or videos and volumes, in one run, not both ({others[0]} is a"
            f" photo or folder, {clips[0]} a video or volume)"
        )
    return bool(clips)


def run(arguments: argparse.Namespace, sources: Sequence[Path]) -> int:
    for flag, name in _NOT_FOR_CLIPS:
        if getattr(arguments, name) is not None:
            raise OptionError(f"{flag} does not apply to videos and volumes")
    if arguments.task != "classification":
        raise OptionError(f"--task {arguments.task} does not apply to videos and volumes")
    if arguments.model is None:
        raise OptionError(
            "explaining a video or volume needs a --model: one of " + ", ".join(video_model_names())
        )
    writable_folder(arguments.output)  # before loading the model, so a bad --output fails fast
    loaded = load_video_model(arguments.model, arguments.weights, arguments.checkpoint)
    inputs = [_read(path, loaded) for path in sources]
    note_if_random(loaded.name, loaded.pretrained)
    target = classification_target(arguments.top, chosen_classes(arguments, loaded.categories))
    device = device_from(arguments)
    explainer = method_explainer(arguments, loaded.model.to(device))
    make_folder(arguments.output)
    used: set[str] = set()
    with explainer:
        for item in inputs:
            explanation = explainer.explain(item.tensor[None].to(device), target)
            bound = explanation.target
            assert bound is not None  # every explainer binds its target
            maps = explanation.maps[0] if bound.stacked else explanation.maps
            scores = explanation.target_probabilities[0]
            stem = unique_stem(f"{_stem(item.path)}_{arguments.method}", used)
            written = []
            for index, saliency in enumerate(maps.float().cpu()):
                chosen = int(bound.indices[0, index])
                name = f"{stem}_{chosen}" if bound.stacked else stem
                picture = _write(item, saliency, arguments.output / name, arguments)
                written.append(
                    f"map of '{category_name(chosen, loaded.categories)}'"
                    f" ({float(scores[index]):.1%}) -> {picture}"
                )
            top = top_predictions(explanation, arguments.top or 5, loaded.categories)
            ranking = ", ".join(f"{p.name} {p.probability:.1%}" for p in top)
            print(f"{item.path.name}: {ranking} | {'; '.join(written)}")
        layer = f" on layer '{explainer.target_layer}'" if explainer.target_layer else ""
    print(
        f"explained {len(inputs)} {'file' if len(inputs) == 1 else 'files'} with"
        f" {arguments.method}{layer} into {arguments.output}"
    )
    return 0


def _stem(path: Path) -> str:
    """The name without its suffix, both of a .nii.gz."""
    return path.name[: -len(".nii.gz")] if path.name.lower().endswith(".nii.gz") else path.stem


def _read(path: Path, loaded: LoadedClipModel) -> _Input:
    """A video's clip, preprocessed, or a volume with its channel axis, checked to fit."""
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
        return _Input(path, loaded.volume_input(channels), None, 0.0, volume)
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
    return _Input(path, tensor, shown, fps * len(clip) / len(video), None)


def _write(item: _Input, saliency: torch.Tensor, base: Path, arguments: argparse.Namespace) -> Path:
    """Write `base`.npy (the map) and its picture (an animation or a montage); its path."""
    colormap, alpha = arguments.colormap, arguments.alpha
    if item.frames is not None:
        picture = base.with_name(f"{base.name}.{arguments.animation or 'gif'}")
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
