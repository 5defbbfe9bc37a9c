"""ViT-ReciproCAM: the definition, the exact fast path, token layouts, errors and lifecycle."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from helpers import assert_unchanged, seeded, snapshot
from timm.models.deit import VisionTransformerDistilled
from timm.models.vision_transformer import VisionTransformer as TimmViT
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer as TorchvisionViT
from transformers import ViTConfig, ViTForImageClassification
from vit_oracle import explicit_vit_scores, timm_pieces, torchvision_pieces, transformers_pieces

from reciprocam import LayerError, ModelError, OptionError, TargetError, ViTReciproCAM

TINY = {"embed_dim": 64, "depth": 3, "num_heads": 4, "num_classes": 7}


def sharpen(head: nn.Linear) -> None:
    """Random head weights large enough for distinct class scores (some libraries init zeros)."""
    torch.manual_seed(1)
    nn.init.normal_(head.weight, std=0.5)


def tiny_torchvision() -> nn.Module:
    torch.manual_seed(0)
    model = TorchvisionViT(64, 16, 3, 4, 64, 128, num_classes=7).eval()
    sharpen(model.heads.head)
    return model


def tiny_timm(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    kind = VisionTransformerDistilled if kwargs.pop("distilled", False) else TimmViT
    options = {"img_size": 64, "patch_size": 16, **TINY, **kwargs}
    model = kind(**options).eval()
    sharpen(model.head)
    return model


def tiny_transformers() -> nn.Module:
    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128,
        image_size=64, patch_size=16, num_labels=7,
    )  # fmt: skip
    model = ViTForImageClassification(config).eval()
    sharpen(model.classifier)
    return model


FAMILIES = {
    "torchvision": (tiny_torchvision, torchvision_pieces),
    "timm": (tiny_timm, timm_pieces),
    "transformers": (tiny_transformers, transformers_pieces),
}
OPTIONS = [
    {},
    {"mask": "token", "cls_token": False},
    {"block": 0, "mask_residual": True},
    {"block": 1, "score": "logit", "mask": "token"},
]


def assert_scores_close(actual, expected, tolerance=1e-5):
    scale = max(1.0, float(expected.abs().max()))
    torch.testing.assert_close(actual, expected, rtol=0, atol=tolerance * scale)


@pytest.mark.parametrize(
    "options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "paper"
)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_both_paths_match_the_definition(family, options):
    make, pieces = FAMILIES[family]
    model = make()
    x = seeded((2, 3, 64, 64))
    expected = explicit_vit_scores(pieces(model), x, (4, 4), 1, **options)
    generic = ViTReciproCAM(model, fast_path=False, **options)
    explanation = generic.explain(x)
    assert not generic.uses_fast_path
    assert explanation.scores.shape == (2, 7, 4, 4)
    assert_scores_close(explanation.scores, expected)
    fast = ViTReciproCAM(model, **options)
    assert_scores_close(fast.explain(x).scores, expected)
    assert fast.uses_fast_path  # torchvision, timm and Hugging Face blocks alike


@pytest.mark.parametrize(
    ("options", "grid", "prefix"),
    [
        ({"distilled": True}, (4, 4), 2),
        ({"reg_tokens": 4}, (4, 4), 5),
        ({"img_size": (64, 96)}, (4, 6), 1),
        ({"init_values": 0.1, "qkv_bias": False}, (4, 4), 1),  # LayerScale, no qkv bias
        ({"global_pool": "avg"}, (4, 4), 1),  # the head reads every token
    ],
    ids=["distilled", "registers", "non-square", "layer-scale", "average-pool"],
)
@pytest.mark.parametrize("block", [-1, 1])
def test_timm_token_layouts_match_the_definition(options, grid, prefix, block):
    model = tiny_timm(**options)
    x = seeded((2, 3, 64 * grid[0] // 4, 64 * grid[1] // 4), seed=2)
    expected = explicit_vit_scores(timm_pieces(model), x, grid, prefix, block=block)
    for fast_path in (True, False):
        cam = ViTReciproCAM(model, block=block, fast_path=fast_path)
        assert_scores_close(cam.explain(x).scores, expected)
        assert (cam.grid.prefix, cam.grid.grid) == (prefix, tuple(grid))


# Real-size models at 224x224: the fast path equals the generic batched path.
REAL = [
    ("vit_b_16", {}),
    ("vit_b_16", {"mask": "token", "cls_token": False}),
    ("timm:vit_small_patch16_224", {}),
    ("timm:vit_small_patch16_224", {"mask": "token", "cls_token": False, "mask_residual": True}),
    ("timm:deit_small_patch16_224", {}),
    ("timm:deit_small_distilled_patch16_224", {"cls_token": False}),
    ("timm:vit_small_patch16_224@224x320", {}),
]


def real_model(name: str) -> tuple[nn.Module, tuple[int, int]]:
    torch.manual_seed(0)
    if not name.startswith("timm:"):
        model = torchvision.models.get_model(name, weights=None).eval()
        sharpen(model.heads.head)
        return model, (224, 224)
    name, _, size = name.removeprefix("timm:").partition("@")
    shape = tuple(int(v) for v in size.split("x")) if size else (224, 224)
    model = timm.create_model(name, pretrained=False, img_size=shape).eval()
    sharpen(model.head)
    return model, shape


@pytest.mark.parametrize(("name", "options"), REAL, ids=[f"{n}-{len(o)}" for n, o in REAL])
def test_fast_path_equals_generic_path_on_real_sizes(name, options):
    model, (height, width) = real_model(name)
    x = seeded((1, 3, height, width), seed=3)
    fast, generic = (
        ViTReciproCAM(model, **options),
        ViTReciproCAM(model, fast_path=False, **options),
    )
    for score in ("logit", "softmax"):
        fast.score = generic.score = score
        a, b = fast.explain(x), generic.explain(x)
        torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=1e-4)
        torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=1e-4)
    assert fast.uses_fast_path
    assert fast.grid.grid == (height // 16, width // 16)
    assert a.maps.shape == (1, height, width)


def test_batches_and_batch_sizes_give_the_same_maps():
    model = tiny_timm(reg_tokens=1)
    x = seeded((3, 3, 64, 64), seed=4)
    for fast_path in (True, False):
        for block in (-1, 0):
            reference = ViTReciproCAM(model, block=block, fast_path=fast_path).explain(x)
            for batch_size in (1, 5, 16, 100, "all"):
                cam = ViTReciproCAM(model, block=block, fast_path=fast_path, batch_size=batch_size)
                assert_scores_close(cam.explain(x).scores, reference.scores, 1e-6)
            alone = ViTReciproCAM(model, block=block, fast_path=fast_path).explain(x[1:2])
            assert_scores_close(alone.scores[0], reference.scores[1], 1e-6)


def test_maps_are_normalised_upsampled_target_maps():
    model = tiny_torchvision()
    x = seeded((2, 3, 64, 64), seed=5)
    explanation = ViTReciproCAM(model).explain(x, targets=[2, 5])
    low = explanation.class_maps[torch.arange(2), torch.tensor([2, 5])]
    assert float(low.amin()) == 0.0
    assert float(low.amax()) == 1.0
    expected = torch.nn.functional.interpolate(low[:, None], size=(64, 64), mode="bilinear")
    torch.testing.assert_close(explanation.maps, expected[:, 0].clamp(0, 1))
    assert ViTReciproCAM(model, upsample=False)(x).shape == (2, 4, 4)


def test_target_layer_by_block_or_layernorm_name():
    model = tiny_timm()
    x = seeded((1, 3, 64, 64))
    expected = ViTReciproCAM(model, block=1).explain(x).scores
    for spec in ("blocks.1", "blocks.1.norm1", model.blocks[1], model.blocks[1].norm1):
        cam = ViTReciproCAM(model, spec)
        assert_scores_close(cam.explain(x).scores, expected, 0)
        assert str(cam.target_layer) == "blocks.1.norm1"
    cam = ViTReciproCAM(tiny_torchvision())
    cam(x)
    assert str(cam.target_layer) == "encoder.layers.encoder_layer_2.ln_1"


def test_errors():
    with pytest.raises(
        ModelError,
        match=r"ResNet is not a supported vision transformer; ViT-ReciproCAM supports"
        r" torchvision VisionTransformer, timm",
    ):
        ViTReciproCAM(torchvision.models.resnet18())
    with pytest.raises(
        OptionError, match=r"block 3 is out of range: the model has 3 blocks \(0 to 2"
    ):
        ViTReciproCAM(tiny_timm(), block=3)
    with pytest.raises(
        LayerError,
        match=r"'blocks.1.mlp' is neither a transformer block nor a block's first LayerNorm;"
        r" give one such as 'blocks.2'",
    ):
        ViTReciproCAM(tiny_timm(), "blocks.1.mlp")
    with pytest.raises(OptionError, match=r"mask must be 'gaussian' or 'token', not 'pixel'"):
        ViTReciproCAM(tiny_timm(), mask="pixel")
    with pytest.raises(
        OptionError, match=r"score must be 'softmax', 'logit' or 'sigmoid', not 'prob'"
    ):
        ViTReciproCAM(tiny_timm(), score="prob")


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("fast_path", [True, False])
def test_the_model_is_left_unchanged(family, fast_path):
    model = FAMILIES[family][0]().train()
    model.get_submodule(next(n for n, _ in model.named_modules() if n)).eval()
    before = snapshot(model)
    cam = ViTReciproCAM(model, fast_path=fast_path, batch_size=3)
    cam(seeded((2, 3, 64, 64)))
    with pytest.raises(TargetError, match="class 7 is out of range"):
        cam(seeded((2, 3, 64, 64)), targets=7)
    assert_unchanged(model, before)
