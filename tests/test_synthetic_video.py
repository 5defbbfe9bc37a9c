"""Moving Shapes clips, Shapes volumes and their trained 3-D models: ground truth that is
right in space and time, models that work."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from reciprocam import ReciproCAM
from reciprocam.synthetic.models import shapes_model
from reciprocam.synthetic.shapes import CLASSES, SIZE, render, to_tensor
from reciprocam.synthetic.video import (
    FRAMES,
    WINDOW,
    ShapesVideo,
    clip_to_tensor,
    render_clip,
)
from reciprocam.synthetic.video_models import (
    ShapesVideoCNN,
    ShapesVolumeCNN,
    inflate,
    shapes_video_model,
    shapes_volume_model,
)
from reciprocam.synthetic.volume import (
    CLASSES_3D,
    SIDE,
    ShapesVolume,
    render_volume,
    volume_to_tensor,
)


def test_clips_are_a_function_of_seed_and_index() -> None:
    first, again, other = render_clip(0, 7), render_clip(0, 7), render_clip(0, 8)
    assert first.frames.shape == (FRAMES, SIZE, SIZE, 3)
    assert first.frames.dtype == np.uint8
    assert np.array_equal(first.frames, again.frames)
    assert np.array_equal(first.tube, again.tube)
    assert (first.label, first.window) == (again.label, again.window)
    assert not np.array_equal(first.frames, other.frames)
    assert ShapesVideo("train", 5).seed != ShapesVideo("test", 5).seed


def test_the_tube_is_the_flat_coloured_target_moving_in_a_line_within_its_window() -> None:
    for index in range(30):
        clip = render_clip(1, index)
        first, last = clip.window
        assert WINDOW[0] <= last - first + 1 <= WINDOW[1]
        shown = clip.tube.any(axis=(1, 2))
        assert np.array_equal(np.flatnonzero(shown), np.arange(first, last + 1))
        # Drawn last in one colour: every tube pixel of every frame has that colour.
        inside = clip.frames[clip.tube]
        assert (inside == inside[0]).all()
        areas = clip.tube[first : last + 1].sum(axis=(1, 2))
        assert 0.015 * SIZE**2 < areas.min() <= areas.max() < 0.2 * SIZE**2
        # Steady along one line: each step of the centre is the mean step, give or take the
        # rounding of the drawing to pixels.
        centres = np.array([np.argwhere(mask).mean(axis=0) for mask in clip.tube[first : last + 1]])
        steps = np.diff(centres, axis=0)
        assert np.abs(steps - steps.mean(axis=0)).max() < 1.0


def test_the_background_and_distractors_move_slowly() -> None:
    # Outside the target's tube, neighbouring frames mostly agree (the background drifts by
    # whole pixels, at most 8 over a clip; distractors by up to 2 a frame), yet something
    # moves; two clips' frames differ everywhere.
    for index in range(5):
        frames = render_clip(2, index).frames.astype(np.int16)
        tube = render_clip(2, index).tube
        change = np.abs(frames[1:] - frames[:-1]).max(axis=-1)[~(tube[1:] | tube[:-1])]
        assert np.median(change) == 0
        assert np.percentile(change, 90) < 40
        assert (change > 0).mean() > 0.1
        other = render_clip(2, index + 10).frames.astype(np.int16)
        assert np.median(np.abs(frames - other).max(axis=-1)) > 50


def test_classes_are_balanced() -> None:
    clips = np.bincount([render_clip(3, i).label for i in range(200)], minlength=len(CLASSES))
    volumes = np.bincount([render_volume(3, i).label for i in range(200)], minlength=4)
    assert clips.min() > 30  # about 50 each
    assert volumes.min() > 30


def test_clip_to_tensor_normalises() -> None:
    clip = render_clip(0, 0)
    tensor = clip_to_tensor(clip.frames)
    assert tensor.shape == (3, FRAMES, SIZE, SIZE)
    green = clip.frames[5, 10, 20, 1] / 255
    assert float(tensor[1, 5, 10, 20]) == pytest.approx((green - 0.5) / 0.25, abs=1e-6)
    data, label = ShapesVideo("test", 3)[2]
    assert torch.equal(data, clip_to_tensor(ShapesVideo("test", 3).sample(2).frames))
    assert label == ShapesVideo("test", 3).sample(2).label


def test_volumes_are_a_function_of_seed_and_index_with_a_flat_target() -> None:
    first, again, other = render_volume(0, 7), render_volume(0, 7), render_volume(0, 8)
    assert np.array_equal(first.volume, again.volume)
    assert not np.array_equal(first.volume, other.volume)
    for index in range(30):
        sample = render_volume(4, index)
        assert sample.volume.shape == sample.mask.shape == (SIDE, SIDE, SIDE)
        assert sample.volume.dtype == np.float32
        assert 0 <= sample.volume.min() <= sample.volume.max() <= 1
        inside = sample.volume[sample.mask]
        assert (inside == inside[0]).all()  # drawn last in one intensity
        # The smallest rod (radius 4) has some 45 voxels, the largest cube some 1700.
        assert 30 < sample.mask.sum() < 0.06 * SIDE**3
        # Whole: no target voxel on the volume's faces.
        assert not sample.mask[[0, -1]].any()
        assert not sample.mask[:, [0, -1]].any()
        assert not sample.mask[:, :, [0, -1]].any()
    tensor, label = ShapesVolume("test", 1)[0]
    assert tensor.shape == (1, SIDE, SIDE, SIDE)
    assert label == ShapesVolume("test", 1).sample(0).label


def test_the_solids_differ_in_size_as_built() -> None:
    # Per class, the mean target volume over the same radii: a rod is thinnest, a ball's
    # (4/3 pi r^3) is a little above a cube's ((1.5 r)^3) and a cross's.
    sizes: dict[int, list[int]] = {label: [] for label in range(len(CLASSES_3D))}
    for index in range(120):
        sample = render_volume(5, index)
        sizes[sample.label].append(int(sample.mask.sum()))
    means = {CLASSES_3D[label]: np.mean(values) for label, values in sizes.items()}
    assert means["rod"] < means["cross"] < means["cube"] < means["ball"]


def score(model: nn.Module, data: Dataset[tuple[Tensor, int]]) -> float:
    correct = 0
    with torch.inference_mode():
        for inputs, labels in DataLoader(data, batch_size=32):
            correct += int((model(inputs).argmax(1) == labels).sum())
    return correct / len(data)  # type: ignore[arg-type]


def test_the_shipped_video_model_classifies_clips() -> None:
    model = shapes_video_model()
    assert isinstance(model, ShapesVideoCNN)
    assert not model.training
    assert all(not module.training for module in model.modules())
    assert score(model, ShapesVideo("test", 64, seed=4)) >= 0.9


def test_the_shipped_volume_model_classifies_volumes() -> None:
    model = shapes_volume_model()
    assert isinstance(model, ShapesVolumeCNN)
    assert all(not module.training for module in model.modules())
    assert score(model, ShapesVolume("test", 64, seed=4)) >= 0.9


@pytest.mark.parametrize(
    ("build", "shape", "features"),
    [
        (ShapesVideoCNN, (2, 3, FRAMES, SIZE, SIZE), (2, 128, 4, 8, 8)),
        (ShapesVolumeCNN, (2, 1, SIDE, SIDE, SIDE), (2, 64, 8, 8, 8)),
    ],
)
def test_layer3_feeds_the_global_average_pool(
    build: type[nn.Module], shape: tuple[int, ...], features: tuple[int, ...]
) -> None:
    torch.manual_seed(0)
    model = build().eval()
    seen: dict[str, Tensor] = {}
    model.layer3.register_forward_hook(lambda module, inputs, output: seen.update(x=output))
    x = torch.randn(shape)
    with torch.inference_mode():
        logits = model(x)
    assert tuple(seen["x"].shape) == features
    # The head is exactly the mean of layer3 then fc: what ReciproCAM's GAP shortcut needs.
    expected = model.fc(seen["x"].mean(dim=(2, 3, 4)))
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_inflation_gives_a_still_clip_the_image_models_features() -> None:
    # Kernels spread evenly over time, on a clip of one frame repeated: the layer3 step that
    # no zero padding in time reaches (step 2 of 0 to 3, through the stem's and layer2's
    # time kernels) holds the 2-D model's features; the others do not.
    image_model = shapes_model("cnn")
    video_model = inflate(ShapesVideoCNN(), image_model).eval()
    frame = to_tensor(render(0, 3).image)
    seen: dict[str, Tensor] = {}
    image_model.layer3.register_forward_hook(lambda m, i, output: seen.update(image=output))
    video_model.layer3.register_forward_hook(lambda m, i, output: seen.update(video=output))
    with torch.inference_mode():
        image_model(frame[None])
        video_model(frame[None, :, None].expand(1, 3, FRAMES, SIZE, SIZE))
    video, image = seen["video"], seen["image"]
    torch.testing.assert_close(video[:, :, 2], image, rtol=1e-4, atol=1e-4)
    for step in (0, 1, 3):
        assert (video[:, :, step] - image).abs().max() > 1.0


def test_reciprocam_finds_the_evidence_in_time_and_space() -> None:
    # Measured on these 32 clips: the map's peak is in the target's window for 0.72 of them
    # (a random frame: about 0.3) and in its tube for 0.53; in the volume's target for 0.75
    # of 32 volumes (a random voxel: about 0.02).
    clips = [ShapesVideo("test", 32, seed=5).sample(i) for i in range(32)]
    with ReciproCAM(shapes_video_model()) as explainer:
        maps = explainer(torch.stack([clip_to_tensor(clip.frames) for clip in clips]))
    peaks = [np.unravel_index(int(m.argmax()), m.shape) for m in maps]
    assert (
        np.mean([c.window[0] <= p[0] <= c.window[1] for c, p in zip(clips, peaks, strict=True)])
        >= 0.6
    )
    assert np.mean([c.tube[p] for c, p in zip(clips, peaks, strict=True)]) >= 0.4
    volumes = [ShapesVolume("test", 32, seed=5).sample(i) for i in range(32)]
    with ReciproCAM(shapes_volume_model()) as explainer:
        maps = explainer(torch.stack([volume_to_tensor(v.volume) for v in volumes]))
    peaks = [np.unravel_index(int(m.argmax()), m.shape) for m in maps]
    assert np.mean([v.mask[p] for v, p in zip(volumes, peaks, strict=True)]) >= 0.6
