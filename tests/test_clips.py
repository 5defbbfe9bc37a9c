"""Files of clips and volumes: videos read back exactly, clips sampled, animations and montages
that show the overlay of each frame or slice, volumes read as stored, and one-line errors."""

from __future__ import annotations

import sys

import av
import nibabel
import numpy as np
import pytest
import torch
from helpers import error_message
from PIL import Image

from reciprocam.clips import montage, read_video, read_volume, sample_clip, write_animation
from reciprocam.errors import InputError
from reciprocam.visualize import overlay


def write_video(path, frames: np.ndarray, fps: int = 10) -> None:
    """(T, H, W, 3) uint8 frames as a lossless FFV1 video (.mkv), so they read back exactly."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "bgr0"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))


def smooth_frames(count: int = 6, height: int = 24, width: int = 32) -> np.ndarray:
    """Gradients that change from frame to frame: what a lossy codec keeps well."""
    y, x = np.mgrid[0:height, 0:width]
    frames = [
        np.stack([x * 255 / width, y * 255 / height, np.full_like(x, 40 * t)], -1)
        for t in range(count)
    ]
    return np.rint(frames).astype(np.uint8)


def test_a_video_reads_back_exactly_with_its_rate(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (7, 24, 32, 3), dtype=np.uint8)
    write_video(tmp_path / "clip.mkv", frames, fps=12)
    read, fps = read_video(tmp_path / "clip.mkv")
    assert read.dtype == np.uint8
    assert fps == 12.0
    np.testing.assert_array_equal(read, frames)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no such file"),
        (b"hello, not a video", "not a readable video (Invalid data found"),
        (b"", "not a readable video"),
    ],
)
def test_a_file_that_is_no_video_is_one_line_naming_it(tmp_path, content, expected):
    path = tmp_path / "clip.mp4"
    if content is not None:
        path.write_bytes(content)
    message = error_message(InputError, read_video, path)
    assert message.startswith(f"{path}: {expected}")


def test_a_file_without_a_video_stream_says_so(tmp_path):
    path = tmp_path / "sound.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 800), np.int16), format="s16", layout="mono"
        )
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    assert error_message(InputError, read_video, path) == f"{path}: the file has no video stream"


def test_without_pyav_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError
    message = error_message(InputError, read_video, tmp_path / "clip.mp4")
    assert message == "reading this file needs av: pip install 'reciprocam[video]'"


def test_a_clip_takes_the_middle_frame_of_equal_parts():
    frames = np.arange(10)
    np.testing.assert_array_equal(sample_clip(frames, 4), [1, 3, 6, 8])
    np.testing.assert_array_equal(sample_clip(frames, 10), frames)
    np.testing.assert_array_equal(sample_clip(frames, 1), [5])
    np.testing.assert_array_equal(sample_clip(np.arange(33), 16), np.arange(16) * 2 + 1)


def test_a_video_shorter_than_the_clip_is_refused():
    message = error_message(
        InputError, sample_clip, np.zeros((5, 2, 2, 3)), 16, source="walk.mp4", model="r3d_18"
    )
    assert message == "walk.mp4 has 5 frames; r3d_18 needs at least 16"


def test_a_gif_animation_shows_each_frame_overlaid_with_its_map(tmp_path):
    frames = smooth_frames()
    maps = torch.rand(6, 3, 4, generator=torch.Generator().manual_seed(0))
    write_animation(frames, maps, tmp_path / "clip.gif", fps=4, colormap="viridis", alpha=0.4)
    with Image.open(tmp_path / "clip.gif") as animation:
        assert animation.n_frames == 6
        assert animation.info["duration"] == 250
        for index in range(6):
            animation.seek(index)
            expected = overlay(
                Image.fromarray(frames[index]), maps[index], colormap="viridis", alpha=0.4
            )
            shown = np.asarray(animation.convert("RGB"), dtype=np.int16)
            # A GIF has 256 colours a frame: each pixel within a palette step of the overlay.
            assert np.abs(shown - np.asarray(expected, dtype=np.int16)).mean() < 3
    assert (tmp_path / ".reciprocam-written").read_text() == "clip.gif\n"


def test_an_mp4_animation_decodes_to_the_overlays(tmp_path):
    frames = smooth_frames(height=25, width=33)  # odd sides: the last row and column go
    maps = torch.linspace(0, 1, 6 * 12).reshape(6, 3, 4)
    write_animation(frames, maps, tmp_path / "clip.mp4", fps=0.5)
    decoded, fps = read_video(tmp_path / "clip.mp4")
    assert decoded.shape == (6, 24, 32, 3)
    assert fps == 0.5
    for frame, saliency, shown in zip(frames, maps, decoded, strict=True):
        expected = np.asarray(overlay(Image.fromarray(frame), saliency))[:24, :32]
        assert np.abs(shown.astype(np.int16) - expected).mean() < 4  # H.264 at crf 17


def test_an_npy_volume_reads_as_stored_in_float32(tmp_path):
    volume = np.random.default_rng(0).integers(0, 1000, (2, 5, 6, 7)).astype(np.int16)
    np.save(tmp_path / "scan.npy", volume)
    read = read_volume(tmp_path / "scan.npy")
    assert read.dtype == np.float32
    np.testing.assert_array_equal(read, volume)
    np.save(tmp_path / "one.npy", volume[0])
    np.testing.assert_array_equal(read_volume(tmp_path / "one.npy"), volume[0])


def test_a_nifti_volume_reads_in_its_array_order_channels_first(tmp_path):
    volume = np.random.default_rng(1).random((5, 6, 7)).astype(np.float32)
    nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), tmp_path / "scan.nii.gz")
    np.testing.assert_array_equal(read_volume(tmp_path / "scan.nii.gz"), volume)
    channels = np.random.default_rng(2).random((5, 6, 7, 2)).astype(np.float32)
    nibabel.save(nibabel.Nifti1Image(channels, np.eye(4)), tmp_path / "two.nii")
    np.testing.assert_array_equal(read_volume(tmp_path / "two.nii"), np.moveaxis(channels, -1, 0))


@pytest.mark.parametrize("shape", [(4, 5), (1, 2, 3, 4, 5), ()])
def test_a_volume_of_another_rank_is_refused_with_its_shape(tmp_path, shape):
    np.save(tmp_path / "flat.npy", np.zeros(shape))
    message = error_message(InputError, read_volume, tmp_path / "flat.npy")
    assert message == (
        f"{tmp_path / 'flat.npy'}: a volume of shape {shape}; give one of shape (D, H, W),"
        " or (C, D, H, W) with channels"
    )


@pytest.mark.parametrize(
    ("write", "expected"),
    [
        (lambda p: p.write_text("not an array"), "not a readable .npy array"),
        (lambda p: np.save(p, np.array([{"a": 1}] * 8).reshape(2, 2, 2)), "not a readable .npy"),
        (lambda p: np.save(p, np.full((2, 2, 2), np.nan)), "the volume holds NaN or infinite"),
        (lambda p: np.save(p, np.full((2, 2, 2), "x")), "the volume holds <U1 values"),
    ],
)
def test_an_unreadable_volume_is_one_line_naming_it(tmp_path, write, expected):
    path = tmp_path / "bad.npy"
    write(path)
    assert error_message(InputError, read_volume, path).startswith(f"{path}: {expected}")


def test_a_montage_shows_each_slice_with_its_map(tmp_path):
    rng = np.random.default_rng(3)
    volume = rng.random((2, 5, 8, 6)).astype(np.float32)
    maps = torch.from_numpy(rng.random((5, 8, 6)).astype(np.float32))
    picture = montage(volume, maps, side=16, colormap="magma", alpha=0.3)
    # Slices of 8 x 6 shown at 16 x 12, three a row: two rows.
    assert picture.size == (3 * 12, 2 * 16)
    grey = volume.mean(0)
    pixels = np.rint((grey - grey.min()) / (grey.max() - grey.min()) * 255).astype(np.uint8)
    for index in range(5):
        row, column = divmod(index, 3)
        tile = Image.fromarray(pixels[index]).convert("RGB").resize((12, 16), Image.NEAREST)
        expected = overlay(tile, maps[index], colormap="magma", alpha=0.3)
        shown = picture.crop((column * 12, row * 16, column * 12 + 12, row * 16 + 16))
        np.testing.assert_array_equal(np.asarray(shown), np.asarray(expected))
    assert not np.asarray(picture)[16:, 24:].any()  # the cell past the last slice is black
