"""Target layers: the automatic choice, named layers, and layers the method must refuse."""

from __future__ import annotations

import pytest
import torch
from helpers import ReadsInputBatchSize, build, seeded
from oracle import explicit_scores, minmax
from torch import nn

from reciprocam import LayerError, ReciproCAM, TargetError
from reciprocam.layers import spatial_layers

# The model, the layer the automatic rule must pick, and whether its head starts with GAP.
AUTOMATIC = [
    ("resnet18", "layer4", True),
    ("resnet50", "layer4", True),
    ("resnet101", "layer4", True),
    ("resnext50_32x4d", "layer4", True),
    ("vgg16", "features", False),
    ("densenet121", "features", False),  # the head applies ReLU before pooling
    ("mobilenet_v2", "features", True),
    ("mobilenet_v3_large", "features", True),
    ("efficientnet_b0", "features", True),
    ("convnext_tiny", "features", True),
    ("regnet_y_400mf", "trunk_output", True),
]


@pytest.mark.parametrize(("name", "layer", "gap"), AUTOMATIC)
def test_automatic_layer(request, name, layer, gap):
    model = (
        request.getfixturevalue(name) if name in ("resnet18", "resnet50", "vgg16") else build(name)
    )
    cam = ReciproCAM(model)
    maps = cam(seeded((1, 3, 64, 64)))
    assert str(cam.target_layer) == layer
    assert cam.target_layer.module is model.get_submodule(layer)
    assert cam.uses_gap_shortcut is gap
    assert maps.shape == (1, 64, 64)
    assert 0.0 <= float(maps.min()) <= float(maps.max()) <= 1.0


def test_automatic_layer_of_the_demo_model(demo_model):
    cam = ReciproCAM(demo_model)
    cam(seeded((1, 3, 96, 96)))
    assert str(cam.target_layer) == "features"
    assert cam.uses_gap_shortcut


def test_layer_by_name_or_module_gives_the_same_maps(resnet18):
    x = seeded((1, 3, 96, 96), seed=1)
    automatic = ReciproCAM(resnet18)(x)
    torch.testing.assert_close(ReciproCAM(resnet18, "layer4")(x), automatic, rtol=0, atol=0)
    torch.testing.assert_close(ReciproCAM(resnet18, resnet18.layer4)(x), automatic, rtol=0, atol=0)


def test_a_module_called_twice_is_tapped_at_its_last_call(resnet18):
    # BasicBlock's ReLU runs after bn1 and again after the residual add: the block output.
    x = seeded((1, 3, 96, 96), seed=2)
    cam = ReciproCAM(resnet18, "layer4.1.relu")
    maps = cam(x)
    assert str(cam.target_layer) == "layer4.1.relu (call 2)"
    torch.testing.assert_close(maps, ReciproCAM(resnet18, "layer4")(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("batch_size", [None, 5])
def test_an_earlier_layer_runs_the_rest_of_the_network(resnet18, batch_size):
    # Masking layer3 runs layer4, pooling and fc on the copies: the generic path, and with
    # batch_size=5 the layers before layer3 run again for each extra pass.
    x = seeded((2, 3, 96, 96), seed=3)
    features = {}
    handle = resnet18.layer3.register_forward_hook(lambda m, i, o: features.setdefault("f", o))
    with torch.no_grad():
        resnet18(x)
    handle.remove()

    def head(f):
        return resnet18.fc(torch.flatten(resnet18.avgpool(resnet18.layer4(f)), 1))

    expected = explicit_scores(features["f"], head, score="logit")
    cam = ReciproCAM(resnet18, "layer3", score="logit", batch_size=batch_size, upsample=False)
    explanation = cam.explain(x)
    assert not cam.uses_gap_shortcut
    torch.testing.assert_close(
        explanation.scores, expected, rtol=0, atol=1e-5 * float(expected.abs().max())
    )
    torch.testing.assert_close(explanation.class_maps, minmax(expected), rtol=0, atol=1e-5)


@pytest.mark.parametrize("layer", ["layer4.0", "layer3", "layer2.1"])
def test_block_outputs_are_accepted(resnet18, layer):
    cam = ReciproCAM(resnet18, layer)
    cam(seeded((1, 3, 96, 96)))
    assert str(cam.target_layer) == layer


@pytest.mark.parametrize("layer", ["layer4.1.bn2", "layer4.1.conv1", "layer4.0.downsample"])
def test_layers_a_skip_connection_bypasses_are_refused(resnet18, layer):
    with pytest.raises(
        LayerError, match=rf"layer '{layer}' is bypassed: .*choose a layer whose output"
    ):
        ReciproCAM(resnet18, layer)(seeded((1, 3, 96, 96)))


def test_a_dense_layer_is_bypassed_by_the_concatenation():
    model = build("densenet121")
    with pytest.raises(LayerError, match="is bypassed"):
        ReciproCAM(model, "features.denseblock4.denselayer16")(seeded((1, 3, 64, 64)))


def test_unknown_layer_name_suggests_the_nearest(resnet18):
    with pytest.raises(LayerError, match=r"no layer named 'layer5'; did you mean 'layer4'"):
        ReciproCAM(resnet18, "layer5")(seeded((1, 3, 64, 64)))
    with pytest.raises(LayerError, match=r"no layer named ''"):
        ReciproCAM(resnet18, "")(seeded((1, 3, 64, 64)))


def test_layer_that_is_not_spatial(resnet18):
    with pytest.raises(
        LayerError, match=r"layer 'fc' outputs a tensor of shape \(1, 1000\); .*spatial"
    ):
        ReciproCAM(resnet18, "fc")(seeded((1, 3, 64, 64)))
    with pytest.raises(LayerError, match=r"layer 'layer4' outputs a 1x1 map at this input size"):
        ReciproCAM(resnet18, "layer4")(seeded((1, 3, 32, 32)))


def test_layer_given_as_a_foreign_module_or_a_wrong_type(resnet18):
    with pytest.raises(LayerError, match="not a submodule of the model"):
        ReciproCAM(resnet18, nn.Conv2d(3, 3, 1))(seeded((1, 3, 64, 64)))
    with pytest.raises(LayerError, match="not a submodule of the model"):
        ReciproCAM(resnet18, resnet18)(seeded((1, 3, 64, 64)))
    with pytest.raises(
        LayerError, match=r"target_layer must be None, a layer name or an nn\.Module, not int"
    ):
        ReciproCAM(resnet18, 4)(seeded((1, 3, 64, 64)))


@pytest.mark.parametrize("target", ["conv", None])
@pytest.mark.parametrize("mask", ["pixel", "gaussian"])
def test_a_head_that_reads_the_input_batch_size_gets_copies_of_the_input(target, mask):
    model = ReadsInputBatchSize().eval()
    images = seeded((2, 3, 32, 32))
    features = model.conv(images).detach()
    expected = explicit_scores(features, lambda f: model.fc(model.pool(f).flatten(1)), mask=mask)
    cam = ReciproCAM(model, target, mask=mask, batch_size=20)  # passes that split an image
    scores = cam.explain(images).scores
    assert cam.target_layer.copies_from_input
    assert not cam.uses_gap_shortcut
    torch.testing.assert_close(scores, expected, rtol=0, atol=1e-6)


class _Unused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.spare = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def test_layer_that_does_not_run():
    with pytest.raises(LayerError, match=r"layer 'spare' did not run in the model's forward pass"):
        ReciproCAM(_Unused(), "spare")(seeded((1, 3, 16, 16)))


def test_model_without_a_spatial_layer():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    with pytest.raises(LayerError, match=r"found no layer in Sequential whose output is a spatial"):
        ReciproCAM(model)(seeded((1, 3, 8, 8)))


def test_model_whose_output_is_a_grid_needs_a_class():
    model = nn.Sequential(nn.Conv2d(3, 4, 3))
    with pytest.raises(TargetError, match=r"a segmentation output has no top-1 class to explain"):
        ReciproCAM(model)(seeded((1, 3, 8, 8)))


def test_logits_inside_a_mapping_or_an_output_object():
    class Wrapped(nn.Module):
        def __init__(self, inner, as_dict):
            super().__init__()
            self.inner, self.as_dict = inner, as_dict

        def forward(self, x):
            logits = self.inner(x)
            return {"logits": logits} if self.as_dict else type("Output", (), {"logits": logits})()

    torch.manual_seed(0)
    inner = _Unused()
    x = seeded((1, 3, 16, 16))
    expected = ReciproCAM(inner, "conv")(x)
    for as_dict in (True, False):
        torch.testing.assert_close(ReciproCAM(Wrapped(inner, as_dict), "inner.conv")(x), expected)


def test_spatial_layers_lists_every_grid_layer_with_its_layout(resnet18):
    layers = spatial_layers(resnet18, seeded((1, 3, 64, 64)))
    grids = {layer.name: (layer.layout.kind, layer.layout.grid) for layer in layers}
    # ResNet-18 at 64x64: the stem's 32x32 (conv1, bn1, relu), 16x16 after the max pool,
    # then halving per stage to layer4's 2x2; the 1x1 pool and fc are not grids.
    assert grids["conv1"] == ("channels_first", (32, 32))
    assert grids["maxpool"] == ("channels_first", (16, 16))
    assert [grids[f"layer{i}"][1] for i in range(1, 5)] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    assert "avgpool" not in grids
    assert "fc" not in grids
    names = [layer.name for layer in layers]
    assert names.index("layer3.1") < names.index("layer3") < names.index("layer4.0")
    assert not any(module._forward_hooks for module in resnet18.modules())  # probe removed
