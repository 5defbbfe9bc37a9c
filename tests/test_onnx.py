"""ONNX deployment: exported graphs and inserted branches compute what PyTorch computes.

The references are the PyTorch explainers themselves (whose values other tests prove against
the definition); onnxruntime runs the files. Tolerance 1e-4 on logits and on every class's
normalised map (the issue's bound); measured differences are around 1e-6.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from helpers import (
    ReadsInputBatchSize,
    assert_unchanged,
    build,
    error_message,
    seeded,
    snapshot,
)
from PIL import Image
from torch import nn

from reciprocam import ReciproCAM, ViTReciproCAM, export_onnx
from reciprocam.cli import main
from reciprocam.errors import InputError, LayerError, ModelError, OptionError
from reciprocam.onnx import OnnxExplainer, insert_reciprocam
from reciprocam.onnx.insert import position_masks
from reciprocam.zoo import load_model

TOLERANCE = 1e-4


def assert_same(onnx_file, explainer, x, *, score_tolerance=None):
    """The file's logits and maps of every class equal the PyTorch explainer's.

    With `score_tolerance`, the maps are compared in the units of the raw class scores
    (|difference| x the map's max - min): for maps that barely vary, min-max normalisation
    magnifies the runtimes' float32 rounding of the logits (see the vit_b_16 test).
    """
    got = OnnxExplainer(onnx_file).explain(x)
    want = explainer.explain(x)
    assert torch.allclose(got.logits, want.logits, atol=TOLERANCE, rtol=0)
    difference = (got.class_maps - want.class_maps).abs()
    if score_tolerance is None:
        assert float(difference.max()) <= TOLERANCE
        assert torch.allclose(got.maps, want.maps, atol=TOLERANCE, rtol=0)
        # The maps are not trivial: they vary over space.
        assert float(want.class_maps.std(dim=(2, 3)).mean()) > 0.05
    else:
        spread = want.scores.amax(dim=(2, 3)) - want.scores.amin(dim=(2, 3))
        assert float((difference * spread[..., None, None]).max()) <= score_tolerance
    assert torch.equal(got.targets, want.targets)
    return got


def plain_onnx(model, path, size, dynamic=True):
    """`model` alone, exported as a user would (dynamic or fixed batch)."""
    example = seeded((2 if dynamic else 1, 3, size, size))
    shapes = ({0: torch.export.Dim("batch", min=1, max=64)},) if dynamic else None
    torch.onnx.export(model, (example,), str(path), dynamo=True, dynamic_shapes=shapes)
    return path


def trained_like(model, size):
    """A random model whose maps are not flat, as a trained one's are not.

    Default-initialised MobileNetV3 features vanish (std 1e-9) and torchvision's ViT head is
    zero: batch-norm statistics are calibrated on random images and the last layer is drawn.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the calibration batches
    with torch.no_grad():
        if norms:
            model.train()
            model(seeded((8, 3, size, size), seed=9))
        last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        last.weight.copy_(
            torch.randn(last.weight.shape, generator=torch.Generator().manual_seed(1))
        )
        last.weight.mul_(3 / last.in_features**0.5)
    return model.eval()


# --- export_onnx ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Each model with its export, made once: (model, file, input side, explainer class)."""
    folder = tmp_path_factory.mktemp("exported")
    torch.manual_seed(0)
    models = {
        "resnet18": (build("resnet18"), 64),
        "mobilenet_v3_large": (trained_like(build("mobilenet_v3_large"), 96), 96),
        "vit_b_16": (trained_like(build("vit_b_16"), 224), 224),
        "efficientnet_lite0": (load_model("efficientnet_lite0").model, 224),
    }
    result = {}
    for name, (model, size) in models.items():
        before = snapshot(model)
        path = export_onnx(model, folder / f"{name}.onnx", input_shape=(1, 3, size, size))
        assert_unchanged(model, before)
        result[name] = (model, path, size)
    return result


@pytest.mark.parametrize(
    "name", ["resnet18", "mobilenet_v3_large", "vit_b_16", "efficientnet_lite0"]
)
@pytest.mark.parametrize("batch", [1, 3])
def test_exported_logits_and_maps_equal_pytorch(exported, name, batch):
    model, path, size = exported[name]
    onnx.checker.check_model(str(path), full_check=True)
    x = seeded((batch, 3, size, size), seed=batch)
    if name == "vit_b_16":
        # A random ViT-B/16's maps vary by about 1e-3 of their class's probability, while the
        # two runtimes' logits differ by about 1.5e-5 after 12 float32 blocks: normalised maps
        # then differ by up to 2e-3. The class scores behind them agree to 1e-5 (measured 2e-6).
        got = assert_same(path, ViTReciproCAM(model), x, score_tolerance=1e-5)
    else:
        got = assert_same(path, ReciproCAM(model), x)
    assert tuple(got.class_maps.shape[:2]) == (batch, 1000)


def test_the_file_records_method_layer_preprocessing_and_classes(tmp_path):
    loaded = load_model("resnet18")
    path = export_onnx(
        loaded.model,
        tmp_path / "r.onnx",
        input_shape=(1, 3, 64, 64),
        preprocessing=loaded.preprocessing.at_size(64),
        categories=loaded.categories,
        score="logit",
    )
    metadata = OnnxExplainer(path).metadata
    assert metadata is not None
    assert (metadata.method, metadata.target_layer) == ("ReciproCAM", "layer4")
    assert metadata.options == {"score": "logit", "mask": "pixel"}
    assert (metadata.preprocessing.resize, metadata.preprocessing.crop) == (73, 64)
    assert metadata.categories[:2] == ("tench", "goldfish")
    x = seeded((2, 3, 64, 64))
    assert_same(path, ReciproCAM(loaded.model, score="logit"), x)


def test_export_options_and_gaussian_vit_masks(tmp_path):
    torch.manual_seed(1)
    vit = trained_like(build("vit_b_16", image_size=64, num_classes=7), 64)
    path = export_onnx(vit, tmp_path / "v.onnx", input_shape=(1, 3, 64, 64), mask="token")
    x = seeded((2, 3, 64, 64), seed=4)
    assert_same(path, ViTReciproCAM(vit, mask="token"), x)


def test_export_errors(tmp_path, resnet18):
    before = snapshot(resnet18)
    message = error_message(OptionError, export_onnx, resnet18, tmp_path / "g.onnx", "gradcam")
    assert message == (
        "only reciprocam and vit-reciprocam can be exported (they need no gradients), not gradcam"
    )
    message = error_message(
        OptionError, export_onnx, resnet18, tmp_path / "g.onnx", input_shape=(3, 64)
    )
    assert "input_shape must be (batch, channels, height, width)" in message
    message = error_message(
        OptionError,
        export_onnx,
        resnet18,
        tmp_path / "g.onnx",
        batch_size=8,
        input_shape=(1, 3, 64, 64),
    )
    assert "batch_size does not apply to an export" in message
    message = error_message(
        OptionError,
        export_onnx,
        resnet18,
        tmp_path / "g.onnx",
        input_shape=(1, 3, 64, 64),
        colour=1,
    )
    assert message.startswith("reciprocam takes no option 'colour'; its options are")
    resnet18.train()
    message = error_message(
        LayerError,
        export_onnx,
        resnet18,
        tmp_path / "g.onnx",
        target_layer="layer9",
        input_shape=(1, 3, 64, 64),
    )
    assert "layer9" in message
    assert resnet18.training
    resnet18.eval()
    assert_unchanged(resnet18, before)
    assert not (tmp_path / "g.onnx").exists()


# --- OnnxExplainer ----------------------------------------------------------------------------


def test_onnx_explainer_errors(tmp_path, exported):
    _, path, _ = exported["resnet18"]
    assert "no ONNX file at" in error_message(ModelError, OnnxExplainer, tmp_path / "none.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    assert "is not a model onnxruntime can run" in error_message(
        ModelError, OnnxExplainer, tmp_path / "bad.onnx"
    )
    plain = plain_onnx(build("resnet18"), tmp_path / "plain.onnx", 64)
    message = error_message(ModelError, OnnxExplainer, plain)
    assert "not logits and saliency_maps" in message
    explainer = OnnxExplainer(path)
    message = error_message(InputError, explainer.explain, seeded((1, 3, 32, 32)))
    assert message == "the graph takes inputs of shape (batch, 3, 64, 64), got (1, 3, 32, 32)"
    assert "float" in error_message(
        InputError, explainer.explain, torch.zeros(1, 3, 64, 64, dtype=torch.long)
    )


# --- insert_reciprocam ------------------------------------------------------------------------


class FlattenHead(nn.Module):
    """A head that is not global average pooling: Flatten + Linear on the whole map."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU()
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(8 * 4 * 4, 5))

    def forward(self, x):
        return self.classifier(self.features(x))


class InputShortcut(nn.Module):
    """The input also reaches the logits around every feature map."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 2, 1)
        self.fc = nn.Linear(8, 4)
        self.skip = nn.Linear(3, 4)

    def forward(self, x):
        return self.fc(self.conv(x).mean(dim=(2, 3))) + self.skip(x.mean(dim=(2, 3)))


@pytest.mark.parametrize(
    ("name", "size", "options"),
    [
        ("resnet18", 64, {}),
        ("mobilenet_v3_small", 96, {}),
        ("resnet18", 64, {"score": "logit", "mask": "gaussian"}),
        ("resnet18", 64, {"score": "sigmoid"}),
    ],
)
def test_inserted_maps_equal_reciprocam(tmp_path, name, size, options):
    model = trained_like(build(name), size)
    plain = plain_onnx(model, tmp_path / "plain.onnx", size)
    path = insert_reciprocam(plain, tmp_path / "cam.onnx", **options)
    onnx.checker.check_model(str(path), full_check=True)
    assert_same(path, ReciproCAM(model, **options), seeded((3, 3, size, size), seed=2))
    # The GAP shortcut: no masked (B*K, C, H, W) copies of the feature map in the graph.
    ops = [
        node.op_type
        for node in onnx.load(str(path)).graph.node
        if node.name.startswith("reciprocam/")
    ]
    assert "GlobalAveragePool" not in ops
    assert "ReduceMean" not in ops


def test_a_flatten_head_runs_on_masked_maps_and_a_fixed_batch_is_freed(tmp_path):
    torch.manual_seed(3)
    model = FlattenHead().eval()
    with torch.no_grad():
        model.classifier[1].weight.mul_(20)
    plain = plain_onnx(model, tmp_path / "plain.onnx", 16, dynamic=False)
    path = insert_reciprocam(plain, tmp_path / "cam.onnx")
    session = onnxruntime.InferenceSession(str(path))
    x = seeded((1, 3, 16, 16), seed=5)
    logits, maps = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    # The definition: mask the features at each position, run the head, softmax, min-max.
    features = model.features(x)
    scores = torch.stack(
        [
            model.classifier(features * torch.from_numpy(m).float()).softmax(dim=1)[0]
            for m in position_masks(4, 4, "pixel")
        ],
        dim=1,
    ).view(5, 4, 4)
    low = scores.amin(dim=(1, 2), keepdim=True)
    expected = (scores - low) / (scores.amax(dim=(1, 2), keepdim=True) - low)
    assert np.allclose(maps[0], expected.detach().numpy(), atol=1e-5)
    assert np.allclose(logits, model(x).detach().numpy(), atol=1e-5)


def test_gaussian_masks_are_the_clipped_3x3_kernel():
    masks = position_masks(3, 4, "gaussian")
    assert masks.shape == (12, 3, 4)
    assert np.allclose(
        masks[5],
        [[1 / 16, 2 / 16, 1 / 16, 0], [2 / 16, 4 / 16, 2 / 16, 0], [1 / 16, 2 / 16, 1 / 16, 0]],
    )
    assert np.allclose(masks[0], [[4 / 16, 2 / 16, 0, 0], [2 / 16, 1 / 16, 0, 0], [0, 0, 0, 0]])


def test_insert_errors(tmp_path):
    plain = plain_onnx(build("resnet18"), tmp_path / "plain.onnx", 64)
    message = error_message(LayerError, insert_reciprocam, plain, tmp_path / "o.onnx", "relu_9")
    assert "the logits depend on the input through other paths than 'relu_9'" in message
    message = error_message(LayerError, insert_reciprocam, plain, tmp_path / "o.onnx", "relu_166")
    assert message.startswith("the graph has no node or tensor named 'relu_166'; did you mean")
    message = error_message(LayerError, insert_reciprocam, plain, tmp_path / "o.onnx", "linear")
    assert "not a (batch, channels, height, width) map" in message
    shortcut = plain_onnx(InputShortcut().eval(), tmp_path / "shortcut.onnx", 16)
    message = error_message(LayerError, insert_reciprocam, shortcut, tmp_path / "o.onnx")
    assert message.startswith("found no spatial (batch, channels, height, width) node")
    mlp = plain_onnx(nn.Sequential(nn.Flatten(), nn.Linear(48, 3)).eval(), tmp_path / "mlp.onnx", 4)
    assert "found no spatial" in error_message(
        LayerError, insert_reciprocam, mlp, tmp_path / "o.onnx"
    )
    (tmp_path / "bad.onnx").write_bytes(b"junk")
    assert "is not a valid ONNX model" in error_message(
        ModelError, insert_reciprocam, tmp_path / "bad.onnx", tmp_path / "o.onnx"
    )
    cam = insert_reciprocam(plain, tmp_path / "cam.onnx")
    assert "already has a saliency_maps output" in error_message(
        ModelError, insert_reciprocam, cam, tmp_path / "o.onnx"
    )
    assert not (tmp_path / "o.onnx").exists()


# --- the command line -------------------------------------------------------------------------


def test_export_then_explain_with_onnx_gives_pytorchs_maps(tmp_path, capsys):
    checkpoint = tmp_path / "r.pt"
    torch.save(build("resnet18").state_dict(), checkpoint)
    photo = tmp_path / "photo.png"
    pixels = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(photo)
    model_file = tmp_path / "r.onnx"
    model = ["--model", "resnet18", "--checkpoint", str(checkpoint)]
    assert main(["export", *model, "--image-size", "64", "--output", str(model_file)]) == 0
    assert capsys.readouterr().out == f"wrote {model_file}: resnet18 with its ReciproCAM maps\n"
    onnx_run = ["explain", str(photo), "--onnx", str(model_file), "--output", str(tmp_path / "o")]
    assert main(onnx_run) == 0
    out = capsys.readouterr().out
    assert "photo.png: " in out
    assert "on layer 'layer4'" in out
    torch_run = [
        "explain",
        str(photo),
        *model,
        "--image-size",
        "64",
        "--output",
        str(tmp_path / "t"),
    ]
    assert main([*torch_run, "--device", "cpu"]) == 0
    torch_out = capsys.readouterr().out
    # The same top classes and probabilities, and the same map.
    assert out.split("|")[0] == torch_out.split("|")[0]
    got = np.load(tmp_path / "o" / "photo_reciprocam.npy")
    want = np.load(tmp_path / "t" / "photo_reciprocam.npy")
    assert got.shape == want.shape == (64, 64)
    assert np.allclose(got, want, atol=TOLERANCE)
    assert float(want.std()) > 0.05


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--model", "resnet18"], "--model does not apply to --onnx"),
        (["--mask", "gaussian"], "--mask does not apply to --onnx"),
        (["--method", "gradcam"], "an ONNX file is explained by the method exported into it"),
    ],
)
def test_explain_onnx_refuses_model_options(tmp_path, capsys, exported, arguments, message):
    _, path, _ = exported["resnet18"]
    code = main(["explain", "x.png", "--onnx", str(path), *arguments])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(f"reciprocam: error: {message}")
    assert err.count("\n") == 1


def test_insert_command_and_its_errors(tmp_path, capsys):
    plain = plain_onnx(build("resnet18"), tmp_path / "plain.onnx", 64)
    assert main(["insert", str(plain), str(tmp_path / "cam.onnx")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["insert", str(plain), str(tmp_path / "x.onnx"), "--target-node", "nothing"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("reciprocam: error: the graph has no node or tensor named 'nothing'")
    assert err.count("\n") == 1


def test_a_head_that_reads_the_input_batch_size_exports_with_copies_of_the_input(tmp_path):
    model = ReadsInputBatchSize().eval()
    path = export_onnx(model, tmp_path / "fixed.onnx", input_shape=(1, 3, 32, 32))
    assert_same(path, ReciproCAM(model), seeded((3, 3, 32, 32)), score_tolerance=1e-5)


def test_a_one_logit_head_is_scored_through_its_sigmoid_in_inserted_and_exported_graphs(
    tmp_path,
):
    model = trained_like(build("resnet18", num_classes=1), 64)
    x = seeded((2, 3, 64, 64), seed=6)
    inserted = insert_reciprocam(
        plain_onnx(model, tmp_path / "plain.onnx", 64), tmp_path / "i.onnx"
    )
    exported = export_onnx(model, tmp_path / "e.onnx", input_shape=(1, 3, 64, 64))
    for path in (inserted, exported):
        got = assert_same(path, ReciproCAM(model), x)
        assert float(got.class_maps.amax()) == 1.0  # not the constant map of a 1-class softmax
