"""The `reciprocam explain` command: files written, values, messages and exit codes."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision
from helpers import build
from PIL import Image

from reciprocam import ReciproCAM, ViTReciproCAM, explainer
from reciprocam.cli import main
from reciprocam.images import load_image
from reciprocam.targets import Region
from reciprocam.zoo import load_model


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Three small random photos of different sizes, a checkpoint, and a folder of outputs."""
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for name, size in (
        ("first.jpg", (120, 90)),
        ("second.png", (90, 130)),
        ("third.jpg", (100, 100)),
    ):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
            folder / name
        )
    torch.save(build("resnet18").state_dict(), folder / "resnet18.pt")
    return folder


def run(capsys, *arguments):
    code = main([str(a) for a in arguments])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def model_args(photos):
    return ["--model", "resnet18", "--checkpoint", photos / "resnet18.pt", "--device", "cpu"]


def test_explain_writes_an_overlay_and_the_map_of_each_image(photos, tmp_path, capsys):
    code, out, err = run(
        capsys,
        "explain",
        photos / "first.jpg",
        photos / "second.png",
        "--image-path",
        photos / "third.jpg",
        "--output",
        tmp_path,
        *model_args(photos),
    )
    assert code == 0, err
    assert "explained 3 of 3 images with reciprocam on layer 'layer4'" in out
    loaded = load_model("resnet18", checkpoint=photos / "resnet18.pt")
    cam = ReciproCAM(loaded.model)
    for name in ("first", "second", "third"):
        saved = np.load(tmp_path / f"{name}_reciprocam.npy")
        source = next(photos.glob(f"{name}.*"))
        tensor, _ = loaded.preprocessing(load_image(source))
        explanation = cam.explain(tensor[None])
        assert saved.shape == (224, 224)
        assert saved.dtype == np.float32
        np.testing.assert_allclose(saved, explanation.maps[0].numpy(), atol=1e-6)
        top = explanation.probabilities[0].topk(5)
        names = [loaded.categories[i] for i in top.indices]
        line = next(line for line in out.splitlines() if line.startswith(source.name))
        assert line.startswith(f"{source.name}: {names[0]} {top.values[0]:.1%}, {names[1]}")
        assert f"map of '{names[0]}'" in line
        with Image.open(tmp_path / f"{name}_reciprocam.png") as overlay:
            assert overlay.format == "PNG"
            assert overlay.mode == "RGB"
            # the centre crop (224/256 of the shorter side), at the photo's resolution
            side = min(Image.open(source).size) * 224 / 256
            assert abs(overlay.width - side) <= 1
            assert abs(overlay.height - side) <= 1


def test_a_folder_and_a_class_by_name(photos, tmp_path, capsys):
    code, out, _ = run(
        capsys, "explain", photos, "--class", "Tabby", "--output", tmp_path, *model_args(photos)
    )
    assert code == 0
    assert out.count("map of 'tabby'") == 3
    assert sorted(p.name for p in tmp_path.glob("*.npy")) == [
        "first_reciprocam.npy",
        "second_reciprocam.npy",
        "third_reciprocam.npy",
    ]


def test_a_bad_file_is_skipped_and_the_others_are_written(photos, tmp_path, capsys):
    broken = tmp_path / "inputs"
    broken.mkdir()
    (broken / "notes.jpg").write_text("not a photo")
    code, out, err = run(
        capsys,
        "explain",
        photos / "first.jpg",
        broken / "notes.jpg",
        photos / "third.jpg",
        "--output",
        tmp_path / "out",
        *model_args(photos),
    )
    assert code == 1
    assert "skipped " in err
    assert "notes.jpg: not an image file" in err
    assert "explained 2 of 3 images" in out
    assert "1 skipped" in out
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == [
        "first_reciprocam.png",
        "third_reciprocam.png",
    ]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["explain", "{photos}/first.jpg", "--model", "resnet19"],
            r"unknown model 'resnet19'; did you mean resnet18",
        ),
        (
            ["explain", "{photos}/first.jpg", "--model", "resnet18", "--target-layer", "layer5"],
            r"no layer named 'layer5'; did you mean 'layer4'",
        ),
        (
            ["explain", "{photos}/first.jpg", "--model", "resnet18", "--target-layer", "fc"],
            r"layer 'fc' outputs a tensor of shape \(1, 1000\)",
        ),
        (
            ["explain", "{photos}/first.jpg", "--model", "resnet18", "--class", "1000"],
            r"class 1000 is out of range: the model has 1000 classes",
        ),
        (
            ["explain", "{photos}/first.jpg", "--model", "resnet18", "--class", "tabbby"],
            r"no class named 'tabbby'; did you mean 'tabby'",
        ),
        (
            ["explain", "{photos}/first.jpg", "--model", "resnet18", "--checkpoint", "none.pt"],
            r"none.pt: no such checkpoint file",
        ),
        (
            ["explain", "{photos}/first.jpg", "--model", "resnet18", "--weights", "IMAGENET9"],
            r"resnet18 has no weights 'IMAGENET9'; choose one of DEFAULT, IMAGENET1K_V1",
        ),
        (
            ["explain", "{photos}/first.jpg", "--model", "resnet18", "--device", "tpu"],
            r"unknown device 'tpu'|unsupported device 'tpu'",
        ),
    ],
)
def test_user_mistakes_give_one_line_and_exit_code_1(photos, tmp_path, capsys, arguments, message):
    arguments = [a.format(photos=photos) for a in arguments] + ["--output", str(tmp_path)]
    code, _, err = run(capsys, *arguments)
    assert code == 1
    lines = err.strip().splitlines()
    assert lines[-1].startswith("reciprocam: error: ")
    assert re.search(message, lines[-1]), lines[-1]
    assert "Traceback" not in err
    assert not list(tmp_path.glob("*.png"))


def test_cuda_device(photos, tmp_path, capsys):
    code, out, err = run(
        capsys,
        "explain",
        photos / "first.jpg",
        "--use-cuda",
        "--output",
        tmp_path,
        *model_args(photos)[:4],
    )
    if torch.cuda.is_available():
        assert code == 0
        assert "explained 1 of 1 images" in out
    else:
        assert code == 1
        assert (
            err.strip()
            == "reciprocam: error: CUDA is not available on this machine; use --device cpu"
        )


def test_random_weights_are_announced(photos, tmp_path, capsys):
    code, _, err = run(
        capsys, "explain", photos / "first.jpg", "--model", "resnet18", "--output", tmp_path
    )
    assert code == 0
    assert "note: resnet18 has random weights; pass --weights DEFAULT" in err


def test_usage_errors_exit_with_2(capsys):
    assert run(capsys, "explain")[0] == 2
    with pytest.raises(SystemExit) as raised:
        main(["explain", "x.jpg", "--method", "nomethod"])
    assert raised.value.code == 2
    assert (
        "argument --method: unknown method 'nomethod'; choose one of reciprocam, vit-reciprocam,"
        in capsys.readouterr().err
    )
    with pytest.raises(SystemExit) as raised:
        main(["explain", "x.jpg", "--batch-size", "0"])
    assert raised.value.code == 2


def test_an_unknown_colormap_is_one_line_before_any_work(capsys):
    # Checked by the run, not the parser, so that parsing needs no matplotlib: exit code 1.
    code, _, err = run(capsys, "explain", "x.jpg", "--colormap", "jett")
    assert code == 1
    assert err == "reciprocam: error: unknown matplotlib colormap 'jett'\n"


def test_method_names_are_case_insensitive(photos, tmp_path, capsys):
    code, _, _ = run(
        capsys,
        "explain",
        photos / "third.jpg",
        "--method",
        "ReciproCAM",
        "--output",
        tmp_path,
        *model_args(photos),
    )
    assert code == 0
    assert (tmp_path / "third_reciprocam.png").is_file()


def test_python_dash_m_and_help_list_every_option():
    result = subprocess.run(
        [sys.executable, "-m", "reciprocam", "explain", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    for option in (
        "--image-path",
        "--model",
        "--weights",
        "--checkpoint",
        "--method",
        "--target-layer",
        "--class",
        "--output",
        "--device",
        "--use-cuda",
        "--score",
        "--mask",
        "--batch-size",
        "--top",
        "--colormap",
        "--alpha",
        "--no-progress",
    ):
        assert option in result.stdout
    top = subprocess.run(
        [sys.executable, "-m", "reciprocam", "--help"], capture_output=True, text=True, check=False
    )
    assert top.returncode == 0
    assert "explain" in top.stdout
    assert "demo" in top.stdout


def test_a_folder_without_images(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no photos here")
    code, _, err = run(capsys, "explain", tmp_path / "empty", "--model", "resnet18")
    assert code == 1
    assert err.strip().startswith("reciprocam: error: ")
    assert "empty: the folder holds no images (.bmp, .gif, .jpeg, .jpg" in err


@pytest.fixture(scope="module")
def tiny_timm_checkpoint(tmp_path_factory):
    """A 10-class DeiT-Tiny state_dict (random weights), and what it predicts."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_patch16_224", num_classes=10).eval()
    torch.nn.init.normal_(model.head.weight, std=0.5)
    path = tmp_path_factory.mktemp("timm") / "deit.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.mark.parametrize("method", ["reciprocam", "vit-reciprocam", "ViT_ReciproCAM"])
def test_a_transformer_is_explained_with_vit_reciprocam(
    photos, tmp_path, capsys, tiny_timm_checkpoint, method
):
    code, out, err = run(
        capsys, "explain", photos / "first.jpg", "--model", "timm:deit_tiny_patch16_224",
        "--checkpoint", tiny_timm_checkpoint, "--method", method, "--output", tmp_path,
    )  # fmt: skip
    assert code == 0, err
    assert "on layer 'blocks.11.norm1'" in out
    loaded = load_model("timm:deit_tiny_patch16_224", checkpoint=tiny_timm_checkpoint)
    tensor, _ = loaded.preprocessing(load_image(photos / "first.jpg"))
    expected = ViTReciproCAM(loaded.model).explain(tensor[None])
    stem = f"first_{'reciprocam' if method == 'reciprocam' else 'vit-reciprocam'}"
    saved = np.load(tmp_path / f"{stem}.npy")
    np.testing.assert_allclose(saved, expected.maps[0].numpy(), atol=1e-6)
    assert f"map of 'class {int(expected.targets[0])}'" in out


def test_mask_names_mean_the_same_on_both_methods(photos, tmp_path, capsys, tiny_timm_checkpoint):
    for mask in ("pixel", "token"):
        code, _, _ = run(
            capsys, "explain", photos / "third.jpg", "--model", "timm:deit_tiny_patch16_224",
            "--checkpoint", tiny_timm_checkpoint, "--mask", mask, "--output", tmp_path / mask,
        )  # fmt: skip
        assert code == 0
    np.testing.assert_array_equal(
        np.load(tmp_path / "pixel" / "third_reciprocam.npy"),
        np.load(tmp_path / "token" / "third_reciprocam.npy"),
    )


def test_vit_reciprocam_on_a_cnn_says_what_is_supported(photos, tmp_path, capsys):
    code, _, err = run(
        capsys, "explain", photos / "first.jpg", *model_args(photos), "--method", "vit-reciprocam",
        "--output", tmp_path,
    )  # fmt: skip
    assert code == 1
    assert err.strip().startswith(
        "reciprocam: error: ResNet is not a supported vision transformer; ViT-ReciproCAM supports"
    )


@pytest.mark.parametrize("method", ["gradcam", "Grad-CAM++", "eigencam", "guided-gradcam"])
def test_baseline_methods_from_the_command_line(photos, tmp_path, capsys, method):
    code, out, err = run(
        capsys, "explain", photos / "third.jpg", "--method", method, "--output", tmp_path,
        *model_args(photos),
    )  # fmt: skip
    assert code == 0, err
    name = reciprocam_name(method)
    saved = np.load(tmp_path / f"third_{name}.npy")
    loaded = load_model("resnet18", checkpoint=photos / "resnet18.pt")
    tensor, _ = loaded.preprocessing(load_image(photos / "third.jpg"))
    expected = explainer(method, loaded.model)(tensor[None])[0]
    np.testing.assert_allclose(saved, expected.numpy(), atol=1e-5)
    assert f"with {name}" in out


def reciprocam_name(method):
    from reciprocam.registry import canonical_name

    return canonical_name(method)


def test_options_that_do_not_apply_to_a_method(photos, tmp_path, capsys):
    code, _, err = run(
        capsys, "explain", photos / "third.jpg", "--method", "gradcam", "--score", "logit",
        "--output", tmp_path, *model_args(photos),
    )  # fmt: skip
    assert code == 1
    assert err.strip() == "reciprocam: error: --score does not apply to gradcam"


def test_several_classes_and_the_top_k_give_a_map_each(photos, tmp_path, capsys):
    loaded = load_model("resnet18", checkpoint=photos / "resnet18.pt")
    tensor, _ = loaded.preprocessing(load_image(photos / "first.jpg"))
    cam = ReciproCAM(loaded.model)
    code, out, err = run(
        capsys, "explain", photos / "first.jpg", "--class", "281,Egyptian cat", "--output",
        tmp_path / "classes", *model_args(photos),
    )  # fmt: skip
    assert code == 0, err
    both = cam.explain(tensor[None], [[281, 285]]).maps[0]
    for t, index in enumerate((281, 285)):
        saved = np.load(tmp_path / "classes" / f"first_reciprocam_{index}.npy")
        np.testing.assert_allclose(saved, both[t].numpy(), atol=1e-6)
    assert "map of 'tabby'" in out
    assert "map of 'Egyptian cat'" in out
    code, out, err = run(
        capsys, "explain", photos / "first.jpg", "--top", "2", "--output", tmp_path / "top",
        *model_args(photos),
    )  # fmt: skip
    assert code == 0, err
    top = loaded.model(tensor[None]).topk(2).indices[0].tolist()
    assert sorted(p.name for p in (tmp_path / "top").glob("*.npy")) == sorted(
        f"first_reciprocam_{index}.npy" for index in top
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--class", "1", "--top", "2"], "--class and --top both choose the classes to explain"),
        (["--region", "predicted"], "--region applies to --task segmentation"),
        (["--class", "1,,2"], "'1,,2' has an empty class"),
        (["--class", "1,1000"], "class 1000 is out of range: the model has 1000 classes"),
        (["--task", "segmentation"], "--task segmentation explains the region of a class"),
        (["--task", "segmentation", "--class", "1"], "a Region reads a segmentation output"),
    ],
)
def test_target_option_mistakes(photos, tmp_path, capsys, arguments, message):
    code, _out, err = run(
        capsys, "explain", photos / "first.jpg", *arguments, "--output", tmp_path,
        *model_args(photos),
    )  # fmt: skip
    assert code == 1
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_segmentation_from_the_command_line(photos, tmp_path, capsys):
    """A torchvision segmenter by name: the predicted region and a mask file, outlined."""
    torch.manual_seed(0)
    model = torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None
    )
    torch.save(model.state_dict(), tmp_path / "lraspp.pt")
    loaded = load_model("lraspp_mobilenet_v3_large", checkpoint=tmp_path / "lraspp.pt")
    preprocessing = loaded.preprocessing.at_size(64)
    tensor, _ = preprocessing(load_image(photos / "third.jpg"))
    with torch.no_grad():
        predicted = loaded.model(tensor[None])["out"].argmax(dim=1)
    cls = int(predicted.flatten().mode().values)
    common = [
        "explain", photos / "third.jpg", "--model", "lraspp_mobilenet_v3_large", "--checkpoint",
        tmp_path / "lraspp.pt", "--task", "segmentation", "--class", cls, "--image-size", 64,
        "--device", "cpu",
    ]  # fmt: skip
    code, _, err = run(capsys, *common, "--output", tmp_path / "predicted")
    assert code == 0, err
    cam = ReciproCAM(loaded.model)
    expected = cam.explain(tensor[None], Region(cls)).maps[0]
    np.testing.assert_allclose(
        np.load(tmp_path / "predicted" / "third_reciprocam.npy"), expected.numpy(), atol=1e-6
    )
    mask = np.zeros((100, 100), dtype=np.uint8)
    mask[20:60, 30:90] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    code, _out, err = run(
        capsys, *common, "--region", tmp_path / "mask.png", "--output", tmp_path / "mask"
    )
    assert code == 0, err
    region = preprocessing.crop_mask(Image.fromarray(mask))
    assert region.shape == (64, 64)
    assert 0 < int(region.sum()) < 64 * 64
    expected = cam.explain(tensor[None], Region(cls, region=region)).maps[0]
    np.testing.assert_allclose(
        np.load(tmp_path / "mask" / "third_reciprocam.npy"), expected.numpy(), atol=1e-6
    )
    with Image.open(tmp_path / "mask" / "third_reciprocam.png") as picture:
        pixels = np.asarray(picture)
    white = (pixels == 255).all(axis=2)
    # The outline: white pixels along the mask's border, none far inside or outside it.
    scale = pixels.shape[0] / 64
    rows, columns = np.nonzero(white)
    inside = region.numpy()[(rows / scale).astype(int), (columns / scale).astype(int)]
    assert white.sum() > 50
    assert inside.mean() > 0.9
