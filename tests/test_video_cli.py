"""`reciprocam explain` on videos and volumes: the maps written are the library's own, the
animations and montages are there, and every mistake is one line and writes nothing."""

from __future__ import annotations

import nibabel
import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from test_clips import write_video

from reciprocam import ReciproCAM
from reciprocam.cli import main
from reciprocam.clips import read_video
from reciprocam.synthetic.video_models import ShapesVideoCNN, ShapesVolumeCNN, shapes_volume_model
from reciprocam.synthetic.volume import volume_to_tensor
from reciprocam.zoo.video import CLIP_LENGTHS, load_video_model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 40-frame 4:3 video, a 5-frame one, volumes of one and three channels, a photo, a text
    file named .mp4, and checkpoints of the Shapes video and volume CNNs (random weights)."""
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    write_video(folder / "walk.mkv", rng.integers(0, 256, (40, 60, 80, 3), dtype=np.uint8))
    write_video(folder / "short.mkv", rng.integers(0, 256, (5, 60, 80, 3), dtype=np.uint8))
    grey = rng.random((16, 32, 32)).astype(np.float32)
    np.save(folder / "grey.npy", grey)
    nibabel.save(nibabel.Nifti1Image(grey, np.eye(4)), folder / "grey.nii.gz")
    np.save(folder / "rgb.npy", rng.random((3, 16, 32, 32)).astype(np.float32))
    np.save(folder / "flat.npy", rng.random((32, 32)).astype(np.float32))
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / "photo.png")
    (folder / "notes.mp4").write_text("not a video")
    torch.manual_seed(0)
    torch.save(ShapesVolumeCNN().state_dict(), folder / "volume.pt")
    torch.save(ShapesVideoCNN().state_dict(), folder / "video.pt")
    return folder


def run(capsys, *arguments):
    code = main([str(a) for a in arguments])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_video_gets_the_map_of_its_sampled_preprocessed_clip(files, tmp_path, capsys):
    torch.manual_seed(1)  # the random weights of r3d_18, built alike below
    code, out, err = run(
        capsys, "explain", files / "walk.mkv", "--model", "r3d_18", "--device", "cpu",
        "--output", tmp_path,
    )  # fmt: skip
    assert code == 0, err
    assert err.strip().startswith("note: r3d_18 has random weights")
    torch.manual_seed(1)
    loaded = load_video_model("r3d_18")
    frames, _ = read_video(files / "walk.mkv")
    # 16 of the 40 frames, the middle of each 2.5: 1, 3, 6, 8, ...; each resized to 128 on
    # its shorter side and cropped to 112 x 112 in the middle.
    clip = frames[np.floor((np.arange(16) + 0.5) * 2.5).astype(int)]
    tensors = [loaded.preprocessing(Image.fromarray(frame))[0] for frame in clip]
    explanation = ReciproCAM(loaded.model).explain(torch.stack(tensors, dim=1)[None])
    saved = np.load(tmp_path / "walk_reciprocam.npy")
    assert saved.shape == (16, 112, 112)
    assert saved.dtype == np.float32
    np.testing.assert_allclose(saved, explanation.maps[0].numpy(), atol=1e-6)
    top = explanation.probabilities[0].topk(5)
    ranking = ", ".join(
        f"{loaded.categories[i]} {p:.1%}" for p, i in zip(top.values, top.indices, strict=True)
    )
    assert f"walk.mkv: {ranking} | map of '{loaded.categories[top.indices[0]]}'" in out
    assert "explained 1 file with reciprocam on layer 'layer4'" in out
    with Image.open(tmp_path / "walk_reciprocam.gif") as animation:
        assert animation.n_frames == 16
        # The crop the model sees, at the video's resolution: 112 / 128 of the 60 rows.
        assert animation.size == (52, 52)
        assert animation.info["duration"] == round(1000 / (10 * 16 / 40))  # as long as the video


def test_mp4_animations_and_several_classes(files, tmp_path, capsys):
    code, out, err = run(
        capsys, "explain", files / "walk.mkv", "--model", "shapes_video", "--checkpoint",
        files / "video.pt", "--class", "1,cross", "--animation", "mp4", "--method", "gradcam",
        "--device", "cpu", "--output", tmp_path,
    )  # fmt: skip
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "walk_gradcam_1.mp4",
        "walk_gradcam_1.npy",
        "walk_gradcam_3.mp4",
        "walk_gradcam_3.npy",
    ]
    assert "map of 'square'" in out
    assert "map of 'cross'" in out
    decoded, _ = read_video(tmp_path / "walk_gradcam_3.mp4")
    assert decoded.shape == (16, 60, 60, 3)  # the 64 x 64 crop of 64 x 85 frames: 60 x 60
    saved = np.load(tmp_path / "walk_gradcam_3.npy")
    assert saved.shape == (16, 64, 64)


def test_a_volume_gets_its_map_and_a_montage(files, tmp_path, capsys):
    code, out, err = run(
        capsys, "explain", files / "grey.npy", files / "grey.nii.gz", "--model", "shapes_volume",
        "--checkpoint",
        files / "volume.pt", "--device", "cpu", "--output", tmp_path,
    )  # fmt: skip
    assert code == 0, err
    loaded = load_video_model("shapes_volume", checkpoint=files / "volume.pt")
    volume = np.load(files / "grey.npy")
    # The Shapes normalisation, (x - 0.5) / 0.25, as `volume.volume_to_tensor` does.
    explanation = ReciproCAM(loaded.model).explain(
        torch.from_numpy((volume - 0.5) / 0.25)[None, None]
    )
    saved = np.load(tmp_path / "grey_reciprocam.npy")
    assert saved.shape == (16, 32, 32)
    np.testing.assert_allclose(saved, explanation.maps[0].numpy(), atol=1e-6)
    assert out.startswith(f"grey.npy: {loaded.categories[int(explanation.predictions[0])]}")
    with Image.open(tmp_path / "grey_reciprocam.png") as picture:
        assert picture.size == (4 * 128, 4 * 128)  # 16 slices, four a row, 128 pixels a side
    # The same volume as NIfTI: the same map, under the next free name.
    np.testing.assert_array_equal(np.load(tmp_path / "grey_reciprocam-2.npy"), saved)
    assert (tmp_path / "grey_reciprocam-2.png").is_file()
    assert "explained 2 files with reciprocam on layer 'layer3'" in out


def test_a_shapes_volume_on_the_shipped_model_is_normalised_as_in_training(tmp_path, capsys):
    # A ball, bright on dark: a volume in [0, 1] as the Shapes volumes are.
    volume = ((np.indices((32, 32, 32)) - 15.5) ** 2).sum(0) < 8**2
    volume = volume.astype(np.float32) * 0.9 + 0.05
    np.save(tmp_path / "shape.npy", volume)
    code, out, err = run(
        capsys, "explain", tmp_path / "shape.npy", "--model", "shapes_volume", "--device", "cpu",
        "--output", tmp_path / "out",
    )  # fmt: skip
    assert code == 0, err
    assert err == ""  # trained weights: no note
    explanation = ReciproCAM(shapes_volume_model()).explain(volume_to_tensor(volume)[None])
    saved = np.load(tmp_path / "out/shape_reciprocam.npy")
    np.testing.assert_allclose(saved, explanation.maps[0].numpy(), atol=1e-6)
    assert out.startswith("shape.npy: ball ")  # the trained model knows a ball


def test_a_three_channel_volume_on_a_video_model(files, tmp_path, capsys):
    torch.manual_seed(2)
    code, _, err = run(
        capsys, "explain", files / "rgb.npy", "--model", "r3d_18", "--device", "cpu",
        "--output", tmp_path,
    )  # fmt: skip
    assert code == 0, err
    torch.manual_seed(2)
    loaded = load_video_model("r3d_18")
    volume = torch.from_numpy(np.load(files / "rgb.npy"))
    mean = torch.tensor(loaded.preprocessing.mean).view(3, 1, 1, 1)
    std = torch.tensor(loaded.preprocessing.std).view(3, 1, 1, 1)
    explanation = ReciproCAM(loaded.model).explain(((volume - mean) / std)[None])
    saved = np.load(tmp_path / "rgb_reciprocam.npy")
    np.testing.assert_allclose(saved, explanation.maps[0].numpy(), atol=1e-6)


def test_the_clip_lengths_are_those_of_the_weights_documentation():
    names = torchvision.models.list_models(module=torchvision.models.video)
    assert sorted(CLIP_LENGTHS) == sorted(names)
    for name in names:
        docs = torchvision.models.get_model_weights(name).DEFAULT.meta["_docs"]
        assert f"clip_len={CLIP_LENGTHS[name]}" in docs, name
        minimum = torchvision.models.get_model_weights(name).DEFAULT.meta.get("min_temporal_size")
        assert CLIP_LENGTHS[name] >= (minimum or 1)


SHAPES_VOLUME = ("--model", "shapes_volume", "--checkpoint", "{files}/volume.pt")
R3D = ("--model", "r3d_18")


@pytest.mark.parametrize(
    ("inputs", "options", "message"),
    [
        (
            ["notes.mp4"],
            R3D,
            "{files}/notes.mp4: not a readable video (Invalid data found when processing input)",
        ),
        (["short.mkv"], R3D, "{files}/short.mkv has 5 frames; r3d_18 needs at least 16"),
        (
            ["flat.npy"],
            SHAPES_VOLUME,
            "{files}/flat.npy: a volume of shape (32, 32); give one of shape (D, H, W), or"
            " (C, D, H, W) with channels",
        ),
        (
            ["rgb.npy"],
            SHAPES_VOLUME,
            "{files}/rgb.npy: a volume of shape (3, 16, 32, 32) has 3 channels; shapes_volume"
            " takes 1-channel volumes, (D, H, W)",
        ),
        (
            ["grey.npy"],
            R3D,
            "{files}/grey.npy: a volume of shape (16, 32, 32) has 1 channel; r3d_18 takes"
            " 3-channel volumes, (3, D, H, W)",
        ),
        (
            ["walk.mkv"],
            SHAPES_VOLUME,
            "{files}/walk.mkv: shapes_volume takes 1-channel volumes (.npy, .nii), not videos;"
            " explain a video with a video model (e.g. --model r3d_18)",
        ),
        (
            ["photo.png", "walk.mkv"],
            R3D,
            "explain photos, or videos and volumes, in one run, not both ({files}/photo.png is"
            " a photo or folder, {files}/walk.mkv a video or volume)",
        ),
        (
            ["walk.mkv"],
            (*R3D, "--task", "detection"),
            "--task detection does not apply to videos and volumes",
        ),
        (["walk.mkv"], (*R3D, "--image-size", "64"), "--image-size does not apply to videos"),
        (["walk.mkv"], (), "explaining a video or volume needs a --model: one of r3d_18,"),
        (["photo.png"], ("--animation", "mp4"), "--animation applies to videos"),
        (["walk.mkv"], ("--model", "resnet50"), "unknown video model 'resnet50'"),
        (["photo.png"], R3D, "r3d_18 is a video model: explain a video or volume file with it"),
    ],
)
def test_each_mistake_is_one_line_and_writes_nothing(
    files, tmp_path, capsys, inputs, options, message
):
    output = tmp_path / "out"
    code, out, err = run(
        capsys,
        "explain",
        *(files / name for name in inputs),
        *(option.format(files=files) for option in options),
        "--device",
        "cpu",
        "--output",
        output,
    )
    assert code == 1
    assert out == ""
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("reciprocam: error: " + message.format(files=files))
    assert not output.exists()


def test_an_unknown_animation_format_is_a_usage_error(files, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["explain", str(files / "walk.mkv"), *R3D, "--animation", "avi"])
    assert exited.value.code == 2
    assert "invalid choice: 'avi'" in capsys.readouterr().err
