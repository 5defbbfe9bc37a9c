"""Every method on 3-D feature grids (video clips, volumes) against its definition, written out.

The tiny 3-D networks below have a known structure; each expected value is computed here with
plain loops, our own hooks and autograd calls and F.interpolate, never with the library's code.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from helpers import error_message, seeded
from torch import nn

from reciprocam import (
    CAM,
    RISE,
    AblationCAM,
    EigenCAM,
    EigenGradCAM,
    FullGrad,
    GradCAM,
    GradCAMPlusPlus,
    GuidedBackprop,
    GuidedGradCAM,
    HiResCAM,
    InputError,
    LayerCAM,
    ReciproCAM,
    ScoreCAM,
    SmoothGradCAMPlusPlus,
    XGradCAM,
)
from reciprocam.layout import FeatureLayout, follows_input, read_layout
from reciprocam.methods.rise import MaskDraws

# The 3x3x3 Gaussian, written out: 8 at the centre, 4 on faces, 2 on edges, 1 at corners / 64.
GAUSSIAN_3D = {
    (u, v, w): 2 ** (3 - abs(u) - abs(v) - abs(w)) / 64
    for u, v, w in itertools.product((-1, 0, 1), repeat=3)
}


class Tiny3D(nn.Module):
    """stem (Conv3d, stride 1x2x2) -> ReLU -> block (Conv3d + ReLU) -> `head`."""

    def __init__(self, head: str = "gap", channels: int = 3, classes: int = 5) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(
            nn.Conv3d(channels, 4, 3, stride=(1, 2, 2), padding=1), nn.BatchNorm3d(4), nn.ReLU()
        )
        self.block = nn.Sequential(nn.Conv3d(4, 6, 3, padding=1), nn.ReLU())
        self.head = head
        grid = 4 * 4 * 4
        self.fc = nn.Linear(6 * grid if head == "flatten" else 6, classes)
        with torch.no_grad():
            self.stem[1].running_mean.uniform_(-0.2, 0.2)
            self.stem[1].running_var.uniform_(0.5, 1.5)

    def rest(self, features: torch.Tensor) -> torch.Tensor:
        """The head, from the block's (B, 6, 4, 4, 4) output."""
        if self.head == "gap":
            return self.fc(features.mean(dim=(2, 3, 4)))
        if self.head == "square":
            return self.fc(features.square().mean(dim=(2, 3, 4)))
        return self.fc(features.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rest(self.block(self.stem(x)))


@pytest.fixture(scope="module")
def clips() -> torch.Tensor:
    return seeded((2, 3, 4, 8, 8), seed=11)  # two clips of 4 frames, 8x8: a 4x4x4 grid


def minmax3(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each (T, H, W) map of a (..., T, H, W) tensor; flat maps become 0."""
    low = maps.amin(dim=(-3, -2, -1), keepdim=True)
    spread = maps.amax(dim=(-3, -2, -1), keepdim=True) - low
    return torch.where(spread > 0, (maps - low) / torch.where(spread > 0, spread, 1), 0)


def block_output(model: Tiny3D, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.block(model.stem(x))


def masked_copy(features: torch.Tensor, t: int, i: int, j: int, mask: str) -> torch.Tensor:
    """(1, C, T, H, W): the copy of one clip's features that keeps position (t, i, j)."""
    copy = torch.zeros(1, *features.shape, dtype=features.dtype)
    if mask == "pixel":
        copy[0, :, t, i, j] = features[:, t, i, j]
        return copy
    frames, height, width = features.shape[1:]
    for (u, v, w), weight in GAUSSIAN_3D.items():
        if 0 <= t + u < frames and 0 <= i + v < height and 0 <= j + w < width:
            copy[0, :, t + u, i + v, j + w] = features[:, t, i, j] * weight
    return copy


def explicit_reciprocam(model: Tiny3D, x: torch.Tensor, mask: str) -> torch.Tensor:
    """(B, N, T, H, W) softmax of the head on every masked copy, one copy at a time."""
    features = block_output(model, x)
    frames, height, width = features.shape[2:]
    maps = []
    with torch.no_grad():
        for b in range(x.shape[0]):
            scores = [
                model.rest(masked_copy(features[b], t, i, j, mask))[0].softmax(0)
                for t in range(frames)
                for i in range(height)
                for j in range(width)
            ]
            maps.append(torch.stack(scores, dim=1).view(-1, frames, height, width))
    return torch.stack(maps)


@pytest.mark.parametrize(
    ("head", "mask"),
    [("gap", "pixel"), ("gap", "gaussian"), ("square", "pixel"), ("square", "gaussian"),
     ("flatten", "pixel"), ("flatten", "gaussian")],
)  # fmt: skip
def test_reciprocam_masks_every_position_of_a_3d_grid(clips, head, mask):
    model = Tiny3D(head).eval()
    cam = ReciproCAM(model, "block", mask=mask, upsample=False)
    explanation = cam.explain(clips)
    expected = explicit_reciprocam(model, clips, mask)
    torch.testing.assert_close(explanation.scores, expected, rtol=1e-5, atol=1e-6)
    # The maps are the target's scores min-max normalised (which magnifies the scores'
    # rounding by 1 / their range, so they are compared with the scores they come from).
    picked = explanation.scores[torch.arange(2), explanation.targets]
    torch.testing.assert_close(explanation.maps, minmax3(picked), rtol=0, atol=1e-6)
    assert cam.uses_gap_shortcut is (head == "gap")
    assert cam.uses_flatten_shortcut is (head == "flatten" and mask == "pixel")


def test_maps_are_upsampled_trilinearly_to_the_clip(clips):
    model = Tiny3D().eval()
    explanation = ReciproCAM(model, "block").explain(clips)
    raw = explicit_reciprocam(model, clips, "pixel")[torch.arange(2), explanation.targets]
    expected = F.interpolate(minmax3(raw)[:, None], size=(4, 8, 8), mode="trilinear")[:, 0]
    torch.testing.assert_close(explanation.maps, expected.clamp(0, 1), rtol=0, atol=1e-5)
    assert explanation.maps.shape == (2, 4, 8, 8)


def test_the_automatic_layer_and_its_layout_on_a_3d_network(clips):
    cam = ReciproCAM(Tiny3D().eval())
    cam(clips)
    assert cam.target_layer.name == "block"
    assert cam.target_layer.layout == FeatureLayout("channels_first", (4, 4, 4), 6)
    assert str(cam.target_layer.layout) == "NCDHW 4x4x4, 6 channels"


def test_3d_layouts_are_read_from_the_model():
    # A 3-D grid's time (or depth) axis has a stride of its own; (H, W) share one.
    assert follows_input((2, 7, 7), (16, 112, 112))  # r3d_18's layer4: time / 8, space / 16
    assert follows_input((32, 7, 7), (16, 112, 112)) is False  # more frames than the clip
    assert follows_input((8, 4, 3), (16, 64, 64)) is False  # H and W share one stride
    last = read_layout((1, 8, 7, 7, 768), (16, 224, 224), "channels_last", None, "norm")
    assert last == FeatureLayout("channels_last", (8, 7, 7), 768)
    # MViT's last tokens: a class token and 8x7x7 positions (not 2x14x14, which fits too)
    tokens = read_layout((1, 1 + 392, 768), (16, 224, 224), None, None, "blocks.15")
    assert tokens == FeatureLayout("tokens", (8, 7, 7), 768, prefix=1)


def activations_and_gradients(model, x, targets):
    """The block's (B, C, T, H, W) output and d logit[target] / d output, by our own hook."""
    saved = {}
    handle = model.block.register_forward_hook(lambda m, i, o: saved.setdefault("a", o))
    logits = model(x.clone().requires_grad_(True))
    handle.remove()
    score = logits.gather(1, targets[:, None]).sum()
    (gradient,) = torch.autograd.grad(score, saved["a"])
    return saved["a"].detach(), gradient


def gradient_formulas(a, g):
    """Each gradient CAM's map from its paper, sums over all three grid axes."""
    axes = (2, 3, 4)
    total = a.sum(dim=axes, keepdim=True)
    alpha = torch.nan_to_num(g**2 / (2 * g**2 + total * g**3), nan=0.0, posinf=0.0, neginf=0.0)
    return {
        GradCAM: torch.relu((g.mean(dim=axes, keepdim=True) * a).sum(1)),
        HiResCAM: torch.relu((g * a).sum(1)),
        XGradCAM: torch.relu(
            (torch.nan_to_num((g * a).sum(axes, keepdim=True) / total) * a).sum(1)
        ),
        LayerCAM: torch.relu((torch.relu(g) * a).sum(1)),
        GradCAMPlusPlus: torch.relu(((alpha * torch.relu(g)).sum(axes, keepdim=True) * a).sum(1)),
    }


@pytest.mark.parametrize("method", [GradCAM, HiResCAM, XGradCAM, LayerCAM, GradCAMPlusPlus])
def test_gradient_cams_pool_over_time_and_space(clips, method):
    model = Tiny3D("square").eval()
    targets = torch.tensor([1, 3])
    a, g = activations_and_gradients(model, clips, targets)
    expected = gradient_formulas(a, g)[method]
    maps = method(model, "block", upsample=False)(clips, targets)
    torch.testing.assert_close(maps, minmax3(expected), rtol=0, atol=1e-5)


def test_grad_cam_matches_captum_on_a_3d_layer(clips):
    from captum.attr import LayerGradCam

    model = Tiny3D("square").eval()
    expected = LayerGradCam(model, model.block).attribute(clips, target=2, relu_attributions=True)
    maps = GradCAM(model, "block", upsample=False)(clips, targets=2)
    torch.testing.assert_close(maps, minmax3(expected[:, 0].detach()), rtol=0, atol=1e-5)


def test_smooth_grad_cam_plus_plus_on_clips(clips):
    # One sample without noise is Grad-CAM++ on a 3-D grid too.
    model = Tiny3D("square").eval()
    smooth = SmoothGradCAMPlusPlus(model, "block", samples=1, std=0.0, upsample=False)(clips)
    torch.testing.assert_close(smooth, GradCAMPlusPlus(model, "block", upsample=False)(clips))


def test_score_cam_masks_the_clip_with_trilinear_channel_masks(clips):
    model = Tiny3D("square").eval()
    a = block_output(model, clips)
    expected = []
    with torch.no_grad():
        for b in range(2):
            logits = []
            for k in range(a.shape[1]):
                up = F.interpolate(
                    a[b : b + 1, k : k + 1], size=(4, 8, 8), mode="trilinear", align_corners=True
                )
                spread = up.max() - up.min()
                mask = (up - up.min()) / spread if spread > 0 else torch.zeros_like(up)
                logits.append(model(clips[b : b + 1] * mask)[0])
            weights = torch.stack(logits).softmax(dim=0)  # (K, N)
            expected.append(torch.relu(torch.einsum("kn,kthw->nthw", weights, a[b])))
    scores = ScoreCAM(model, "block", batch_size=4, upsample=False).explain(clips).scores
    torch.testing.assert_close(scores, torch.stack(expected), rtol=1e-4, atol=1e-6)


def test_ablation_cam_zeroes_each_channel_of_a_3d_map(clips):
    model = Tiny3D("square").double().eval()
    x = clips.double()
    a = block_output(model, x)
    expected = []
    with torch.no_grad():
        for b in range(2):
            y = model(x[b : b + 1])[0]
            ablated = []
            for k in range(a.shape[1]):
                copy = a[b : b + 1].clone()
                copy[:, k] = 0
                ablated.append(model.rest(copy)[0])
            weights = (y - torch.stack(ablated)) / y
            expected.append(torch.relu(torch.einsum("kn,kthw->nthw", weights, a[b])))
    scores = AblationCAM(model, "block", batch_size=4, upsample=False).explain(x).scores
    torch.testing.assert_close(scores, torch.stack(expected))


def test_eigen_cams_project_every_position_of_the_clip(clips):
    model = Tiny3D("square").eval()
    targets = torch.tensor([0, 4])
    a, g = activations_and_gradients(model, clips, targets)
    for method, matrix in ((EigenCAM, a), (EigenGradCAM, g * a)):
        expected = []
        for b in range(2):
            samples = matrix[b].flatten(1).T.double()  # (T*H*W, C)
            centred = samples - samples.mean(dim=0)
            projection = centred @ torch.linalg.svd(centred)[2][0]
            if (projection * centred.sum(1)).sum() < 0:
                projection = -projection
            expected.append(projection.view(4, 4, 4).float())
        maps = method(model, "block", upsample=False)(clips, targets)
        torch.testing.assert_close(maps, minmax3(torch.stack(expected)), rtol=0, atol=1e-5)


def test_cam_applies_the_linear_weights_to_the_3d_map(clips):
    model = Tiny3D("gap").eval()
    a = block_output(model, clips)
    expected = torch.einsum("nc,bcthw->bnthw", model.fc.weight.detach(), a)
    scores = CAM(model, "block", upsample=False).explain(clips).scores
    torch.testing.assert_close(scores, expected)


def test_rise_draws_3d_masks(clips):
    model = Tiny3D("square").eval()
    explanation = RISE(model, masks=12, cells=2, batch_size=5, seed=4).explain(clips)
    generator = torch.Generator().manual_seed(4)
    grids = (torch.rand(12, 1, 2, 2, 2, generator=generator) < 0.5).float()
    cells = (2, 4, 4)  # ceil((4, 8, 8) / 2)
    offsets = torch.stack([torch.randint(0, c, (12,), generator=generator) for c in cells], 1)
    large = F.interpolate(grids, size=(6, 12, 12), mode="trilinear", align_corners=False)[:, 0]
    masks = torch.stack(
        [large[n, t : t + 4, i : i + 8, j : j + 8] for n, (t, i, j) in enumerate(offsets.tolist())]
    )
    torch.testing.assert_close(
        MaskDraws.draw(12, (4, 8, 8), 2, 0.5, 4).masks(0, 12, (4, 8, 8)), masks
    )
    with torch.no_grad():
        for b in range(2):
            weights = model(clips[b] * masks[:, None]).softmax(1)[:, explanation.targets[b]]
            expected = torch.einsum("n,nthw->thw", weights, masks) / (12 * 0.5)
            torch.testing.assert_close(explanation.maps[b], minmax3(expected), rtol=0, atol=1e-5)


def test_fullgrad_sums_input_and_3d_bias_gradients(clips):
    model = Tiny3D("square").eval()
    outputs = {}
    modules = {"conv": model.stem[0], "bn": model.stem[1], "block": model.block[0]}
    hooks = [
        m.register_forward_hook(lambda m, i, o, n=n: outputs.setdefault(n, o))
        for n, m in modules.items()
    ]
    inputs = clips.clone().requires_grad_(True)
    logits = model(inputs)
    for hook in hooks:
        hook.remove()
    targets = logits.argmax(1)
    grads = torch.autograd.grad(
        logits.gather(1, targets[:, None]).sum(), [inputs, *(outputs[n] for n in modules)]
    )

    def psi(t):
        t = t.abs()
        t = t - t.flatten(1).min(1).values.view(-1, 1, 1, 1, 1)
        return t / (t.flatten(1).max(1).values.view(-1, 1, 1, 1, 1) + 1e-6)

    bn = model.stem[1]
    bn_bias = bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps)
    expected = psi(grads[0] * clips).sum(1)
    biases = (model.stem[0].bias, bn_bias, model.block[0].bias)
    for gradient, bias in zip(grads[1:], biases, strict=True):
        term = psi(gradient * bias.detach().view(1, -1, 1, 1, 1))
        expected = expected + F.interpolate(
            term, size=(4, 8, 8), mode="trilinear", align_corners=True
        ).sum(1)
    maps = FullGrad(model)(clips)
    torch.testing.assert_close(maps, minmax3(expected.detach()), rtol=0, atol=1e-5)


def test_guided_backprop_matches_captum_on_clips(clips):
    from captum.attr import GuidedBackprop as CaptumGuidedBackprop

    model = Tiny3D("square").eval()
    expected = CaptumGuidedBackprop(model).attribute(clips, target=1)
    explanation = GuidedBackprop(model).explain(clips, targets=1)
    torch.testing.assert_close(explanation.attributions, expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(explanation.maps, minmax3(expected.abs().amax(1)), rtol=0, atol=1e-6)


def test_guided_grad_cam_uses_the_trilinear_grad_cam(clips):
    model = Tiny3D("square").eval()
    guided = GuidedBackprop(model).explain(clips, targets=2).attributions
    cam = GradCAM(model, "block", upsample=False)(clips, targets=2)
    up = F.interpolate(cam[:, None], size=(4, 8, 8), mode="trilinear", align_corners=False)
    expected = (guided * up).abs().amax(1)
    maps = GuidedGradCAM(model, "block")(clips, targets=2)
    torch.testing.assert_close(maps, minmax3(expected), rtol=0, atol=1e-5)


def test_a_volume_with_one_channel(clips):
    # A CT-like volume: one channel, a (D, H, W) grid; the same code path as a clip.
    model = Tiny3D("gap", channels=1).eval()
    volume = seeded((1, 1, 4, 8, 8), seed=12)
    maps = ReciproCAM(model)(volume)
    features = block_output(model, volume)
    with torch.no_grad():
        target = model(volume).argmax(1)
        expected = torch.stack(
            [
                model.fc(features[0, :, t, i, j] / 64).softmax(0)[target[0]]
                for t, i, j in itertools.product(range(4), range(4), range(4))
            ]
        ).view(1, 4, 4, 4)  # the GAP of a one-position copy is its vector / K
    up = F.interpolate(minmax3(expected)[:, None], size=(4, 8, 8), mode="trilinear")[:, 0]
    torch.testing.assert_close(maps, up.clamp(0, 1), rtol=0, atol=1e-5)


def test_inputs_of_other_ranks_are_refused_in_one_line():
    model = Tiny3D().eval()
    message = error_message(InputError, ReciproCAM(model), seeded((3, 8, 8)))
    assert "frames or depth" in message
    assert "x.unsqueeze(0)" in message
    message = error_message(InputError, ReciproCAM(model), seeded((1, 1, 3, 4, 8, 8)))
    assert "(batch, channels, height, width)" in message


def test_vit_reciprocam_refuses_clips_in_one_line():
    from torchvision.models import VisionTransformer

    from reciprocam import ViTReciproCAM

    vit = VisionTransformer(32, 8, 2, 2, 16, 32, num_classes=5).eval()
    message = error_message(InputError, ViTReciproCAM(vit), seeded((1, 3, 2, 32, 32)))
    assert message.startswith("ViT-ReciproCAM explains image transformers")
    assert "ReciproCAM" in message
