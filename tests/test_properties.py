"""Property-based tests: any batch, size, dtype, memory format and targets give every method
valid maps in [0, 1], or the library's own error; no other exception escapes.

The model is checked unchanged after every call by the autouse fixture in conftest.py.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torchvision.models import VisionTransformer

import reciprocam
from reciprocam import ReciproCAMError

CLASSES = 5
CNN_METHODS = [name for name in reciprocam.methods() if name != "vit-reciprocam"]
# Few masks and large batches keep the forward-heavy methods fast; the mathematics is the same.
FAST = {"rise": {"masks": 6, "batch_size": 6}, "smooth-gradcam++": {"samples": 2}}
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
EXAMPLES = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def tiny_cnn() -> nn.Module:
    """Stride 4, pooling head: small enough for hundreds of examples per method."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 12, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(12, CLASSES),
    )
    return model.eval()


def tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    model = VisionTransformer(32, 8, 2, 2, 16, 32, num_classes=CLASSES).eval()
    nn.init.normal_(model.heads.head.weight, std=0.5)
    return model


MODELS = {
    (family, dtype): (tiny_cnn() if family == "cnn" else tiny_vit()).to(dtype)
    for family in ("cnn", "vit")
    for dtype in DTYPES
}


def targets_for(batch: int) -> st.SearchStrategy[object]:
    """None, one class for all (sometimes out of range), or one per image."""
    one = st.integers(-1, CLASSES)
    return st.one_of(st.none(), one, st.lists(one, min_size=batch, max_size=batch))


def explain_and_check(
    method: str, model: nn.Module, x: torch.Tensor, targets: object, **options: object
) -> None:
    """The property: valid maps, or the library's one-line error; nothing else escapes.

    Maps are required where the call is valid and the feature map has more than one position
    (inputs of 5 pixels or more at the tiny CNN's stride 4); invalid targets must be refused.
    """
    valid = targets is None or all(
        0 <= t < CLASSES for t in (targets if isinstance(targets, list) else [targets])
    )
    try:
        maps = reciprocam.explainer(method, model, **FAST.get(method, {}), **options)(x, targets)
    except ReciproCAMError as error:
        assert "\n" not in str(error)  # noqa: PT017 (either outcome is a valid property)
        if valid and min(x.shape[2:]) >= 5:
            pytest.fail(f"{method} refused a valid call: {error}")
        return
    assert valid, f"{method} accepted targets {targets!r}"
    assert maps.shape == (x.shape[0], x.shape[2], x.shape[3])
    assert not maps.requires_grad
    assert bool(torch.isfinite(maps).all()), f"{method}: NaN or infinite values"
    assert 0 <= float(maps.min()) <= float(maps.max()) <= 1


@pytest.mark.parametrize("method", CNN_METHODS)
@EXAMPLES
@given(
    data=st.data(),
    batch=st.integers(1, 3),
    height=st.integers(1, 41),
    width=st.integers(1, 41),
    dtype=st.sampled_from(DTYPES),
    channels_last=st.booleans(),
)
def test_every_cnn_method_on_any_input(
    method: str,
    data: st.DataObject,
    batch: int,
    height: int,
    width: int,
    dtype: torch.dtype,
    channels_last: bool,
) -> None:
    x = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(height))
    x = x.to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    targets = data.draw(targets_for(batch), label="targets")
    explain_and_check(method, MODELS["cnn", dtype], x, targets)


@EXAMPLES
@given(
    data=st.data(),
    batch=st.integers(1, 3),
    dtype=st.sampled_from(DTYPES),
    fast_path=st.booleans(),
    cls_token=st.booleans(),
)
def test_vit_reciprocam_on_any_input(
    data: st.DataObject, batch: int, dtype: torch.dtype, fast_path: bool, cls_token: bool
) -> None:
    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch)).to(dtype)
    targets = data.draw(targets_for(batch), label="targets")
    options = {"fast_path": fast_path, "cls_token": cls_token}
    explain_and_check("vit-reciprocam", MODELS["vit", dtype], x, targets, **options)
