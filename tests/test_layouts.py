"""Feature layouts: channels-last and token grids are read from the model, never misread.

Each family the zoo showed going wrong (a Swin stage in NHWC, Hugging Face Swin, LeViT, a token
grid with a class token, a wrapped ViT, inputs of several sizes, stages that reshape with the
input's batch size, layers that return tuples, NHWC blocks after a patch embedding) on a tiny
configuration, with every map compared against the definition written out here on the layer's
raw output.
"""

from __future__ import annotations

import pytest
import timm
import torch
from helpers import error_message, seeded
from torch import nn
from transformers import (
    CvtConfig,
    CvtForImageClassification,
    HieraConfig,
    HieraForImageClassification,
    PvtV2Config,
    PvtV2ForImageClassification,
    SwinConfig,
    SwinForImageClassification,
)

import reciprocam
from reciprocam import (
    AblationCAM,
    EigenCAM,
    GradCAM,
    InputError,
    LayerError,
    ReciproCAM,
    ViTReciproCAM,
)
from reciprocam.layout import FeatureLayout, read_layout

G3 = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16


def masks(height: int, width: int, gaussian: bool) -> torch.Tensor:
    """(K, H, W) by hand: one-hot at k, or the 3x3 Gaussian centred at k, clipped."""
    out = torch.zeros(height * width, height, width)
    for k in range(height * width):
        i, j = divmod(k, width)
        for u in (-1, 0, 1) if gaussian else (0,):
            for v in (-1, 0, 1) if gaussian else (0,):
                if 0 <= i + u < height and 0 <= j + v < width:
                    out[k, i + u, j + v] = G3[u + 1, v + 1] if gaussian else 1.0
    return out


def masked_outputs(output: torch.Tensor, kind: str, prefix: int, grid, gaussian: bool):
    """The K masked copies of one image's raw layer output, in the layer's own layout."""
    height, width = grid
    m = masks(height, width, gaussian)
    if kind == "nhwc":  # (H, W, C): copy k holds F[i, j] * M_k at every position
        centre = output.reshape(height * width, -1)
        return m[..., None] * centre[:, None, None, :]
    tokens = output[prefix:]  # (K, C) row-major
    spread = m.flatten(1)[:, :, None] * tokens[:, None, :]
    return torch.cat([output[:prefix].expand(len(m), prefix, -1), spread], dim=1)


def definition(model, x, module, kind, prefix, grid, gaussian=False):
    """(N, h, w) softmax scores of one image with `module`'s output masked by hand.

    The model runs on K copies of the image, each with its own copy of the layer's output
    masked, so models that reshape with the input's batch size are run as they are written.
    A tuple output (a Hugging Face layer's) is masked in its first tensor.
    """

    def replace(mod, inputs, output):
        features = output[0] if isinstance(output, tuple) else output
        masked = masked_outputs(features[0], kind, prefix, grid, gaussian)
        return (masked, *output[1:]) if isinstance(output, tuple) else masked

    handle = module.register_forward_hook(replace)
    try:
        with torch.no_grad():
            output = model(x.expand(grid[0] * grid[1], *x.shape[1:]))
    finally:
        handle.remove()
    logits = getattr(output, "logits", output)
    return logits.softmax(dim=1).T.reshape(-1, *grid)


@pytest.fixture(scope="module")
def swin() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "swin_tiny_patch4_window7_224", pretrained=False, img_size=64, window_size=4,
        embed_dim=16, depths=(1, 1), num_heads=(2, 2), num_classes=5,
    ).eval()  # fmt: skip


@pytest.fixture(scope="module")
def hf_swin() -> nn.Module:
    torch.manual_seed(0)
    config = SwinConfig(
        image_size=64, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2],
        window_size=4, num_labels=5,
    )  # fmt: skip
    return SwinForImageClassification(config).eval()


def test_layouts_convert_to_channels_first_and_back():
    output = torch.arange(2 * 3 * 4 * 5.0).view(2, 3, 4, 5)  # NHWC: 3x4 grid, 5 channels
    layout = FeatureLayout("channels_last", (3, 4), 5)
    features = layout.to_channels_first(output)
    assert features.shape == (2, 5, 3, 4)
    assert features[1, 2, 0, 3] == output[1, 0, 3, 2]
    torch.testing.assert_close(layout.from_channels_first(features), output)
    tokens = torch.arange(2 * 7 * 3.0).view(2, 7, 3)  # one prefix token, then a 2x3 grid
    layout = FeatureLayout("tokens", (2, 3), 3, prefix=1)
    features = layout.to_channels_first(tokens)
    assert features[0, 1, 1, 2] == tokens[0, 1 + 1 * 3 + 2, 1]
    torch.testing.assert_close(
        layout.from_channels_first(features, layout.prefix_tokens(tokens)), tokens
    )


def test_the_producing_module_decides_an_ambiguous_shape():
    shape = (1, 7, 7, 7)  # both readings fit a 224x224 input
    assert read_layout(shape, (224, 224), "channels_last", None, "x").kind == "channels_last"
    assert read_layout(shape, (224, 224), "channels_first", None, "x").kind == "channels_first"
    with pytest.raises(LayerError, match="pass layout='nchw' or layout='nhwc'"):
        read_layout(shape, (224, 224), None, None, "x")
    # The shape alone decides only where one reading does not fit the input at all.
    assert read_layout((1, 7, 7, 768), (224, 224), None, None, "x").grid == (7, 7)
    tokens = read_layout((1, 201, 64), (224, 224), None, None, "x")
    assert (tokens.prefix, tokens.grid) == (5, (14, 14))


class Untyped(nn.Module):
    """A module whose type says nothing of its output's layout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 1.0


class AmbiguousNet(nn.Module):
    """A stem to a (B, 4, 4, 4) NHWC map that no module type marks, then a NHWC head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 4, 4, stride=4)
        self.mark = Untyped()
        self.head = nn.Linear(4, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nhwc = self.mark(self.stem(x).permute(0, 2, 3, 1))
        return self.head(torch.relu(nhwc) ** 2).mean(dim=(1, 2))


def test_an_undecidable_layout_is_refused_with_the_option_to_pass():
    model, x = AmbiguousNet().eval(), seeded((1, 3, 16, 16))
    message = error_message(LayerError, ReciproCAM(model, "mark"), x)
    assert "pass layout='nchw' or layout='nhwc'" in message
    explanation = ReciproCAM(model, "mark", layout="nhwc").explain(x)
    expected = definition(model, x, model.mark, "nhwc", 0, (4, 4))
    torch.testing.assert_close(explanation.scores[0], expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(("mask", "fast_path"), [("pixel", True), ("gaussian", False)])
def test_timm_swin_is_read_channels_last(swin, mask, fast_path):
    x = seeded((1, 3, 64, 64), seed=3)
    cam = ReciproCAM(swin, mask=mask, fast_path=fast_path)
    explanation = cam.explain(x)
    assert str(cam.target_layer) == "norm"
    assert cam.target_layer.layout == FeatureLayout("channels_last", (8, 8), 32)
    assert cam.uses_gap_shortcut is fast_path
    expected = definition(swin, x, swin.norm, "nhwc", 0, (8, 8), gaussian=mask == "gaussian")
    torch.testing.assert_close(explanation.scores[0], expected, atol=1e-5, rtol=1e-4)


def test_gradient_and_channel_methods_read_swin_channels_last(swin):
    x = seeded((1, 3, 64, 64), seed=4)
    captured = {}

    def keep(module, inputs, output):
        captured["a"] = output
        return output

    handle = swin.norm.register_forward_hook(keep)
    try:
        logits = swin(x)
        target = int(logits.argmax())
        (gradient,) = torch.autograd.grad(logits[0, target], captured["a"])
    finally:
        handle.remove()
    a = captured["a"].detach()[0].permute(2, 0, 1)  # (C, H, W) by hand
    g = gradient[0].permute(2, 0, 1)
    gradcam = torch.relu((g.mean(dim=(1, 2))[:, None, None] * a).sum(0))
    got = GradCAM(swin, upsample=False)(x)[0]
    torch.testing.assert_close(got, (gradcam - gradcam.min()) / (gradcam.max() - gradcam.min()))
    ablated = []
    for channel in range(a.shape[0]):
        copy = captured["a"].detach().clone()
        copy[..., channel] = 0
        ablated.append(swin.head(copy)[0].detach())
    weights = (logits[0].detach() - torch.stack(ablated)) / logits[0].detach()
    ablation = torch.relu(torch.einsum("kn,khw->nhw", weights, a))
    scores = AblationCAM(swin).explain(x).scores[0]
    torch.testing.assert_close(scores, ablation, atol=1e-5, rtol=1e-4)
    assert EigenCAM(swin, upsample=False)(x).shape == (1, 8, 8)


def test_hugging_face_swin_is_explained_and_left_unchanged(hf_swin):
    x = seeded((1, 3, 64, 64), seed=5)
    windows = [block.window_size for block in hf_swin.modules() if hasattr(block, "window_size")]
    with torch.no_grad():
        before = hf_swin(x).logits
    cam = reciprocam.explainer("reciprocam", hf_swin)
    explanation = cam.explain(x)
    assert str(cam.target_layer) == "swin.layernorm"
    assert cam.target_layer.layout == FeatureLayout("tokens", (8, 8), 32)
    expected = definition(hf_swin, x, hf_swin.swin.layernorm, "tokens", 0, (8, 8))
    torch.testing.assert_close(explanation.scores[0], expected, atol=1e-5, rtol=1e-4)
    # No probe leaves the model changed: window sizes and the user's own output as before.
    assert [b.window_size for b in hf_swin.modules() if hasattr(b, "window_size")] == windows
    with torch.no_grad():
        torch.testing.assert_close(hf_swin(x).logits, before)
    assert GradCAM(hf_swin, upsample=False)(x).shape == (1, 8, 8)  # not the patch embedding


def test_levit_is_explained_at_its_last_stage_not_its_stem():
    torch.manual_seed(0)
    model = timm.create_model("levit_128s", pretrained=False, img_size=128, num_classes=5).eval()
    x = seeded((1, 3, 128, 128), seed=6)
    cam = ReciproCAM(model)
    explanation = cam.explain(x)
    assert str(cam.target_layer) == "stages"
    assert cam.target_layer.layout == FeatureLayout("tokens", (2, 2), 384)
    expected = definition(model, x, model.stages, "tokens", 0, (2, 2))
    torch.testing.assert_close(explanation.scores[0], expected, atol=1e-5, rtol=1e-4)


def _pit() -> nn.Module:
    return timm.create_model("pit_ti_224", pretrained=False, img_size=128, num_classes=5)


def _sam2_hiera() -> nn.Module:  # NHWC blocks after a patch embedding: not a token ViT
    return timm.create_model(
        "sam2_hiera_tiny", pretrained=False, embed_dim=16, num_heads=1, num_classes=5
    )


def _pvt_v2() -> nn.Module:
    config = PvtV2Config(
        depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 16, 32], num_attention_heads=[1, 1, 1, 1],
        num_labels=5,
    )  # fmt: skip
    return PvtV2ForImageClassification(config)


def _cvt() -> nn.Module:  # a class token in the last stage; HF indexes depths by stage
    config = CvtConfig(depth=[1, 2, 3], embed_dim=[8, 16, 32], num_heads=[1, 1, 2], num_labels=5)
    return CvtForImageClassification(config)


def _hf_hiera() -> nn.Module:  # its layers return tuples
    config = HieraConfig(
        embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], image_size=[64, 64],
        num_labels=5,
    )  # fmt: skip
    return HieraForImageClassification(config)


@pytest.mark.parametrize(
    ("build_model", "size", "layer", "layout", "from_input"),
    [
        (_pit, 128, "transformers.2.blocks.2", FeatureLayout("tokens", (4, 4), 256, 1), True),
        (_sam2_hiera, 64, "blocks.11", FeatureLayout("channels_last", (2, 2), 128), False),
        (
            _pvt_v2, 64, "pvt_v2.encoder.layers.3.layer_norm",
            FeatureLayout("tokens", (2, 2), 32), True,
        ),
        (_cvt, 64, "cvt.encoder.stages.2.layers.1", FeatureLayout("tokens", (4, 4), 32, 1), True),
        (_hf_hiera, 64, "hiera.encoder.stages.3", FeatureLayout("tokens", (2, 2), 64), False),
    ],
    ids=["pit", "sam2-hiera", "hf-pvt-v2", "hf-cvt", "hf-hiera"],
)  # fmt: skip
def test_stages_that_reshape_with_the_batch_or_return_tuples_are_explained(
    build_model, size, layer, layout, from_input
):
    torch.manual_seed(0)
    model, x = build_model().eval(), seeded((1, 3, size, size), seed=9)
    cam = reciprocam.explainer("reciprocam", model)
    explanation = cam.explain(x)
    assert type(cam) is ReciproCAM
    assert str(cam.target_layer) == layer
    assert cam.target_layer.layout == layout
    assert cam.target_layer.copies_from_input == from_input
    module = model.get_submodule(layer)
    kind = {"tokens": "tokens", "channels_last": "nhwc"}[layout.kind]
    expected = definition(model, x, module, kind, layout.prefix, layout.grid)
    torch.testing.assert_close(explanation.scores[0], expected, atol=1e-5, rtol=1e-4)


class ClassTokenHybrid(nn.Module):
    """A conv stem to a token grid, a class token, a last attention block and a class head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 16, 8, stride=8)
        self.cls = nn.Parameter(torch.randn(1, 1, 16))
        self.tokens = nn.Identity()
        self.block = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.head = nn.Linear(16, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = self.stem(x).flatten(2).transpose(1, 2)
        tokens = self.tokens(torch.cat([self.cls.expand(len(grid), -1, -1), grid], dim=1))
        return self.head(self.block(tokens)[:, 0])


def test_a_class_token_grid_keeps_its_prefix_and_masks_the_grid():
    model, x = ClassTokenHybrid().eval(), seeded((1, 3, 32, 48), seed=7)
    cam = ReciproCAM(model)
    explanation = cam.explain(x)
    # The block's output feeds the head through its class token only: its input is chosen.
    assert str(cam.target_layer) == "tokens"
    assert cam.target_layer.layout == FeatureLayout("tokens", (4, 6), 16, prefix=1)
    expected = definition(model, x, model.tokens, "tokens", 1, (4, 6))
    torch.testing.assert_close(explanation.scores[0], expected, atol=1e-5, rtol=1e-4)


def test_a_wrapped_vit_is_recognised():
    from test_vit_reciprocam import tiny_timm

    vit = tiny_timm()
    wrapped = nn.Sequential(nn.Identity(), vit).eval()
    x = seeded((1, 3, 64, 64), seed=8)
    cam = reciprocam.explainer("reciprocam", wrapped)
    assert isinstance(cam, ViTReciproCAM)
    torch.testing.assert_close(cam(x), ViTReciproCAM(vit)(x))
    assert str(cam.target_layer) == "1.blocks.2.norm1"
    parallel = reciprocam.explainer("reciprocam", nn.DataParallel(vit))
    assert isinstance(parallel, ViTReciproCAM)
    torch.testing.assert_close(parallel(x), ViTReciproCAM(vit)(x))


def test_the_layer_and_the_grid_follow_each_input_size(resnet18):
    big, small = seeded((1, 3, 96, 96), seed=9), seeded((1, 3, 32, 32), seed=10)
    used = ReciproCAM(resnet18)
    used(small)  # a small first call must not fix the layer for later sizes
    assert str(used.target_layer) == "layer3"
    torch.testing.assert_close(used(big), ReciproCAM(resnet18)(big))
    assert str(used.target_layer) == "layer4"
    fixed = ReciproCAM(resnet18, "layer4")
    fixed(big)
    message = error_message(LayerError, fixed, small)  # a 1x1 map: refused, not all zeros
    assert "outputs a 1x1 map" in message


def test_a_vit_that_takes_several_sizes_reads_each_grid():
    torch.manual_seed(0)
    vit = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=64, dynamic_img_size=True,
        num_classes=5,
    ).eval()  # fmt: skip
    wide, square = seeded((1, 3, 48, 64), seed=11), seeded((1, 3, 64, 64), seed=12)
    used = ViTReciproCAM(vit)
    used(wide)
    assert used.grid.grid == (3, 4)
    torch.testing.assert_close(
        used.explain(square).scores, ViTReciproCAM(vit).explain(square).scores
    )
    assert used.grid.grid == (4, 4)


def test_a_vit_s_own_size_check_is_one_line():
    from test_vit_reciprocam import tiny_torchvision

    model = tiny_torchvision()
    message = error_message(InputError, ViTReciproCAM(model), seeded((1, 3, 48, 48)))
    assert message.startswith("the model failed on an input of shape (1, 3, 48, 48):")


@pytest.mark.parametrize("family", ["swin", "hf-vit"])
def test_exported_onnx_reads_layouts_and_hugging_face_outputs(tmp_path, swin, family):
    from test_onnx import assert_same
    from test_vit_reciprocam import tiny_transformers

    model = swin if family == "swin" else tiny_transformers()
    explainer = ReciproCAM(model) if family == "swin" else ViTReciproCAM(model)
    path = reciprocam.export_onnx(model, tmp_path / "m.onnx", input_shape=(1, 3, 64, 64))
    assert_same(path, explainer, seeded((2, 3, 64, 64), seed=13))


def test_metrics_read_hugging_face_outputs():
    from test_vit_reciprocam import tiny_transformers

    from reciprocam.metrics import AverageDrop

    model, x = tiny_transformers(), seeded((2, 3, 64, 64), seed=14)
    explanation = ViTReciproCAM(model).explain(x)
    drops = AverageDrop(model).update(x, explanation.maps, explanation.targets)
    with torch.no_grad():
        rows = torch.arange(2)
        y = model(x).logits.softmax(1)[rows, explanation.targets]
        o = model(x * explanation.maps[:, None]).logits.softmax(1)[rows, explanation.targets]
    torch.testing.assert_close(drops.float(), (y - o).clamp_min(0) / y)


class BypassedLastGrid(nn.Module):
    """A stem grid, then a coarser stage; a class vector from the stem bypasses the stage."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 8, stride=8)
        self.stage = nn.Conv2d(8, 8, 2, stride=2)
        self.cls = nn.Linear(8, 8)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stem = self.stem(x)
        cls = self.cls(stem.mean(dim=(2, 3)))
        return self.head(self.stage(stem).mean(dim=(2, 3)) + cls)


def test_a_bypassed_last_grid_is_refused_rather_than_the_stem_chosen():
    model, x = BypassedLastGrid().eval(), seeded((1, 3, 32, 32), seed=15)
    message = error_message(LayerError, ReciproCAM(model), x)
    assert "last grid, 'stage', is not the only path" in message
    assert "pass target_layer" in message
    explanation = ReciproCAM(model, "stem").explain(x)  # chosen by name, it is explained
    assert explanation.scores.shape == (1, 4, 4, 4)


@pytest.mark.parametrize("method", [ReciproCAM, GradCAM, AblationCAM])
def test_an_unknown_layout_is_refused_when_the_explainer_is_made(resnet18, method):
    from reciprocam import OptionError

    message = error_message(OptionError, method, resnet18, layout="hwc")
    assert message == (
        "unknown layout 'hwc'; choose 'nchw', 'nhwc' or 'tokens' (or None to decide it from the"
        " model)"
    )
