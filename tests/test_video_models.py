"""torchvision's video classifiers and MONAI's volume classifiers (random weights): the
automatic layer, its layout, and ReciproCAM's scores against the definition, each masked copy
made here and run through the rest of the network by our own hook."""

from __future__ import annotations

import pytest
import torch
import torchvision
from helpers import seeded
from monai.networks import nets as monai_nets
from torch import Tensor, nn
from torchvision.models.video.mvit import MSBlockConfig, MViT

from reciprocam import GradCAM, ReciproCAM
from reciprocam.layout import FeatureLayout

# name, constructor options, clip shape, automatic layer, its layout, GAP shortcut
VIDEO_MODELS = [
    ("r3d_18", {}, (1, 3, 16, 64, 64), "layer4", ("channels_first", (2, 4, 4), 512, 0), True),
    ("mc3_18", {}, (1, 3, 8, 32, 32), "layer4", ("channels_first", (8, 2, 2), 512, 0), True),
    ("r2plus1d_18", {}, (1, 3, 16, 64, 64), "layer4", ("channels_first", (2, 4, 4), 512, 0), True),
    ("s3d", {}, (1, 3, 16, 224, 224), "features", ("channels_first", (2, 7, 7), 1024, 0), False),
    ("swin3d_t", {}, (1, 3, 8, 64, 64), "norm", ("channels_last", (4, 2, 2), 768, 0), True),
    ("mvit_v2", {}, (1, 3, 8, 64, 64), "blocks.3", ("tokens", (4, 4, 4), 128, 1), False),
    ("mvit_v1", {}, (1, 3, 8, 64, 64), "blocks.3", ("tokens", (4, 4, 4), 128, 1), False),
]


def tiny_mvit(version: str) -> nn.Module:
    """torchvision's MViT class (v1 or v2 options) with five small blocks at 8x64x64: its
    builders fix the 16x224x224 input, too slow for tests."""
    blocks = [
        MSBlockConfig(1, 32, 32, [3, 3, 3], [3, 3, 3], [1, 1, 1], [1, 4, 4]),
        MSBlockConfig(2, 32, 64, [3, 3, 3], [3, 3, 3], [1, 2, 2], [1, 2, 2]),
        MSBlockConfig(2, 64, 64, [3, 3, 3], [3, 3, 3], [1, 1, 1], [1, 2, 2]),
        MSBlockConfig(4, 64, 128, [3, 3, 3], [3, 3, 3], [1, 2, 2], [1, 1, 1]),
        MSBlockConfig(4, 128, 128, [3, 3, 3], [3, 3, 3], [1, 1, 1], [1, 1, 1]),
    ]
    v2 = version == "mvit_v2"
    return MViT(
        spatial_size=(64, 64),
        temporal_size=8,
        block_setting=blocks,
        residual_pool=v2,
        residual_with_cls_embed=not v2,
        rel_pos_embed=v2,
        proj_after_attn=v2,
        num_classes=6,
    )


def build_video(name: str, options: dict[str, object]) -> nn.Module:
    torch.manual_seed(0)
    if name.startswith("mvit"):
        return tiny_mvit(name).eval()
    return torchvision.models.get_model(name, weights=None, num_classes=6, **options).eval()


def pixel_copies(output: Tensor, layout: FeatureLayout) -> Tensor:
    """Every copy of a one-clip output that keeps one grid position, in the output's own
    layout, written out for each layout (prefix tokens kept)."""
    copies = []
    for position in range(layout.positions):
        copy = torch.zeros_like(output)
        if layout.kind == "tokens":
            copy[:, : layout.prefix] = output[:, : layout.prefix]
            copy[:, layout.prefix + position] = output[:, layout.prefix + position]
        else:
            t, rest = divmod(position, layout.grid[1] * layout.grid[2])
            i, j = divmod(rest, layout.grid[2])
            if layout.kind == "channels_first":
                copy[:, :, t, i, j] = output[:, :, t, i, j]
            else:
                copy[:, t, i, j] = output[:, t, i, j]
        copies.append(copy)
    return torch.cat(copies)


def explicit_scores(model: nn.Module, layer: nn.Module, x: Tensor, layout: FeatureLayout):
    """(N, *grid): the softmax of the network's rest on each masked copy of the layer's output."""

    def replace(module: nn.Module, inputs: object, output: object) -> object:
        features = output[0] if isinstance(output, tuple) else output
        copies = pixel_copies(features, layout)
        return (copies, *output[1:]) if isinstance(output, tuple) else copies

    handle = layer.register_forward_hook(replace)
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        handle.remove()
    return logits.softmax(1).T.reshape(-1, *layout.grid)


@pytest.mark.parametrize(
    ("name", "options", "shape", "layer", "layout", "gap"),
    VIDEO_MODELS,
    ids=[entry[0] for entry in VIDEO_MODELS],
)
def test_video_classifiers_are_explained_by_their_definition(
    name, options, shape, layer, layout, gap
):
    model = build_video(name, options)
    x = seeded(shape, seed=3)
    cam = ReciproCAM(model)
    explanation = cam.explain(x)
    found = cam.target_layer
    assert found.name == layer
    kind, grid, channels, prefix = layout
    assert found.layout == FeatureLayout(kind, grid, channels, prefix)
    assert cam.uses_gap_shortcut is gap
    expected = explicit_scores(model, found.module, x, found.layout)
    torch.testing.assert_close(explanation.scores[0], expected, rtol=1e-4, atol=1e-6)
    assert explanation.maps.shape == (1, *shape[2:])


def test_grad_cam_reads_a_video_network_and_pools_over_three_axes():
    model = build_video("r3d_18", {})
    x = seeded((1, 3, 16, 64, 64), seed=4)
    saved: dict[str, Tensor] = {}
    handle = model.layer4.register_forward_hook(lambda m, i, o: saved.setdefault("a", o))
    logits = model(x.clone().requires_grad_(True))
    handle.remove()
    (g,) = torch.autograd.grad(logits[0, 2], saved["a"])
    a = saved["a"].detach()
    expected = torch.relu((g.mean(dim=(2, 3, 4), keepdim=True) * a).sum(1))
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    maps = GradCAM(model, upsample=False)(x, targets=2)
    torch.testing.assert_close(maps, expected, rtol=0, atol=1e-5)


# MONAI's 3-D classifiers for one-channel 64^3 volumes: name, builder, automatic layer, grid
MONAI_MODELS = [
    (
        "densenet121",
        lambda: monai_nets.DenseNet121(spatial_dims=3, in_channels=1, out_channels=3),
        "class_layers.relu",
        (2, 2, 2),
    ),
    (
        "resnet10",
        lambda: monai_nets.resnet10(spatial_dims=3, n_input_channels=1, num_classes=3),
        "layer4",
        (4, 4, 4),
    ),
    (
        "seresnet50",
        lambda: monai_nets.SEResNet50(spatial_dims=3, in_channels=1, num_classes=3),
        "layer4",
        (2, 2, 2),
    ),
]


@pytest.mark.parametrize(
    ("name", "build", "layer", "grid"), MONAI_MODELS, ids=[entry[0] for entry in MONAI_MODELS]
)
def test_monai_volume_classifiers_are_explained_by_their_definition(name, build, layer, grid):
    torch.manual_seed(0)
    model = build().eval()
    x = seeded((1, 1, 64, 64, 64), seed=5)
    cam = ReciproCAM(model)
    explanation = cam.explain(x)
    found = cam.target_layer
    assert (found.name, found.layout.grid) == (layer, grid)
    assert cam.uses_gap_shortcut
    expected = explicit_scores(model, found.module, x, found.layout)
    torch.testing.assert_close(explanation.scores[0], expected, rtol=1e-4, atol=1e-6)
    assert explanation.maps.shape == (1, 64, 64, 64)
    assert not model.training
