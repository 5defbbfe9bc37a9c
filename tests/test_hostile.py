"""What a hostile new user tries (`../shared/reference/hostile-probe.md`), as classes of fault.

Each test names the probe's findings it generalises: a wrong result must not look like a
result, and a user's mistake must give one line that says what to do.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat

import numpy as np
import onnx
import pytest
import torch
from helpers import build, error_message, seeded
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle import explicit_scores, resnet_backbone
from PIL import Image
from torch import nn
from torchvision.models import VisionTransformer

import reciprocam
from reciprocam import (
    ImageError,
    InputError,
    LayerError,
    ModelError,
    OptionError,
    ReciproCAM,
    ReciproCAMError,
    ViTReciproCAM,
    export_onnx,
)
from reciprocam._model import class_probabilities
from reciprocam.cli import main
from reciprocam.evaluation.dataset import read_dataset
from reciprocam.images import find_images, load_image
from reciprocam.metrics import AverageDrop
from reciprocam.onnx import OnnxExplainer
from reciprocam.visualize import crop_to_box, overlay
from reciprocam.zoo import Preprocessing, load_model


@pytest.fixture(scope="module")
def binary() -> nn.Module:
    """A one-logit binary classifier, (B, 1) logits."""
    return build("resnet18", num_classes=1)


def test_a_one_logit_head_is_explained_through_its_sigmoid(binary):
    """W2: a softmax over one class is 1 for every copy, an all-zero map."""
    x = seeded((2, 3, 96, 96), seed=3)
    explanation = ReciproCAM(binary).explain(x)
    logits = explicit_scores(
        resnet_backbone(binary, x), lambda f: binary.fc(f.mean(dim=(2, 3))), score="logit"
    )
    torch.testing.assert_close(explanation.scores, logits.sigmoid(), rtol=0, atol=1e-6)
    assert float(explanation.maps.amax()) == pytest.approx(1.0)
    with torch.no_grad():
        assert torch.equal(explanation.probabilities, binary(x).sigmoid())
    # softmax([0, z])[1] = sigmoid(z): the two-class softmax the one logit stands for.
    z = torch.tensor([[-2.0], [0.5]])
    two_class = torch.cat([torch.zeros_like(z), z], dim=1).softmax(dim=1)[:, 1:]
    torch.testing.assert_close(class_probabilities(z), two_class)
    # The metrics read the same probability (a softmax would make every drop 0).
    drops = AverageDrop(binary).update(x, explanation.maps, explanation.targets)
    with torch.no_grad():
        y, o = binary(x)[:, 0].sigmoid(), binary(x * explanation.maps[:, None])[:, 0].sigmoid()
    torch.testing.assert_close(drops.float(), (y - o).clamp_min(0) / y)
    assert float(drops.amax()) > 0


def test_a_replaced_head_is_checked_again_for_the_shortcut(resnet18):
    """W10: the GAP shortcut found on the first call is not kept for another head."""
    model = build("resnet18")
    x = seeded((2, 3, 64, 64), seed=4)
    cam = ReciproCAM(model)
    cam(x)
    assert cam.uses_gap_shortcut
    model.avgpool = nn.AdaptiveMaxPool2d(1)
    kept = cam.explain(x).scores
    assert not cam.uses_gap_shortcut
    torch.testing.assert_close(kept, ReciproCAM(model).explain(x).scores, rtol=0, atol=0)
    # A setting of a kept module counts too (a 2x2 pool is no global average).
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    cam(x)
    model.avgpool.output_size = 2
    model.fc = nn.Linear(2048, 1000)
    torch.testing.assert_close(
        cam.explain(x).scores, ReciproCAM(model).explain(x).scores, rtol=0, atol=0
    )


def test_a_reassigned_model_is_explained_as_itself(resnet18):
    """C10: `explainer.model = other` explains the other model."""
    cam = reciprocam.explainer("reciprocam", resnet18)
    x = seeded((1, 3, 64, 64), seed=5)
    cam(x)
    other = build("resnet50")
    cam.model = other
    torch.testing.assert_close(cam.explain(x).scores, ReciproCAM(other).explain(x).scores)


CNN_METHODS = [name for name in reciprocam.methods() if name != "vit-reciprocam"]


def _small_options(name: str) -> dict[str, object]:
    """Options that keep the slow methods quick; the same for both runs compared."""
    return {"rise": {"masks": 64, "seed": 0}, "smooth-gradcam++": {"seed": 0}}.get(name, {})


@pytest.mark.parametrize("name", CNN_METHODS)
def test_every_method_gives_the_same_maps_under_the_callers_no_grad_modes(resnet18, name):
    """C5: gradient methods inside `torch.inference_mode()` (a serving pattern) and no_grad."""
    x = seeded((1, 3, 64, 64), seed=6)
    want = reciprocam.explainer(name, resnet18, **_small_options(name)).explain(x).maps
    for mode in (torch.inference_mode, torch.no_grad):
        with mode():
            got = reciprocam.explainer(name, resnet18, **_small_options(name)).explain(x).maps
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert all(p.grad is None for p in resnet18.parameters())


@pytest.mark.parametrize("name", ["gradcam", "fullgrad", "guided-backprop", "reciprocam"])
def test_a_compiled_model_is_explained_as_its_eager_self(name):
    """C6, U4: torch.compile(m) and m.compile(); hooks see every layer, names get a hint."""
    model = build("resnet18")
    x = seeded((1, 3, 64, 64), seed=7)
    want = reciprocam.explainer(name, model).explain(x).maps
    for compiled in (torch.compile(model), build("resnet18")):
        if (
            isinstance(compiled, nn.Module)
            and compiled is not model
            and not hasattr(compiled, "_orig_mod")
        ):
            compiled.compile()
        torch.testing.assert_close(reciprocam.explainer(name, compiled)(x), want)
    message = error_message(LayerError, ReciproCAM(torch.compile(model), "layer4"), x)
    assert message.endswith("did you mean '_orig_mod.layer4'?")


@pytest.mark.parametrize("convert", ["script", "trace"])
def test_torchscript_is_refused_with_what_to_do(resnet18, convert):
    """C7, U2: hooks do not run in TorchScript; the message says so for every method."""
    x = seeded((1, 3, 64, 64), seed=8)
    scripted = torch.jit.script(resnet18) if convert == "script" else torch.jit.trace(resnet18, x)
    for name in ("reciprocam", "gradcam"):
        message = error_message(ModelError, reciprocam.explainer, name, scripted)
        assert "TorchScript" in message
        assert "explain the original nn.Module" in message
    cam = ReciproCAM(resnet18)
    with pytest.raises(ModelError, match="TorchScript"):
        cam.model = scripted


class TwoHeads(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.body(x)
        return logits, logits.sigmoid()


def test_models_the_method_cannot_read_get_a_line_that_says_what_to_do(resnet18):
    """C8, U8: a wrong channel count and a two-head model."""
    grey = seeded((2, 1, 64, 64), seed=9)
    for name in ("reciprocam", "gradcam", "rise"):
        message = error_message(InputError, reciprocam.explainer(name, resnet18), grey)
        assert "input of shape (1, 1, 64, 64)" in message
        assert "expected input[1, 1, 64, 64] to have 3 channels" in message
    # A tuple's first element is explained (the rule of `explained_output`); output= the other.
    x = seeded((1, 3, 64, 64))
    first = ReciproCAM(TwoHeads(resnet18)).explain(x)
    torch.testing.assert_close(first.maps, ReciproCAM(resnet18)(x))
    second = ReciproCAM(TwoHeads(resnet18), output=1, score="logit").explain(x, 3)
    wrapped = nn.Sequential(resnet18, nn.Sigmoid())
    torch.testing.assert_close(second.maps, ReciproCAM(wrapped, score="logit")(x, 3))


@pytest.fixture(scope="module")
def hostile_photos(tmp_path_factory):
    """Photos a real folder holds: a normal one, a 1-pixel line, a thin strip, a 1x1 dot, a
    32-bit TIFF above 16 bits, and a resnet18 checkpoint."""
    folder = tmp_path_factory.mktemp("hostile")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(folder / "cat.jpg")
    Image.fromarray(rng.integers(0, 255, (1, 3000, 3), dtype=np.uint8)).save(folder / "line.png")
    Image.fromarray(rng.integers(0, 255, (10, 600, 3), dtype=np.uint8)).save(folder / "strip.png")
    Image.fromarray(np.full((1, 1, 3), 128, dtype=np.uint8)).save(folder / "dot.png")
    grey = rng.integers(0, 255, (64, 64)).astype(np.int32)
    Image.fromarray(grey * 1000, mode="I").save(folder / "deep.tiff")
    Image.fromarray(grey.astype(np.uint8), mode="L").save(folder / "shallow.png")
    torch.save(build("resnet18", num_classes=10).state_dict(), folder / "model.pt")
    return folder


def cli(capsys, *arguments):
    """The exit code, stdout and stderr of `reciprocam ARGUMENTS` (usage errors included)."""
    try:
        code = main([str(a) for a in arguments])
    except SystemExit as exit:  # argparse's usage errors
        code = exit.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _model(folder):
    return ["--model", "resnet18", "--checkpoint", folder / "model.pt", "--no-progress"]


def test_explain_skips_what_it_cannot_read_and_writes_the_others(hostile_photos, tmp_path, capsys):
    """C1, C2, U1: a 1-pixel line, a missing path; the dot and the strip are explained."""
    folder = hostile_photos
    code, out, err = cli(
        capsys, "explain", folder / "cat.jpg", folder / "line.png", tmp_path / "nothere.jpg",
        folder / "strip.png", folder / "dot.png", "--output", tmp_path / "out", *_model(folder),
    )  # fmt: skip
    assert code == 1
    assert "Traceback" not in err
    assert "line.png: 3000x1 pixels is thinner than the limit of 100:1" in err
    assert "nothere.jpg: no such file" in err
    assert "explained 3 of 5 images" in out
    written = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert written == ["cat_reciprocam.png", "dot_reciprocam.png", "strip_reciprocam.png"]
    assert np.load(tmp_path / "out" / "strip_reciprocam.npy").shape == (224, 224)


def test_a_32_bit_image_is_scaled_not_saturated(hostile_photos):
    """W13: grey x 1000 in a 32-bit TIFF reads as the same grey."""
    deep = np.asarray(load_image(hostile_photos / "deep.tiff"))
    shallow = np.asarray(load_image(hostile_photos / "shallow.png"))
    assert np.abs(deep.astype(int) - shallow.astype(int)).max() <= 1


@pytest.mark.parametrize("umask", [0o022, 0o007])
def test_every_file_written_has_the_umask_s_mode(hostile_photos, tmp_path, capsys, umask):
    """W12: overlays, maps, reports and exports, not 0600; an existing file keeps its mode."""
    previous = os.umask(umask)
    try:
        output = tmp_path / "out"
        code, _, err = cli(
            capsys, "explain", hostile_photos / "cat.jpg", "--output", output,
            *_model(hostile_photos),
        )  # fmt: skip
        assert code == 0, err
        (output / "cat_reciprocam.npy").chmod(0o600)
        code, _, err = cli(
            capsys, "explain", hostile_photos / "cat.jpg", "--output", output,
            *_model(hostile_photos),
        )  # fmt: skip
        assert code == 0, err
        export = export_onnx(build("resnet18"), tmp_path / "m.onnx", input_shape=(1, 3, 64, 64))
    finally:
        os.umask(previous)
    expected = 0o666 & ~umask
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [*output.iterdir(), export]}
    assert modes.pop("cat_reciprocam.npy") == 0o600
    assert modes == dict.fromkeys(modes, expected)
    assert "cat_reciprocam.png" in modes


def test_outputs_inside_the_input_folder_are_never_read_back(hostile_photos, tmp_path, capsys):
    """W7: a second run over the folder, into the folder or a subfolder, reads only the photos."""
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(hostile_photos / "cat.jpg", photos)
    for output in (photos / "out", photos, photos / "out" / "again"):
        code, out, err = cli(capsys, "explain", photos, "--output", output, *_model(hostile_photos))
        assert code == 0, err
        assert "explained 1 of 1 images" in out
    assert (photos / "cat_reciprocam.png").exists()
    assert find_images([photos]) == [photos / "cat.jpg"]


@pytest.fixture(scope="module")
def exported_resnet(tmp_path_factory):
    model = build("resnet18", num_classes=10)
    path = export_onnx(
        model, tmp_path_factory.mktemp("onnx") / "r18.onnx", input_shape=(1, 3, 64, 64)
    )
    return model, OnnxExplainer(path)


BAD_INPUTS = {
    "nan": lambda: torch.full((1, 3, 64, 64), float("nan")),
    "inf": lambda: torch.full((1, 3, 64, 64), float("inf")),
    "empty batch": lambda: torch.zeros(0, 3, 64, 64),
    "integer": lambda: torch.zeros(1, 3, 64, 64, dtype=torch.long),
    "no batch axis": lambda: torch.zeros(3, 64, 64),
    "five axes": lambda: torch.zeros(1, 1, 3, 64, 64),
    "one channel": lambda: torch.zeros(1, 1, 64, 64),
    "a list": lambda: [[0.0]],
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_the_onnx_and_pytorch_explainers_refuse_the_same_inputs(exported_resnet, case):
    """W11: NaN maps from ONNX where PyTorch refused; an empty batch 'explained'."""
    model, onnx_explainer = exported_resnet
    x = BAD_INPUTS[case]()
    error_message(InputError, ReciproCAM(model).explain, x)
    error_message(InputError, onnx_explainer.explain, x)


def test_export_refuses_an_opset_it_cannot_write(tmp_path, capsys):
    """W8: --opset 5 wrote opset 18 and reported success."""
    for opset in (5, 17, 10_000):
        message = error_message(
            OptionError, export_onnx, build("resnet18"), tmp_path / "m.onnx", opset=opset
        )
        assert message.startswith("opset must be from 18")
    assert not (tmp_path / "m.onnx").exists()
    code, _, err = cli(capsys, "export", "--model", "resnet18", "--output", tmp_path / "c.onnx",
                       "--opset", "5")  # fmt: skip
    assert code != 0
    assert "Traceback" not in err
    assert "opset must be from 18" in err.strip().splitlines()[-1]
    path = export_onnx(build("resnet18"), tmp_path / "m21.onnx", opset=21,
                       input_shape=(1, 3, 64, 64))  # fmt: skip
    assert [o.version for o in onnx.load(str(path)).opset_import if o.domain == ""] == [21]


def _evaluate(capsys, data, output, *extra):
    return cli(
        capsys, "evaluate", "--data", data, "--output", output, "--model", "resnet18",
        "--checkpoint", data.parent / "model.pt", "--image-size", 64, "--steps", 4,
        "--no-progress", *extra,
    )  # fmt: skip


@pytest.fixture
def small_dataset(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(1)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(data / name)
    torch.save(build("resnet18", num_classes=3).state_dict(), tmp_path / "model.pt")
    return data


def test_ground_truth_for_some_images_says_how_many_it_measured(small_dataset, capsys):
    """W14: boxes for one image of two, and one for an image that is not there."""
    boxes = small_dataset.parent / "boxes.json"
    boxes.write_text(json.dumps({"a.png": [[0, 0, 32, 32]], "nothere.png": [[0, 0, 8, 8]]}))
    output = small_dataset.parent / "out"
    code, _, err = _evaluate(
        capsys, small_dataset, output, "--metrics", "drop,pointing_game", "--boxes", boxes
    )
    assert code == 0, err
    assert "1 of the 2 images in" in err
    assert "such as 'nothere.png'" in err
    document = json.loads((output / "summary.json").read_text())
    measured = document["methods"]["reciprocam"]["images_measured"]
    assert measured == {"average_drop": 2, "pointing_game": 1}
    assert "Measured PG on 1 of 2 images" in (output / "summary.md").read_text()


def test_evaluate_with_no_readable_image_reports_it(small_dataset, capsys):
    """C4, U12: the only image is unreadable: NaN JSON crashed, and the file was not named."""
    for image in small_dataset.iterdir():
        image.write_bytes(b"not a picture")
    output = small_dataset.parent / "out"
    code, out, err = _evaluate(capsys, small_dataset, output, "--metrics", "drop")
    assert "Traceback" not in err
    assert "skipped a.png:" in err
    assert "evaluated 0 of 2 images" in out
    document = json.loads((output / "summary.json").read_text())
    assert document["methods"]["reciprocam"]["seconds_per_image"] is None
    assert code == 0


def _bad_commands(photos, tmp):
    """(arguments, the exit code, a fragment of the last line) for every subcommand."""
    (tmp / "a-file").write_text("not a folder")
    (tmp / "a-folder").mkdir(exist_ok=True)
    (tmp / "data").mkdir(exist_ok=True)
    shutil.copy(photos / "cat.jpg", tmp / "data")
    shutil.copy(photos / "model.pt", tmp / "model.pt")
    cat, model = photos / "cat.jpg", _model(photos)
    checkpoint = model[:4]  # without --no-progress, which export does not take
    evaluate = ["evaluate", "--data", tmp / "data", *model, "--image-size", 64]
    return [
        (["explain", cat, *model, "--image-size", 100000], 2, "must be at most 4096 pixels"),
        (["explain", cat, *model, "--image-size", 0], 2, "must be a positive integer"),
        (["explain", cat, *model, "--class", 1000], 1, "class 1000 is out of range"),
        (["explain", cat, *model, "--output", tmp / "a-file"], 1, "is a file, not a folder"),
        (["explain", cat, "--onnx", tmp / "a-folder"], 1, "is a folder; give the .onnx file"),
        (["explain", cat, *model, "--top", 0], 2, "must be a positive integer"),
        (["explain", cat, *model, "--target-layer", "layer9"], 1, "did you mean 'layer4'"),
        (["explain", cat, "--model", "resnet1"], 1, "unknown model 'resnet1'"),
        ([*evaluate, "--steps", 100000], 1, "more than the 4096 pixels"),
        ([*evaluate, "--tolerance", -3], 2, "must be 0 or more"),
        (["evaluate", "--data", tmp / "nothere", *model], 1, "nothere"),
        (["export", *checkpoint, "--opset", 5, "--output", tmp / "m.onnx"], 1, "opset must be"),
        (["export", *checkpoint, "--output", tmp / "a-folder"], 1, "is a folder; give a file"),
        (["insert", tmp / "none.onnx", tmp / "out.onnx"], 1, "none.onnx"),
        (["insert", tmp / "a-file", tmp / "a-file"], 1, "is the input file"),
        (["demo", "--output", tmp / "a-file"], 1, "it is a file, not a folder"),
    ]


def test_every_subcommand_refuses_bad_arguments_in_one_line(hostile_photos, tmp_path, capsys):
    """U10, U13, U14, C3, K9: every CLI path exits 0 with outputs or non-zero with one line."""
    for arguments, expected, fragment in _bad_commands(hostile_photos, tmp_path):
        output = [] if "--output" in arguments or arguments[0] == "insert" else [
            "--output", tmp_path / "out"
        ]  # fmt: skip
        code, _, err = cli(capsys, *arguments, *output)
        label = " ".join(str(a) for a in arguments)
        assert code == expected, (label, err)
        assert "Traceback" not in err, label
        last = err.strip().splitlines()[-1]
        assert last.startswith("reciprocam"), (label, last)
        assert fragment in last, (label, last)
        assert not list(tmp_path.rglob("*.png")), label
        assert not (tmp_path / "m.onnx").exists(), label
    assert (tmp_path / "a-file").read_text() == "not a folder"


def test_a_class_folder_named_by_a_number_beyond_the_classes_is_a_position(small_dataset, capsys):
    """U7: a folder '1005' for a 3-class model aborted evaluate without naming the folder."""
    for folder, name in (("1005", "a.png"), ("2", "b.png")):
        (small_dataset / folder).mkdir()
        (small_dataset / name).rename(small_dataset / folder / name)
    samples = read_dataset(small_dataset, ("cat", "dog", "cow"))
    assert [(s.key, s.label) for s in samples] == [("1005/a.png", 0), ("2/b.png", 2)]


def test_a_layer_name_with_no_close_match_lists_the_top_level_layers(resnet18):
    """U9: the message told CLI users to run Python."""
    message = error_message(LayerError, ReciproCAM(resnet18, "classifier"), seeded((1, 3, 64, 64)))
    assert message.endswith(
        "its top-level layers are conv1, bn1, relu, maxpool, layer1, layer2, layer3, layer4,"
        " avgpool, fc (dotted names reach inside them)"
    )


def test_timm_weights_offline_fail_at_once(monkeypatch):
    """U11: five Hugging Face retries (a minute) before the error."""
    import huggingface_hub

    def unreachable(*args, **kwargs):
        raise OSError("network is unreachable")

    def no_download(*args, **kwargs):
        raise AssertionError("no download may be tried")

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    message = error_message(ModelError, load_model, "timm:resnet18", weights="DEFAULT")
    assert "not in the Hugging Face cache and huggingface.co cannot be reached" in message


def test_cosmetic_faults_of_the_probe(tmp_path, resnet18):
    """K1: a 1-pixel-tall crop keeps a pixel; K4: float32 maps on a half-precision model from
    every method; K6: an empty file is called empty."""
    photo = Image.new("RGB", (90, 1))
    assert crop_to_box(photo, Preprocessing(resize=256, crop=224)(photo)[1]).size == (1, 1)
    half = build("resnet18").half()
    x = seeded((1, 3, 64, 64), seed=10).half()
    for name in ("reciprocam", "gradcam", "scorecam"):
        explanation = reciprocam.explainer(name, half).explain(x)
        assert explanation.maps.dtype == torch.float32, name
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert error_message(ImageError, load_image, tmp_path / "empty.jpg").endswith(
        "empty.jpg: the file is empty (0 bytes)"
    )


def _tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    ).eval()  # fmt: skip


TINY = _tiny_cnn()
SIDES = st.integers(1, 40)


@pytest.mark.parametrize("name", ["reciprocam", "gradcam", "ablationcam"])
@settings(max_examples=12, deadline=None, derandomize=True)
@given(sizes=st.lists(st.tuples(SIDES, SIDES), min_size=2, max_size=4))
def test_what_an_explainer_saw_before_does_not_change_its_maps(name, sizes):
    """W3, W4 as a property: one explainer over a sequence of input sizes gives each size the
    maps of a fresh explainer, or the same one-line refusal."""
    reused = reciprocam.explainer(name, TINY)
    for height, width in sizes:
        x = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(height))
        outcomes = []
        for cam in (reused, reciprocam.explainer(name, TINY)):
            try:
                outcomes.append(cam(x))
            except ReciproCAMError as error:
                outcomes.append(str(error))
        if isinstance(outcomes[0], str):
            assert outcomes[0] == outcomes[1]
            assert min(height, width) < 5  # a grid of one position at stride 4
        else:
            torch.testing.assert_close(outcomes[0], outcomes[1], rtol=0, atol=0)


MODES = {  # mode -> (a format that stores it, numpy dtype of its values, their range)
    "1": ("png", np.uint8, 2), "L": ("png", np.uint8, 256), "P": ("png", np.uint8, 256),
    "RGB": ("jpeg", np.uint8, 256), "RGBA": ("png", np.uint8, 256), "LA": ("png", np.uint8, 256),
    "I;16": ("tiff", np.uint16, 65536), "I": ("tiff", np.int32, 2**20),
    "F": ("tiff", np.float32, 1), "CMYK": ("jpeg", np.uint8, 256),
}  # fmt: skip


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    width=st.one_of(st.integers(1, 64), st.integers(1, 4000)),
    height=st.one_of(st.integers(1, 64), st.integers(1, 4000)),
    mode=st.sampled_from(sorted(MODES)),
)
def test_any_photo_is_read_drawn_and_written_or_refused_in_one_line(
    tmp_path_factory, width, height, mode
):
    """C1, C2, W13 as a property: any size, aspect ratio, mode and bit depth."""
    suffix, dtype, top = MODES[mode]
    rng = np.random.default_rng(width * 7919 + height)
    channels = {"RGB": 3, "RGBA": 4, "LA": 2, "CMYK": 4}.get(mode)
    shape = (height, width) if channels is None else (height, width, channels)
    values = (rng.random(shape) * top).astype(dtype)
    image = Image.fromarray(values.astype(np.uint8) if mode in ("1", "P", "LA", "CMYK") else values)
    if image.mode != mode:
        image = image.convert(mode)
    path = tmp_path_factory.mktemp("photo") / f"photo.{suffix}"
    image.save(path)
    try:
        photo = load_image(path)
    except ImageError as error:
        message = str(error)
        assert "\n" not in message
        assert max(width, height) > 100 * min(width, height), message
        assert "thinner than the limit of 100:1" in message
        return
    assert photo.mode == "RGB"
    assert photo.size == (width, height)
    tensor, box = Preprocessing(resize=73, crop=64)(photo)
    assert tensor.shape == (3, 64, 64)
    drawn = overlay(crop_to_box(photo, box), torch.rand(64, 64))
    assert min(drawn.size) >= 1


class SigmoidHead(nn.Module):
    """A multi-label model that ends in torch.sigmoid, as the probe's did."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.body(x))


def test_a_multi_label_head_is_scored_by_its_sigmoids(resnet18, tmp_path):
    """W9: sigmoid outputs were reported through a softmax, with no option and no warning."""
    x = seeded((2, 3, 64, 64), seed=11)
    explanation = ReciproCAM(resnet18, score="sigmoid").explain(x)
    logits = explicit_scores(
        resnet_backbone(resnet18, x),
        lambda f: resnet18.fc(f.mean(dim=(2, 3))),
        score="logit",
    )
    torch.testing.assert_close(explanation.scores, logits.sigmoid(), rtol=0, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(explanation.probabilities, resnet18(x).sigmoid())
    assert explanation.multilabel
    path = export_onnx(resnet18, tmp_path / "s.onnx", input_shape=(1, 3, 64, 64), score="sigmoid")
    exported = OnnxExplainer(path).explain(x)
    torch.testing.assert_close(exported.probabilities, explanation.probabilities, atol=1e-5, rtol=0)
    torch.testing.assert_close(exported.class_maps, explanation.class_maps, atol=1e-4, rtol=0)
    vit = VisionTransformer(32, 8, 2, 2, 16, 32, num_classes=5).eval()
    tokens = seeded((2, 3, 32, 32), seed=12)
    torch.testing.assert_close(
        ViTReciproCAM(vit, score="sigmoid").explain(tokens).scores,
        ViTReciproCAM(vit, score="logit").explain(tokens).scores.sigmoid(),
    )
    with pytest.warns(UserWarning, match=r"outputs all lie in \[0, 1\], as probabilities do"):
        ReciproCAM(SigmoidHead(resnet18))(x)
