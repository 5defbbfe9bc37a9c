"""Files of clips and volumes: reading videos and volumes, sampling a clip, and writing their
maps as an animation or a montage of slices."""

from __future__ import annotations

import importlib
import math
from fractions import Fraction
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image
from torch import Tensor

from .errors import InputError, first_line
from .files import write_atomically
from .names import VIDEO_SUFFIXES as VIDEO_SUFFIXES
from .names import VOLUME_SUFFIXES as VOLUME_SUFFIXES
from .names import is_volume as is_volume
from .visualize import overlay

MAX_VIDEO_BYTES = 2**31
"""The most decoded RGB a video may take (2 GiB, e.g. 40 s at 640x480): longer ones are refused
rather than filling the memory."""


def _check_file(path: Path) -> None:
    """An InputError unless `path` is a file."""
    if not path.is_file():
        raise InputError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")


def _import(module: str, extra: str) -> ModuleType:
    """An optional dependency, or a one-line error saying which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError(
            f"reading this file needs {module}: pip install 'reciprocam[{extra}]'"
        ) from None


def read_video(path: str | Path) -> tuple[np.ndarray, float]:
    """Every frame of a video file as (T, H, W, 3) uint8 RGB, and its frames per second.

    Decoded with PyAV (the `video` extra); a file that is missing, not a video, without a
    video stream, or over MAX_VIDEO_BYTES decoded raises InputError naming it.
    """
    av = _import("av", "video")
    path = Path(path)
    _check_file(path)
    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path}: the file has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            size = 0
            for frame in container.decode(stream):
                # Frames of another size (a stream may change it) are scaled to the first's.
                width, height = (frames[0].shape[1], frames[0].shape[0]) if frames else (None, None)
                array = frame.to_ndarray(format="rgb24", width=width, height=height)
                size += array.nbytes
                if size > MAX_VIDEO_BYTES:
                    raise InputError(
                        f"{path}: the video takes over {MAX_VIDEO_BYTES >> 30} GiB decoded"
                        f" ({len(frames)} frames of {array.shape[1]}x{array.shape[0]} and more);"
                        " cut the part to explain first (e.g. ffmpeg -ss START -t SECONDS)"
                    )
                frames.append(array)
            rate = stream.average_rate or stream.guessed_rate
    except InputError:
        raise
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as error:
        reason = getattr(error, "strerror", None) or first_line(error)
        raise InputError(f"{path}: not a readable video ({reason})") from None
    if not frames:
        raise InputError(f"{path}: the video has no frames")
    # Containers that record no rate are shown at 25 frames a second, ffmpeg's own default.
    return np.stack(frames), float(rate) if rate else 25.0


def sample_clip(
    frames: np.ndarray, length: int, *, source: object = "the video", model: str = "the model"
) -> np.ndarray:
    """`length` frames of (T, ...) `frames`, evenly spaced over them: the middle frame of each
    of `length` equal parts. Fewer than `length` frames raises InputError."""
    count = len(frames)
    if count < length:
        raise InputError(f"{source} has {count} frames; {model} needs at least {length}")
    indices = ((np.arange(length) + 0.5) * count / length).astype(np.int64)
    return frames[indices]


def write_animation(
    frames: np.ndarray,
    maps: Tensor,
    path: Path,
    *,
    fps: float,
    colormap: str = "jet",
    alpha: float = 0.5,
) -> None:
    """Write each (T, H, W, 3) uint8 frame with its (T, h, w) map overlaid as an animated GIF,
    or an H.264 MP4 (PyAV) when `path` ends in .mp4, `fps` frames a second, atomically."""
    pictures = [
        overlay(Image.fromarray(frame), saliency, colormap=colormap, alpha=alpha)
        for frame, saliency in zip(frames, maps, strict=True)
    ]
    save = _save_mp4 if path.suffix.lower() == ".mp4" else _save_gif
    write_atomically(path, partial(save, pictures, fps))


def _save_gif(pictures: list[Image.Image], fps: float, path: Path) -> None:
    pictures[0].save(
        path,
        format="GIF",
        save_all=True,
        append_images=pictures[1:],
        duration=max(1, round(1000 / fps)),
        loop=0,
    )


def _save_mp4(pictures: list[Image.Image], fps: float, path: Path) -> None:
    av = _import("av", "video")
    # yuv420p, which every player reads, needs even sides: an odd last row or column is dropped.
    width, height = pictures[0].width // 2 * 2, pictures[0].height // 2 * 2
    if not width or not height:
        raise InputError(f"cannot write {path.name}: a {pictures[0].size} frame is too small")
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w", format="mp4") as container:
        stream: Any = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "17"}  # visually lossless: the colours of the map matter
        for picture in pictures:
            pixels = np.ascontiguousarray(np.asarray(picture)[:height, :width])
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode(None))


def read_volume(path: str | Path) -> np.ndarray:
    """A volume file as float32 (D, H, W) or (C, D, H, W): a .npy array as stored, or a NIfTI
    .nii / .nii.gz (nibabel, the `volume` extra) in its array's axis order, a 4-D one's last
    axis moved first as its channels (as MONAI's EnsureChannelFirst does)."""
    path = Path(path)
    _check_file(path)
    if path.suffix.lower() == ".npy":
        try:
            values: np.ndarray = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            raise InputError(f"{path}: not a readable .npy array ({first_line(error)})") from None
    else:
        nibabel = _import("nibabel", "volume")
        try:
            values = np.asanyarray(nibabel.load(path).dataobj)
        except Exception as error:  # nibabel raises its own errors, OSError, EOFError on junk
            raise InputError(f"{path}: not a readable NIfTI file ({first_line(error)})") from None
        if values.ndim == 4:
            values = np.moveaxis(values, -1, 0)
    if values.ndim not in (3, 4):
        raise InputError(
            f"{path}: a volume of shape {tuple(values.shape)}; give one of shape (D, H, W),"
            " or (C, D, H, W) with channels"
        )
    if values.dtype.kind not in "biuf":
        raise InputError(f"{path}: the volume holds {values.dtype} values, not numbers")
    volume = values.astype(np.float32)
    if not np.isfinite(volume).all():
        raise InputError(f"{path}: the volume holds NaN or infinite values")
    return volume


def montage(
    volume: np.ndarray,
    saliency: Tensor,
    *,
    side: int = 128,
    colormap: str = "jet",
    alpha: float = 0.5,
) -> Image.Image:
    """A grid of the (D, H, W) or (C, D, H, W) volume's slices along D (left to right, then
    down), each shown in grey (the channels' mean, the volume's range as black to white),
    enlarged to `side` pixels on its longer side, with its slice of the (D, H, W) map
    overlaid."""
    grey = volume if volume.ndim == 3 else volume.mean(0)
    low, high = float(grey.min()), float(grey.max())
    pixels = np.rint((grey - low) / max(high - low, 1e-12) * 255).astype(np.uint8)
    depth, height, width = pixels.shape
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    columns = math.ceil(math.sqrt(depth))
    grid = Image.new("RGB", (columns * size[0], math.ceil(depth / columns) * size[1]))
    for index, (layer, layer_map) in enumerate(zip(pixels, saliency, strict=True)):
        # Nearest keeps voxels sharp when enlarged; a box filter averages them when reduced.
        method = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BOX
        tile = Image.fromarray(layer).convert("RGB").resize(size, method)
        row, column = divmod(index, columns)
        grid.paste(
            overlay(tile, layer_map, colormap=colormap, alpha=alpha),
            (column * size[0], row * size[1]),
        )
    return grid
