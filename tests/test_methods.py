"""The baseline methods against their definitions, written out independently in the tests.

Each test hooks the model itself, takes gradients with its own autograd call, and applies the
paper's formula with plain tensor code; hand-derived values on tiny models where they exist.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from helpers import assert_unchanged, build, seeded, snapshot
from oracle import minmax
from torch import nn

import reciprocam
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
    LayerCAM,
    ModelError,
    OptionError,
    ScoreCAM,
    SmoothGradCAMPlusPlus,
    XGradCAM,
)
from reciprocam.methods.rise import MaskDraws


class TinyNet(nn.Module):
    """conv (3 -> 4 channels) -> ReLU -> `head`: a small model with known structure."""

    def __init__(self, head: str = "gap") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = head
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.relu(self.conv(x))
        if self.head == "gap":
            return self.fc(features.mean(dim=(2, 3)))
        return self.fc(features.square().mean(dim=(2, 3)))  # y = W . mean(A^2) + b


class SmallResNet(nn.Module):
    """Strided stem, one residual block (its `bn` bypassed by the skip), GAP, linear: 8 channels."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU())
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.block = nn.ReLU()
        self.fc = nn.Linear(8, 5)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.2, 0.2)
            self.fc.weight.mul_(5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stem = self.stem(x)
        return self.fc(self.block(self.bn(self.conv(stem)) + stem).mean(dim=(2, 3)))


def activations_and_gradients(model, layer, x, targets):
    """The layer's output and d(sum of target logits)/d(output), by the test's own hooks."""
    store = {}

    def hook(module, inputs, output):
        store["a"] = output

    handle = layer.register_forward_hook(hook)
    logits = model(x.clone().requires_grad_(True))
    handle.remove()
    # autograd.grad, unlike backward(), leaves the shared model's .grad alone.
    (gradient,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), store["a"])
    return store["a"].detach(), gradient.detach(), logits.detach()


def test_cam_is_the_classifier_weights_times_the_features():
    model = TinyNet().eval()
    x = seeded((2, 3, 8, 8))
    explanation = CAM(model, "relu", upsample=False).explain(x, targets=[0, 2])
    features = model.relu(model.conv(x)).detach()
    expected = torch.einsum("nc,bchw->bnhw", model.fc.weight.detach(), features)
    torch.testing.assert_close(explanation.scores, expected)
    torch.testing.assert_close(explanation.maps, minmax(expected[[0, 1], [0, 2]]))


def test_cam_refuses_a_head_that_is_not_pooling_and_one_linear_layer():
    with pytest.raises(ModelError, match=r"CAM needs the output of 'relu' to reach the logits"):
        CAM(TinyNet(head="square").eval(), "relu")(seeded((1, 3, 8, 8)))
    with pytest.raises(ModelError, match="use Grad-CAM"):
        CAM(build("vgg11"), "features")(seeded((1, 3, 64, 64)))
    # A linear layer that takes the pooled width but is not the classifier (a ViT's MLP, 96 ->
    # 192, beside a 4-class head) is passed over, not compared with the logits.
    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=96, mlp_dim=192,
        num_classes=4,
    ).eval()  # fmt: skip
    torch.nn.init.normal_(vit.heads.head.weight)  # torchvision starts it at zero
    with pytest.raises(ModelError, match="use Grad-CAM"):
        CAM(vit)(seeded((1, 3, 32, 32)))


def test_grad_cam_by_hand_on_a_squared_pooling_head():
    # y_c = sum_k W[c,k] mean(A_k^2) + b: dy_c/dA_k = 2 W[c,k] A_k / K, so Grad-CAM's weight is
    # w_k = 2 W[c,k] mean(A_k) / K and the map is ReLU(sum_k w_k A_k).
    model = TinyNet(head="square").eval()
    x = seeded((2, 3, 6, 6), seed=1)
    features = model.relu(model.conv(x)).detach()
    positions = 36
    weights = 2 * model.fc.weight.detach()[1] * features.mean(dim=(2, 3)) / positions
    expected = torch.relu(torch.einsum("bc,bchw->bhw", weights, features))
    maps = GradCAM(model, "relu", upsample=False)(x, targets=1)
    torch.testing.assert_close(maps, minmax(expected))


def paper_formulas(a, g):
    """Each gradient method's map from the paper, for (B, C, h, w) activations and gradients."""
    total = a.sum(dim=(2, 3), keepdim=True)
    alpha = g**2 / (2 * g**2 + total * g**3)
    alpha = torch.nan_to_num(alpha, nan=0.0, posinf=0.0, neginf=0.0)
    return {
        GradCAM: torch.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1)),
        HiResCAM: torch.relu((g * a).sum(1)),
        XGradCAM: torch.relu(
            (torch.nan_to_num((g * a).sum(dim=(2, 3), keepdim=True) / total) * a).sum(1)
        ),
        LayerCAM: torch.relu((torch.relu(g) * a).sum(1)),
        GradCAMPlusPlus: torch.relu(
            ((alpha * torch.relu(g)).sum(dim=(2, 3), keepdim=True) * a).sum(1)
        ),
    }


@pytest.mark.parametrize("method", [GradCAM, HiResCAM, XGradCAM, LayerCAM, GradCAMPlusPlus])
def test_gradient_methods_follow_their_papers(resnet18, method):
    x = seeded((2, 3, 96, 96), seed=2)
    targets = torch.tensor([5, 900])
    a, g, _ = activations_and_gradients(resnet18, resnet18.layer4, x, targets)
    expected = paper_formulas(a, g)[method]
    maps = method(resnet18, "layer4", upsample=False)(x, targets)
    torch.testing.assert_close(maps, minmax(expected), rtol=0, atol=1e-5)


def test_smooth_grad_cam_plus_plus_averages_gradient_powers_over_noisy_inputs(resnet18):
    x = seeded((2, 3, 64, 64), seed=3)
    cam = SmoothGradCAMPlusPlus(resnet18, "layer4", samples=3, std=0.2, seed=7, upsample=False)
    explanation = cam.explain(x)
    targets = explanation.targets
    noise = torch.randn((6, 3, 64, 64), generator=torch.Generator().manual_seed(7)) * 0.2
    moments = []
    for image in range(2):
        noisy = x[image] + noise[3 * image : 3 * image + 3]
        _, g, _ = activations_and_gradients(
            resnet18, resnet18.layer4, noisy, targets[image].repeat(3)
        )
        moments.append([(g**p).mean(0) for p in (1, 2, 3)])
    d1, d2, d3 = (torch.stack([m[p] for m in moments]) for p in range(3))
    a, _, _ = activations_and_gradients(resnet18, resnet18.layer4, x, targets)
    alpha = torch.nan_to_num(d2 / (2 * d2 + a.sum(dim=(2, 3), keepdim=True) * d3))
    expected = torch.relu(((alpha * torch.relu(d1)).sum(dim=(2, 3), keepdim=True) * a).sum(1))
    torch.testing.assert_close(explanation.maps, minmax(expected), rtol=0, atol=1e-5)
    # one sample without noise is Grad-CAM++
    plain = SmoothGradCAMPlusPlus(resnet18, "layer4", samples=1, std=0.0, upsample=False)(x)
    torch.testing.assert_close(plain, GradCAMPlusPlus(resnet18, "layer4", upsample=False)(x))


def test_score_cam_follows_algorithm_1():
    model = SmallResNet().eval()
    x = seeded((2, 3, 32, 32), seed=4)
    a, _, _ = activations_and_gradients(model, model.block, x, torch.tensor([0, 0]))
    expected = []
    with torch.no_grad():
        for image in range(2):
            logits = []
            for k in range(a.shape[1]):
                up = F.interpolate(
                    a[image : image + 1, k : k + 1],
                    size=(32, 32),
                    mode="bilinear",
                    align_corners=True,
                )
                spread = up.max() - up.min()
                mask = (up - up.min()) / spread if spread > 0 else torch.zeros_like(up)
                logits.append(model(x[image : image + 1] * mask)[0])
            weights = torch.stack(logits).softmax(dim=0)  # (K, N): softmax over channels
            expected.append(torch.relu(torch.einsum("kn,khw->nhw", weights, a[image])))
    explanation = ScoreCAM(model, "block", batch_size=3, upsample=False).explain(x)
    torch.testing.assert_close(explanation.scores, torch.stack(expected), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("layer", ["block", "bn"])  # head only / whole network (skip bypasses bn)
def test_ablation_cam_zeroes_each_channel(layer):
    # float64: the weights divide small logit differences, which float32 rounding would blur
    model = SmallResNet().double().eval()
    x = seeded((2, 3, 32, 32), seed=5).double()
    module = model.get_submodule(layer)
    a, _, logits = activations_and_gradients(model, module, x, torch.tensor([0, 0]))
    expected = []
    with torch.no_grad():
        for image in range(2):
            ablated = []
            for k in range(a.shape[1]):

                def zero(m, i, output, k=k):
                    output = output.clone()
                    output[:, k] = 0
                    return output

                handle = module.register_forward_hook(zero)
                ablated.append(model(x[image : image + 1])[0])
                handle.remove()
            y, y_k = logits[image], torch.stack(ablated)
            weights = (y - y_k) / y  # (K, N)
            expected.append(torch.relu(torch.einsum("kn,khw->nhw", weights, a[image])))
    cam = AblationCAM(model, layer, batch_size=3, upsample=False)
    torch.testing.assert_close(cam.explain(x).scores, torch.stack(expected))
    assert cam._head_only[layer] is (layer == "block")


def test_eigen_cams_project_on_the_first_principal_component(resnet18):
    x = seeded((2, 3, 64, 64), seed=6)
    targets = torch.tensor([1, 2])
    a, g, _ = activations_and_gradients(resnet18, resnet18.layer4, x, targets)
    for method, matrix in ((EigenCAM, a), (EigenGradCAM, g * a)):
        samples = matrix.flatten(2).transpose(1, 2).double()  # (B, K, C)
        centred = samples - samples.mean(dim=1, keepdim=True)
        expected = []
        for image in range(2):
            _, _, vh = torch.linalg.svd(centred[image])
            projection = centred[image] @ vh[0]
            if (projection * centred[image].sum(1)).sum() < 0:  # positive with the channel sum
                projection = -projection
            expected.append(projection.view(2, 2).float())
        maps = method(resnet18, "layer4", upsample=False)(x, targets)
        torch.testing.assert_close(maps, minmax(torch.stack(expected)), rtol=0, atol=1e-5)


def test_eigen_cam_is_class_agnostic(resnet18):
    x = seeded((1, 3, 64, 64))
    cam = EigenCAM(resnet18)
    torch.testing.assert_close(cam(x, targets=3), cam(x, targets=700))


def test_rise_is_the_mask_average_weighted_by_probabilities(resnet18):
    x = seeded((2, 3, 32, 32), seed=8)
    explanation = RISE(resnet18, masks=20, cells=4, batch_size=6, seed=3).explain(x)
    masks = MaskDraws.draw(20, (32, 32), 4, 0.5, seed=3).masks(0, 20, (32, 32))
    with torch.no_grad():
        for image in range(2):
            probabilities = resnet18(x[image] * masks[:, None]).softmax(1)
            weights = probabilities[:, explanation.targets[image]]
            expected = torch.einsum("n,nhw->hw", weights, masks) / (20 * 0.5)
            torch.testing.assert_close(explanation.maps[image], minmax(expected), atol=1e-5, rtol=0)


def test_rise_masks():
    draws = MaskDraws.draw(500, (32, 48), 4, 0.5, seed=0)
    masks = draws.masks(0, 500, (32, 48))
    assert masks.shape == (500, 32, 48)
    assert float(masks.min()) >= 0.0
    assert float(masks.max()) <= 1.0
    assert abs(float(masks.mean()) - 0.5) < 0.03  # cells are kept with probability 0.5
    assert torch.equal(masks[100:200], draws.masks(100, 200, (32, 48)))
    # the cells are 8x12 pixels, offset by less than a cell: each mask is a smooth grid
    assert int(draws.offsets[:, 0].max()) < 8
    assert int(draws.offsets[:, 1].max()) < 12
    assert torch.equal(MaskDraws.draw(500, (32, 48), 4, 0.5, seed=0).grids, draws.grids)


def test_rise_is_reproducible_and_batch_size_free(resnet18):
    x = seeded((1, 3, 32, 32))
    first = RISE(resnet18, masks=12, batch_size=5, seed=1)(x)
    torch.testing.assert_close(RISE(resnet18, masks=12, batch_size=12, seed=1)(x), first)
    assert not torch.allclose(RISE(resnet18, masks=12, seed=2)(x), first)


def test_fullgrad_sums_input_and_bias_gradients():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    )  # fmt: skip
    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
    model.eval()
    x = seeded((2, 3, 8, 8), seed=9)
    outputs = {}
    hooks = [
        model[i].register_forward_hook(lambda m, inp, out, i=i: outputs.setdefault(i, out))
        for i in (0, 1, 3)
    ]
    inputs = x.clone().requires_grad_(True)
    logits = model(inputs)
    for hook in hooks:
        hook.remove()
    targets = logits.argmax(1)
    grads = torch.autograd.grad(
        logits.gather(1, targets[:, None]).sum(), [inputs, outputs[0], outputs[1], outputs[3]]
    )

    def psi(t):
        t = t.abs()
        low = t.flatten(1).min(1).values.view(-1, 1, 1, 1)
        t = t - low
        return t / (t.flatten(1).max(1).values.view(-1, 1, 1, 1) + 1e-6)

    bn = model[1]
    bn_bias = bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps)
    expected = psi(grads[0] * x).sum(1)
    for gradient, bias in (
        (grads[1], model[0].bias),
        (grads[2], bn_bias),
        (grads[3], model[3].bias),
    ):
        term = psi(gradient * bias.detach()[None, :, None, None])
        expected = expected + F.interpolate(
            term, size=(8, 8), mode="bilinear", align_corners=True
        ).sum(1)
    torch.testing.assert_close(FullGrad(model)(x), minmax(expected.detach()), rtol=0, atol=1e-5)


def test_guided_backprop_by_hand():
    # y = sum(w * relu(x)): the gradient is w where x > 0; guided keeps only its positive part.
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.relu = nn.ReLU()
            self.w = nn.Parameter(torch.tensor([[[[1.0, -2.0], [3.0, 0.5]]]]))

        def forward(self, x):
            return (self.w * self.relu(x)).flatten(1).sum(1, keepdim=True)

    x = torch.tensor([[[[1.0, 1.0], [-1.0, 2.0]]]])
    explanation = GuidedBackprop(Net()).explain(x, targets=0)
    assert explanation.attributions[0, 0].tolist() == [[1.0, 0.0], [0.0, 0.5]]
    assert explanation.maps[0].tolist() == [[1.0, 0.0], [0.0, 0.5]]


def test_guided_grad_cam_multiplies_guided_backprop_by_the_upsampled_grad_cam(resnet18):
    x = seeded((1, 3, 64, 64), seed=10)
    guided = GuidedBackprop(resnet18).explain(x, targets=4).attributions
    a, g, _ = activations_and_gradients(resnet18, resnet18.layer4, x, torch.tensor([4]))
    cam = paper_formulas(a, g)[GradCAM]
    upsampled = F.interpolate(cam[:, None], size=(64, 64), mode="bilinear")
    explanation = GuidedGradCAM(resnet18, "layer4").explain(x, targets=4)
    torch.testing.assert_close(explanation.attributions, guided * upsampled, rtol=1e-4, atol=1e-7)
    expected = minmax((guided * upsampled).abs().amax(1))
    torch.testing.assert_close(explanation.maps, expected, rtol=0, atol=1e-5)


def test_several_layers_are_fused_by_their_mean_or_max(resnet18):
    x = seeded((2, 3, 64, 64), seed=11)
    singles = [GradCAM(resnet18, layer)(x) for layer in ("layer3", "layer4")]
    torch.testing.assert_close(
        GradCAM(resnet18, ["layer3", "layer4"])(x), minmax((singles[0] + singles[1]) / 2)
    )
    fused = GradCAM(resnet18, ["layer3", "layer4"], fuse="max")(x)
    torch.testing.assert_close(fused, minmax(torch.maximum(*singles)))


def test_a_vision_transformer_s_tokens_fold_into_the_patch_grid():
    from test_vit_reciprocam import tiny_timm

    model = tiny_timm(reg_tokens=2)
    x = seeded((2, 3, 64, 64), seed=12)
    cam = GradCAM(model, upsample=False)
    maps = cam(x)
    assert str(cam.target_layer) == "blocks.2.norm1"  # the last block's first LayerNorm
    assert cam.target_layer.layout.prefix == 3
    assert cam.target_layer.layout.grid == (4, 4)
    targets = model(x).argmax(1)
    tokens, grads, _ = activations_and_gradients(model, model.blocks[2].norm1, x, targets)

    def fold(t):
        return t[:, 3:].reshape(2, 4, 4, -1).permute(0, 3, 1, 2)

    a, g = fold(tokens), fold(grads)
    expected = torch.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1))
    torch.testing.assert_close(maps, minmax(expected), rtol=0, atol=1e-5)


ALL = [name for name in reciprocam.methods() if name != "vit-reciprocam"]
FAST_OPTIONS = {"rise": {"masks": 8}, "scorecam": {"batch_size": 300}}


@pytest.mark.parametrize("name", ALL)
def test_every_method_leaves_the_model_unchanged(name):
    model = build("resnet18").train()
    model.layer3.eval()
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    model.conv1.weight.requires_grad_(False)
    before = snapshot(model)
    cam = reciprocam.explainer(name, model, **FAST_OPTIONS.get(name, {}))
    maps = cam(seeded((2, 3, 64, 64)))
    assert maps.shape == (2, 64, 64)
    assert 0 <= float(maps.min()) <= float(maps.max()) <= 1
    with pytest.raises(reciprocam.TargetError):
        cam(seeded((2, 3, 64, 64)), targets=1000)
    assert_unchanged(model, before)


@pytest.mark.parametrize("name", ["gradcam", "fullgrad", "guided-backprop", "smooth-gradcam++"])
def test_inputs_made_in_inference_mode(resnet18, name):
    with torch.inference_mode():
        x = seeded((1, 3, 64, 64))
    normal = seeded((1, 3, 64, 64))
    cam = reciprocam.explainer(name, resnet18)
    torch.testing.assert_close(cam(x), cam(normal))


def test_forward_heavy_methods_keep_their_batches_bounded():
    model = SmallResNet().eval()
    sizes = []
    handle = model.register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[0]))
    try:
        x = seeded((3, 3, 32, 32))
        for cam in (
            ScoreCAM(model, "block", batch_size=3),
            RISE(model, masks=30, batch_size=7),
            AblationCAM(model, "bn", batch_size=3),  # whole-network copies
            SmoothGradCAMPlusPlus(model, "block", samples=5, batch_size=4),
        ):
            sizes.clear()
            cam(x)
            # the first pass (or two, for the layer check) holds the batch; the rest is bounded
            assert max(sizes[2:]) <= cam.batch_size, (type(cam).__name__, sizes)
            assert len(sizes) > 3
    finally:
        handle.remove()


def test_progress_bars_are_opt_in(capsys):
    model = SmallResNet().eval()
    ScoreCAM(model, "block")(seeded((1, 3, 32, 32)))
    assert "Score-CAM" not in capsys.readouterr().err
    ScoreCAM(model, "block", progress=True)(seeded((1, 3, 32, 32)))
    assert "Score-CAM: 100%" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda m: RISE(m, "layer4"), "RISE masks the input and takes no target_layer"),
        (
            lambda m: FullGrad(m, "layer4"),
            "FullGrad uses every bias layer and takes no target_layer",
        ),
        (lambda m: GuidedBackprop(m, "layer4"), "Guided Backprop works on the input and takes no"),
        (lambda m: GradCAM(m, fuse="sum"), "fuse must be 'mean' or 'max', not 'sum'"),
        (lambda m: ScoreCAM(m, batch_size=0), "batch_size must be a positive integer, not 0"),
        (lambda m: SmoothGradCAMPlusPlus(m, samples=0), "samples must be a positive integer"),
        (lambda m: RISE(m, probability=1.5), r"probability must be in \(0, 1\], not 1.5"),
    ],
)
def test_option_errors(resnet18, make, message):
    with pytest.raises(OptionError, match=message):
        make(resnet18)


def test_layer_errors_of_feature_map_methods(resnet18):
    with pytest.raises(reciprocam.LayerError, match="target_layer is an empty list"):
        GradCAM(resnet18, [])(seeded((1, 3, 64, 64)))
    with pytest.raises(
        reciprocam.LayerError, match=r"layer 'fc' outputs a tensor of shape \(1, 1000\)"
    ):
        GradCAM(resnet18, "fc")(seeded((1, 3, 64, 64)))
    with pytest.raises(
        reciprocam.LayerError, match="ReciproCAM masks one layer; give one target layer, not 2"
    ):
        reciprocam.ReciproCAM(resnet18, ["layer3", "layer4"])(seeded((1, 3, 64, 64)))
    # a bypassed layer is fine for gradient methods (pytorch-grad-cam's usual layer4[-1] choice)
    assert GradCAM(resnet18, "layer4.1.bn2")(seeded((1, 3, 64, 64))).shape == (1, 64, 64)
