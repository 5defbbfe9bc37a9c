"""Parity with the peers: pytorch-grad-cam (pgc), Captum and torchcam, method by method.

Same models, layers and targets on both sides; maps are compared at feature resolution
(`upsample=False` against the peer's per-layer map before it resizes), after the same min-max
normalisation (the peers add eps to the spread: 1e-7 in pgc, 1e-8 in torchcam, which on random
weights' small maps would be a difference of normalisation only). pgc's per-layer map is what
its `get_cam_image` returns, passed through the ReLU that `compute_cam_per_layer` applies.
Where a peer deliberately differs, the test shows that the difference is exactly that one.

Models: random-weight torchvision ResNet-18 and VGG-11 and a three-block timm ViT. Methods that
run the model once per channel (Score-CAM, Ablation-CAM) explain one small image (3x3 maps).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np
import pytest
import pytorch_grad_cam as pgc
import torch
import torch.nn.functional as F
import torchcam.methods as tc
from captum.attr import GuidedBackprop as CaptumGuidedBackprop
from captum.attr import GuidedGradCam, LayerGradCam
from helpers import build, hook_counts, seeded
from oracle import minmax
from pytorch_grad_cam.guided_backprop import GuidedBackpropReLUModel
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from reciprocam import (
    CAM,
    AblationCAM,
    EigenCAM,
    EigenGradCAM,
    FullGrad,
    GradCAM,
    GradCAMPlusPlus,
    GuidedBackprop,
    GuidedGradCAM,
    GuidedGradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    SmoothGradCAMPlusPlus,
    XGradCAM,
)

# Captum announces the backward hooks it sets on ReLU modules (and removes afterwards).
pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU:UserWarning")

TOLERANCE = 1e-4
TARGETS = [3, 7]
CNNS = ["resnet18", "vgg11"]
MODELS = [*CNNS, "vit"]


@dataclass(frozen=True)
class Case:
    """A model, its target layer and head (the last linear layer), an input batch."""

    model: nn.Module
    layer: str
    head: str
    x: Tensor
    reshape: Callable[[Tensor], Tensor] | None = None  # pgc's and torchcam's token folding

    @property
    def module(self) -> nn.Module:
        return self.model.get_submodule(self.layer)

    @property
    def targets(self) -> list[int]:
        return TARGETS[: len(self.x)]


def fold_tokens(tokens: Tensor) -> Tensor:
    """The tiny ViT's (B, 17, D) tokens without the class token, folded into (B, D, 4, 4)."""
    return tokens[:, 1:].reshape(tokens.shape[0], 4, 4, tokens.shape[2]).permute(0, 3, 1, 2)


def tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    model = VisionTransformer(
        img_size=64, patch_size=16, embed_dim=64, depth=3, num_heads=4, num_classes=10
    ).eval()
    torch.manual_seed(1)
    nn.init.normal_(model.head.weight, std=0.5)
    return model


def with_larger_gradients(case: Case) -> Case:
    """A copy whose last linear layer is 1000x larger, so every gradient is 1000x larger."""
    model = copy.deepcopy(case.model)
    with torch.no_grad():
        model.get_submodule(case.head).weight.mul_(1000)
    return replace(case, model=model)


@pytest.fixture(scope="module")
def cases() -> Iterator[dict[str, Case]]:
    cnn_input = seeded((2, 3, 128, 128))  # 4x4 maps at ResNet-18's layer4 and VGG-11's features
    shared = {
        "resnet18": Case(build("resnet18"), "layer4", "fc", cnn_input),
        "vgg11": Case(build("vgg11"), "features", "classifier.6", cnn_input),
        "vit": Case(tiny_vit(), "blocks.2.norm1", "head", seeded((2, 3, 64, 64), 1), fold_tokens),
    }
    yield shared
    # Every test shares these models: no library (ours or a peer) may leave a hook on them.
    for case in shared.values():
        assert set(hook_counts(case.model).values()) == {(0, 0, 0, 0)}


@pytest.fixture(scope="module")
def scaled(cases) -> dict[str, Case]:
    return {name: with_larger_gradients(case) for name, case in cases.items()}


@pytest.fixture(scope="module")
def per_channel(cases) -> dict[str, Case]:
    """The cases of the methods that run the model once per channel: one image, 3x3 maps."""
    return {
        "resnet18": replace(cases["resnet18"], x=seeded((1, 3, 80, 80), 2)),
        "vgg11": replace(cases["vgg11"], x=seeded((1, 3, 96, 96), 2)),
        # 512 passes of VGG-11 (its classifier alone has 120M weights) take 20 s on a CPU; its
        # first pooling's 64 channels run the same code.
        "vgg11-features.2": replace(cases["vgg11"], layer="features.2", x=seeded((1, 3, 32, 32))),
        "vit": cases["vit"],
    }


def explain(method, case: Case, targets=None, **options):
    targets = case.targets if targets is None else targets
    return method(case.model, case.layer, upsample=False, **options).explain(case.x, targets)


def assert_parity(ours: Tensor, theirs: Tensor, record_property, tolerance=TOLERANCE) -> None:
    """Same shape, non-trivial, and at most `tolerance` apart (the difference is recorded)."""
    assert ours.shape == theirs.shape
    assert theirs.abs().amax().item() > 0
    difference = (ours.double() - theirs.double()).abs().max().item()
    record_property("max_abs_difference", difference)
    assert difference <= tolerance


def assert_differs(ours: Tensor, theirs: Tensor, record_property, at_least: float) -> None:
    """A documented difference: more than `at_least` apart somewhere (the size is recorded)."""
    difference = (ours.double() - theirs.double()).abs().max().item()
    record_property("documented_difference", difference)
    assert difference > at_least


def leaf(x: Tensor) -> Tensor:
    """A copy of the input that requires gradients, as Captum's guided methods expect."""
    return x.clone().requires_grad_(True)


def per_image_scaled(attributions: Tensor, reference: Tensor) -> Tensor:
    """(B, C, H, W) attributions divided by each image's largest magnitude in `reference`."""
    return attributions / reference.abs().amax(dim=(1, 2, 3), keepdim=True)


# pytorch-grad-cam


def recording(method: type) -> type:
    """`method` keeping what `get_cam_image` gets and returns: one layer's map before pgc's
    ReLU, normalisation and resize."""

    class Recording(method):
        def get_cam_image(self, *args):
            self.activations, self.gradients = args[3], args[4]
            self.raw = super().get_cam_image(*args)
            return self.raw

    return Recording


def pgc_run(method: type, case: Case, targets=None, **settings):
    targets = case.targets if targets is None else targets
    with recording(method)(case.model, [case.module], reshape_transform=case.reshape) as cam:
        for name, value in settings.items():
            setattr(cam, name, value)
        cam(case.x, [ClassifierOutputTarget(t) for t in targets])
    return cam


def pgc_map(method: type, case: Case, targets=None, **settings) -> Tensor:
    """pgc's per-layer map: get_cam_image's output, ReLU'd as pgc does, min-max normalised."""
    raw = pgc_run(method, case, targets, **settings).raw
    return minmax(torch.from_numpy(np.maximum(raw, 0)))


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (GradCAM, pgc.GradCAM),
        (HiResCAM, pgc.HiResCAM),
        (XGradCAM, pgc.XGradCAM),
        (LayerCAM, pgc.LayerCAM),
    ],
    ids=["gradcam", "hirescam", "xgradcam", "layercam"],
)
def test_gradient_cams_match_pytorch_grad_cam(cases, model, ours, theirs, record_property):
    case = cases[model]
    assert_parity(explain(ours, case).maps, pgc_map(theirs, case), record_property)


@pytest.mark.parametrize("model", MODELS)
def test_upsampled_maps_are_pytorch_grad_cams_output_before_it_normalises_again(
    cases, model, record_property
):
    # Both resize the normalised feature-resolution map bilinearly with half-pixel centres (pgc
    # with cv2.resize); pgc then min-max normalises the resized map again, ours keeps its values,
    # whose maximum falls short of 1 where no pixel centre lands on the peak cell's centre.
    case = cases[model]
    with pgc.GradCAM(case.model, [case.module], reshape_transform=case.reshape) as cam:
        output = cam(case.x, [ClassifierOutputTarget(t) for t in case.targets])
    theirs = torch.from_numpy(output)
    maps = GradCAM(case.model, case.layer).explain(case.x, case.targets).maps
    assert_parity(minmax(maps), theirs, record_property)
    assert_differs(maps, theirs, record_property, 10 * TOLERANCE)


@pytest.mark.parametrize("model", MODELS)
def test_grad_cam_plus_plus_matches_pytorch_grad_cam_when_gradients_dwarf_its_eps(
    scaled, model, record_property
):
    case = scaled[model]
    theirs = pgc_map(pgc.GradCAMPlusPlus, case)
    assert_parity(explain(GradCAMPlusPlus, case).maps, theirs, record_property)


def pgc_plus_plus_map(activations: np.ndarray, gradients: np.ndarray, eps: float) -> Tensor:
    """pgc's GradCAMPlusPlus (get_cam_weights, then the weighted sum and ReLU), eps a parameter."""
    squared, cubed = gradients**2, gradients**3
    total = activations.sum(axis=(2, 3), keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = squared / (2 * squared + total * cubed + eps)
    alpha = np.where(gradients != 0, alpha, 0)
    weights = (np.maximum(gradients, 0) * alpha).sum(axis=(2, 3))
    return torch.from_numpy(np.maximum((weights[:, :, None, None] * activations).sum(axis=1), 0))


@pytest.mark.parametrize("model", CNNS)
def test_grad_cam_plus_plus_differs_from_pytorch_grad_cam_by_its_eps_only(
    cases, model, record_property
):
    # On random weights the gradients are 1e-3 to 1e-2, so pgc's eps = 1e-6 in alpha's
    # denominator is comparable to G^2 and changes the map; the paper's formula has no eps.
    case = cases[model]
    cam = pgc_run(pgc.GradCAMPlusPlus, case)
    ours = explain(GradCAMPlusPlus, case).maps
    # The formula as pgc writes it reproduces pgc's map...
    with_eps = pgc_plus_plus_map(cam.activations, cam.gradients, eps=1e-6)
    torch.testing.assert_close(with_eps, torch.from_numpy(np.maximum(cam.raw, 0)))
    # ...without its eps it is ours...
    without_eps = minmax(pgc_plus_plus_map(cam.activations, cam.gradients, eps=0.0))
    assert_parity(ours, without_eps, record_property)
    # ...and the eps alone moves the normalised map by 10 times the tolerance or more.
    assert_differs(ours, minmax(with_eps), record_property, 10 * TOLERANCE)


def oriented(projection: Tensor, reference: Tensor) -> Tensor:
    """Each (h, w) projection with the sign that correlates positively with `reference`."""
    p = projection - projection.mean(dim=(1, 2), keepdim=True)
    r = reference - reference.mean(dim=(1, 2), keepdim=True)
    sign = torch.where((p * r).sum(dim=(1, 2)) < 0, -1.0, 1.0)
    return projection * sign[:, None, None]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(
    ("ours", "theirs"), [(EigenCAM, pgc.EigenCAM), (EigenGradCAM, pgc.EigenGradCAM)],
    ids=["eigencam", "eigengradcam"],
)  # fmt: skip
def test_eigen_cams_match_pytorch_grad_cams_projection_up_to_its_sign(
    cases, model, ours, theirs, record_property
):
    # pgc keeps LAPACK's sign of the principal component and applies a ReLU; the paper (and
    # ours) has no ReLU, and ours orients the component. So: pgc's raw projection, sign aligned.
    case = cases[model]
    cam = pgc_run(theirs, case)
    projected = cam.activations if theirs is pgc.EigenCAM else cam.gradients * cam.activations
    projection = torch.from_numpy(get_2d_projection(projected))
    torch.testing.assert_close(projection, torch.from_numpy(cam.raw))  # pgc's per-layer map
    maps = explain(ours, case).maps
    assert_parity(maps, minmax(oriented(projection, maps)), record_property)


@pytest.mark.parametrize("model", ["resnet18", "vgg11-features.2", "vit"])
def test_score_cam_matches_pytorch_grad_cam(per_channel, model, record_property):
    # Both upsample each channel bilinearly with align_corners=True, then min-max it.
    case = per_channel[model]
    theirs = pgc_map(pgc.ScoreCAM, case, batch_size=64)
    assert_parity(explain(ScoreCAM, case, batch_size=64).maps, theirs, record_property)


@pytest.mark.parametrize("model", CNNS)
def test_ablation_cam_matches_pytorch_grad_cam_where_it_ablates_with_zero(
    per_channel, model, record_property
):
    # pgc ablates a channel with 0 when the layer's output has a 0 (after a ReLU), else with
    # min - 1e7. On the ViT's LayerNorm output it takes the latter, for the class token too
    # (ours sets the patch tokens' feature to 0, as the paper's zero ablation): no parity there.
    case = per_channel[model]
    outputs = []
    handle = case.module.register_forward_hook(
        lambda module, inputs, output: outputs.append(output)
    )
    with torch.no_grad():
        case.model(case.x)
    handle.remove()
    assert outputs[0].min() == 0
    theirs = pgc_map(pgc.AblationCAM, case, batch_size=64)
    assert_parity(explain(AblationCAM, case, batch_size=64).maps, theirs, record_property)


class BiasNet(nn.Module):
    """conv -> BN -> ReLU -> strided conv -> BN -> ReLU -> GAP -> linear: every kind of bias."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(8, 5)
        with torch.no_grad():
            for bn in (self.bn1, self.bn2):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.3, 0.3)
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        features = self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))
        return self.fc(features.mean(dim=(2, 3)))


def full_gradient_terms(model: BiasNet, x: Tensor, targets: Tensor) -> list[Tensor]:
    """FullGrad's terms, g * x then g_l * b_l per bias layer, by the test's own forward pass."""
    inputs = x.clone().requires_grad_(True)
    z1 = model.conv1(inputs)
    n1 = model.bn1(z1)
    z2 = model.conv2(model.relu1(n1))
    n2 = model.bn2(z2)
    logits = model.fc(model.relu2(n2).mean(dim=(2, 3)))
    grads = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), [inputs, z1, n1, z2, n2])

    def bn_bias(bn: nn.BatchNorm2d) -> Tensor:  # the authors' tensor_extractor.py
        return -(bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps)) + bn.bias

    biases = [model.conv1.bias, bn_bias(model.bn1), model.conv2.bias, bn_bias(model.bn2)]
    bias_terms = [g * b[None, :, None, None] for g, b in zip(grads[1:], biases, strict=True)]
    terms = [grads[0] * x, *bias_terms]
    return [term.detach() for term in terms]


def test_fullgrad_is_the_authors_formula(record_property):
    # pgc normalises each bias term per channel, the authors' code (fullgrad-saliency,
    # `_postProcess`) per image over all channels: the authors' formula is the reference.
    model = BiasNet()
    x = seeded((2, 3, 16, 16), 3)
    targets = torch.tensor([1, 4])

    def post_process(values: Tensor) -> Tensor:  # |values|, min-max per image, eps 1e-6
        values = values.abs()
        values = values - values.flatten(1).min(dim=1).values[:, None, None, None]
        return values / (values.flatten(1).max(dim=1).values[:, None, None, None] + 1e-6)

    terms = full_gradient_terms(model, x, targets)
    saliency = post_process(terms[0]).sum(dim=1)
    for term in terms[1:]:
        upsampled = F.interpolate(
            post_process(term), size=(16, 16), mode="bilinear", align_corners=True
        )
        saliency = saliency + upsampled.sum(dim=1)
    maps = FullGrad(model).explain(x, targets).maps
    assert_parity(maps, minmax(saliency), record_property)


def test_fullgrad_differs_from_pytorch_grad_cam_by_its_per_channel_normalisation(record_property):
    model = BiasNet()
    x = seeded((2, 3, 16, 16), 3)
    targets = torch.tensor([1, 4])

    def channelwise(values: Tensor) -> Tensor:  # pgc's scale_accross_batch_and_channels
        values = values.abs()
        values = values - values.amin(dim=(2, 3), keepdim=True)
        return values / (values.amax(dim=(2, 3), keepdim=True) + 1e-7)

    terms = full_gradient_terms(model, x, targets)
    saliency = channelwise(terms[0]).sum(dim=1)
    for term in terms[1:]:  # cv2.resize: bilinear with half-pixel centres
        upsampled = F.interpolate(channelwise(term), size=(16, 16), mode="bilinear")
        saliency = saliency + upsampled.sum(dim=1)
    with pgc.FullGrad(model, []) as cam:
        theirs = torch.from_numpy(cam(x, [ClassifierOutputTarget(int(t)) for t in targets]))
    assert_parity(theirs, minmax(saliency), record_property)
    assert_differs(FullGrad(model).explain(x, targets).maps, theirs, record_property, 0.05)


@pytest.mark.parametrize("model", CNNS)
def test_guided_backprop_matches_pytorch_grad_cam_and_captum(cases, model, record_property):
    case = cases[model]
    ours = GuidedBackprop(case.model).explain(case.x, case.targets).attributions
    # pgc's model swaps every ReLU module for its guided ReLU while it runs (and back for new,
    # not in-place, ReLUs), and explains one image per call: it gets a copy.
    guided = GuidedBackpropReLUModel(copy.deepcopy(case.model))
    from_pgc = torch.stack(
        [
            torch.from_numpy(guided(case.x[i : i + 1].clone(), target)).permute(2, 0, 1)
            for i, target in enumerate(case.targets)
        ]
    )
    from_captum = CaptumGuidedBackprop(case.model).attribute(leaf(case.x), target=case.targets)
    for theirs in (from_pgc, from_captum.detach()):
        assert_parity(
            per_image_scaled(ours, theirs), per_image_scaled(theirs, theirs), record_property
        )


@pytest.mark.parametrize("model", CNNS)
def test_guided_grad_cam_matches_captum(cases, model, record_property):
    case = cases[model]
    ours = GuidedGradCAM(case.model, case.layer).explain(case.x, case.targets).attributions
    theirs = GuidedGradCam(case.model, case.module).attribute(
        leaf(case.x), target=case.targets, interpolate_mode="bilinear"
    )
    theirs = theirs.detach()
    assert_parity(per_image_scaled(ours, theirs), per_image_scaled(theirs, theirs), record_property)


@pytest.mark.parametrize("model", CNNS)
def test_guided_grad_cam_plus_plus_is_captum_guided_backprop_times_pgc_grad_cam_plus_plus(
    scaled, model, record_property
):
    case = scaled[model]
    explainer = GuidedGradCAMPlusPlus(case.model, case.layer)
    ours = explainer.explain(case.x, case.targets).attributions
    cam = torch.from_numpy(np.maximum(pgc_run(pgc.GradCAMPlusPlus, case).raw, 0))
    guided = CaptumGuidedBackprop(case.model).attribute(leaf(case.x), target=case.targets)
    upsampled = F.interpolate(cam[:, None], size=case.x.shape[2:], mode="bilinear")
    theirs = guided.detach() * upsampled
    assert_parity(per_image_scaled(ours, theirs), per_image_scaled(theirs, theirs), record_property)


@pytest.mark.parametrize("model", CNNS)
def test_grad_cam_matches_captum_layer_grad_cam(cases, model, record_property):
    case = cases[model]
    attributions = LayerGradCam(case.model, case.module).attribute(
        case.x, target=case.targets, relu_attributions=True
    )
    theirs = minmax(attributions.detach()[:, 0])
    assert_parity(explain(GradCAM, case).maps, theirs, record_property)


# torchcam


def torchcam_map(method: type, case: Case, targets=None, **options) -> Tensor:
    """torchcam's map (with its ReLU where it applies one) without its eps, min-max normalised."""
    targets = case.targets if targets is None else targets
    with method(case.model, case.layer, reshape_transform=case.reshape, **options) as extractor:
        scores = case.model(case.x)
        (cam,) = extractor(class_idx=list(targets), scores=scores, normalized=False)
    return minmax(cam)


def test_cam_matches_torchcam(cases, record_property):
    case = cases["resnet18"]
    theirs = torchcam_map(tc.CAM, case, fc_layer="fc")  # no ReLU, as the paper and ours
    assert_parity(explain(CAM, case).maps, theirs, record_property)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(
    ("ours", "theirs"),
    [(GradCAM, tc.GradCAM), (XGradCAM, tc.XGradCAM), (LayerCAM, tc.LayerCAM)],
    ids=["gradcam", "xgradcam", "layercam"],
)
def test_gradient_cams_match_torchcam(cases, model, ours, theirs, record_property):
    # torchcam's LayerCAM rescales with tanh(2 * map) only in fuse_cams, when fusing layers.
    case = cases[model]
    assert_parity(explain(ours, case).maps, torchcam_map(theirs, case), record_property)


class StrideOne(nn.Module):
    """Two stride-1 convolutions: the target layer's maps have the input's size."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(8, 5)
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.relu2(self.conv2(self.relu1(self.conv1(x)))).mean(dim=(2, 3)))


def test_score_cam_matches_torchcam_and_pgc_where_upsampling_is_the_identity(record_property):
    # torchcam min-max normalises each channel before upsampling it (align_corners=False);
    # pgc and ours upsample (align_corners=True), then normalise. On ResNet-18's 4x4 layer4
    # the masks differ; at the input's own size both orders give the same masks.
    case = Case(StrideOne(), "relu2", "fc", seeded((2, 3, 12, 12), 4))
    targets = [1, 4]
    ours = explain(ScoreCAM, case, targets).maps
    with tc.ScoreCAM(case.model, case.layer) as extractor:
        with torch.no_grad():
            case.model(case.x)
        (cam,) = extractor(class_idx=targets, normalized=False)
    assert_parity(ours, minmax(cam), record_property)
    assert_parity(ours, pgc_map(pgc.ScoreCAM, case, targets), record_property)


def torchcam_smooth(case: Case) -> Tensor:
    """torchcam's Smooth Grad-CAM++ with one sample of std 1e-6: Grad-CAM++ as torchcam has it.

    torchcam draws its noise from the global generator and uses the last noisy sample's
    gradients in ReLU(G) (and its activations in the map): with one sample so close to the clean
    input, that is Grad-CAM++ of the clean input (its eps = 1e-8 is negligible at the scaled
    models' gradients).
    """
    torch.manual_seed(0)
    with tc.SmoothGradCAMpp(case.model, case.layer, num_samples=1, std=1e-6) as extractor:
        with torch.no_grad():
            case.model(case.x)  # torchcam reads the input from this call
        (cam,) = extractor(class_idx=case.targets, normalized=False)
    return minmax(cam)


def test_smooth_grad_cam_plus_plus_matches_torchcam_with_one_clean_sample(scaled, record_property):
    # ResNet-18's layer4 reaches the logits through GAP and one linear layer: its gradients are
    # the same at every position, where torchcam's alpha is the paper's (see the next test).
    case = scaled["resnet18"]
    ours = explain(SmoothGradCAMPlusPlus, case, samples=1, std=1e-6).maps
    assert_parity(ours, torchcam_smooth(case), record_property)
    assert_parity(ours, explain(GradCAMPlusPlus, case).maps, record_property)


def test_torchcam_smooth_grad_cam_plus_plus_sums_activations_times_cubed_gradients(
    scaled, record_property
):
    # The paper's (and pgc's and ours) alpha's denominator is 2 G_ij^2 + G_ij^3 sum_ab A_ab;
    # torchcam's code (not its docstring) has 2 G_ij^2 + sum_ab A_ab G_ab^3, the same only where
    # G is constant over positions. VGG-11's features reach the logits through an MLP: it is not.
    case = scaled["vgg11"]
    theirs = torchcam_smooth(case)
    cam = pgc_run(pgc.GradCAMPlusPlus, case)  # the activations and gradients, from pgc
    activations, gradients = torch.from_numpy(cam.activations), torch.from_numpy(cam.gradients)
    squared = gradients**2
    summed = (activations * gradients**3).sum(dim=(2, 3), keepdim=True)
    alpha = squared / (2 * squared + summed + 1e-8)
    weights = (alpha * gradients.relu()).sum(dim=(2, 3))
    torchcams_formula = torch.einsum("bc,bchw->bhw", weights, activations).relu()
    assert_parity(theirs, minmax(torchcams_formula), record_property)
    ours = explain(SmoothGradCAMPlusPlus, case, samples=1, std=1e-6).maps
    assert_differs(ours, theirs, record_property, 100 * TOLERANCE)


class PooledIdentity(nn.Module):
    """logits = W . GAP(A) with A the input itself: dy_c/dA_k(i, j) = W[c, k] / (h w)."""

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        self.features = nn.Identity()
        self.fc = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(weight)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


def test_torchcam_grad_cam_plus_plus_leaves_alpha_at_grad_squared():
    # A_0 = [[1, 2], [3, 4]] (sum 10), A_1 = [[4, 0], [0, 0]] (sum 4), W[0] = (8, 4) over 2x2
    # positions: G_0 = 2, G_1 = 1 everywhere. The paper's alpha = G^2 / (2 G^2 + sum(A) G^3)
    # is 4 / 88 = 1/22 and 1/6, so w = 4 * alpha * G = (4/11, 2/3) and the map
    # (4/11) A_0 + (2/3) A_1 = [[100, 24], [36, 48]] / 33, normalised [[1, 0], [3/19, 6/19]].
    # torchcam divides a boolean-mask copy of alpha (`alpha[mask].div_`), so its alpha stays
    # G^2: w = 4 * G^2 * G = (32, 4), map 32 A_0 + 4 A_1 = [[48, 64], [96, 128]].
    model = PooledIdentity(torch.tensor([[8.0, 4.0], [1.0, -1.0]]))
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[4.0, 0.0], [0.0, 0.0]]]])
    paper = torch.tensor([[[1.0, 0.0], [3 / 19, 6 / 19]]])

    maps = GradCAMPlusPlus(model, "features", upsample=False)(x, 0)
    torch.testing.assert_close(maps, paper)
    # pgc hooks the gradient of the layer's output, here the input: it must require grad.
    case = Case(model, "features", "fc", x.clone().requires_grad_(True))
    torch.testing.assert_close(pgc_map(pgc.GradCAMPlusPlus, case, [0]), paper)  # eps negligible

    inputs = x.clone().requires_grad_(True)  # the hooked output is the input itself
    with tc.GradCAMpp(model, "features") as extractor:
        (raw,) = extractor(class_idx=0, scores=model(inputs), normalized=False)
    torch.testing.assert_close(raw, torch.tensor([[[48.0, 64.0], [96.0, 128.0]]]))


def test_torchcam_grad_cam_plus_plus_weights_are_grad_squared_times_relu_grad(
    scaled, record_property
):
    # The same on ResNet-18: torchcam's map is ReLU(sum_k (sum_ij G^2 ReLU(G)) A_k).
    case = scaled["resnet18"]
    with tc.GradCAMpp(case.model, case.layer) as extractor:
        (cam,) = extractor(class_idx=case.targets, scores=case.model(case.x), normalized=False)
        activations, gradients = extractor.hook_a[0], extractor.hook_g[0]
    weights = (gradients**2 * gradients.relu()).sum(dim=(2, 3))
    buggy = torch.einsum("bc,bchw->bhw", weights, activations).relu()
    assert_parity(minmax(cam), minmax(buggy), record_property)
    assert_differs(explain(GradCAMPlusPlus, case).maps, minmax(cam), record_property, 0.05)
