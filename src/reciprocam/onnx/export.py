"""Export a classifier with its ReciproCAM explanation as one ONNX graph.

The graph takes a (B, 3, H, W) batch (B dynamic) and returns two outputs:

    logits          (B, N)        the model's own output
    saliency_maps   (B, N, h, w)  every class's map at the target layer's resolution, each
                                  min-max normalised to [0, 1] (a constant map gives zeros)

It is the explainer's own computation with every masked copy in one pass (`batch_size="all"`),
traced by `torch.onnx.export`, so what runs in onnxruntime is what runs in PyTorch. The file's
metadata records the method, its options, the target layer and, when given, the preprocessing
and class names, which `reciprocam explain --onnx` reads.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._model import evaluation_mode, reading_output
from ..errors import ModelError, OptionError, first_line
from ..explainer import normalize_maps
from ..files import write_atomically
from ..layers import LayerSpecs
from ..methods import ReciproCAM, ViTReciproCAM
from ..names import canonical_name
from ..registry import explainer as registry_explainer
from ..registry import method_for
from ..targets import Classes
from ..zoo import Preprocessing
from .metadata import ExportMetadata

INPUT_NAME = "input"
OUTPUT_NAMES = ("logits", "saliency_maps")
# The opset the exporter writes by default in this torch, and the oldest it writes (it cannot
# convert to older ones); onnxruntime 1.18 and later run it.
_OPSET = 18

Explainable = ReciproCAM | ViTReciproCAM


class ExplainedModel(nn.Module):
    """A model and its ReciproCAM in one forward: x -> (logits (B, N), maps (B, N, h, w)).

    The explainer is resolved on `example` (target layer, the GAP shortcut or the ViT fast path,
    the token weights), so the forward pass is a fixed sequence of tensor operations that
    traces with any batch size.
    """

    def __init__(self, explainer: Explainable, example: Tensor) -> None:
        super().__init__()
        if explainer.batch_size != "all":
            raise OptionError('an exported explainer runs every copy in one pass: batch_size="all"')
        self.model = explainer.model
        self._explainer = explainer
        explainer.explain(example)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        with reading_output(self._explainer.output):
            logits, _, scores = self._explainer._target_scores(x, Classes("all"))
        return logits, normalize_maps(scores)


def build_explainer(
    model: nn.Module, method: str, target_layer: LayerSpecs, options: dict[str, Any]
) -> Explainable:
    """ReciproCAM or ViT-ReciproCAM ("reciprocam" picks the one that fits the model)."""
    name = method_for(canonical_name(method), model)
    if name not in ("reciprocam", "vit-reciprocam"):
        raise OptionError(
            "only reciprocam and vit-reciprocam can be exported (they need no gradients),"
            f" not {name}"
        )
    built = registry_explainer(name, model, target_layer, batch_size="all", **options)
    assert isinstance(built, ReciproCAM | ViTReciproCAM)
    return built


def export_onnx(
    model: nn.Module,
    path: str | Path,
    method: str = "reciprocam",
    target_layer: LayerSpecs = None,
    input_shape: Sequence[int] = (1, 3, 224, 224),
    *,
    preprocessing: Preprocessing | None = None,
    categories: Sequence[str] | None = None,
    opset: int = _OPSET,
    **options: Any,
) -> Path:
    """Write `model` with its ReciproCAM maps of every class as one ONNX file; return its path.

    Args:
        model: a classifier returning (B, N) logits; it is left as it was (mode, hooks, grads).
        path: the .onnx file to write (atomically: no half-written file on errors).
        method: "reciprocam" (ViT-ReciproCAM on a vision transformer) or "vit-reciprocam".
        target_layer: as for the explainer (None: automatic).
        input_shape: (B, 3, H, W) of the inputs; H and W are fixed in the graph, B is dynamic.
        preprocessing: stored in the metadata for `reciprocam explain --onnx`.
        categories: the class names, stored in the metadata likewise.
        opset: the ONNX opset, 18 (the default) or newer.
        options: the method's options (score, mask, cls_token, mask_residual, block, ...).
    """
    if len(input_shape) != 4 or not all(isinstance(s, int) and s > 0 for s in input_shape):
        raise OptionError(
            f"input_shape must be (batch, channels, height, width), not {input_shape}"
        )
    if "batch_size" in options:
        raise OptionError("batch_size does not apply to an export: the graph runs one pass")
    newest = require_onnx().defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not _OPSET <= opset <= newest:
        raise OptionError(
            f"opset must be from {_OPSET} (the oldest torch's exporter writes) to {newest} (the"
            f" newest the installed onnx knows), not {opset!r}"
        )
    explainer = build_explainer(model, method, target_layer, options)
    parameter = next(model.parameters(), None)
    like = parameter if parameter is not None else torch.empty(0)
    # A batch of 2: the tracer would fix a batch of 1 as a constant.
    example = torch.randn((2, *input_shape[1:]), generator=torch.Generator().manual_seed(0)).to(
        device=like.device, dtype=like.dtype
    )
    with evaluation_mode(model):
        explained = ExplainedModel(explainer, example)
        program = _trace(explained, example, opset)
    assert explainer.target_layer is not None  # resolved on the example
    metadata = ExportMetadata(
        method=type(explainer).__name__,
        target_layer=str(explainer.target_layer),
        options={"score": explainer.score, "mask": explainer.mask},
        preprocessing=preprocessing,
        categories=tuple(categories) if categories is not None else None,
    )
    graph = program.model_proto
    written = next((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")), None)
    if written != opset:  # the exporter converts between versions, and may fall back
        raise ModelError(f"the exporter wrote opset {written}, not {opset}; export with opset 18")
    metadata.write_to(graph)
    target = Path(path)
    write_atomically(target, lambda file: _save(graph, file))
    return target


def _trace(explained: ExplainedModel, example: Tensor, opset: int) -> Any:
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        # The exporter reports its own progress and deprecations; none concern the user.
        warnings.simplefilter("ignore")
        try:
            return torch.onnx.export(
                explained,
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                dynamic_shapes=({0: batch},),
                opset_version=opset,
                verbose=False,
                report=False,
            )
        except Exception as error:  # the exporter raises many types; the cause is kept
            raise ModelError(
                f"the model could not be exported to ONNX: {first_line(error)}"
            ) from error


def require_onnx() -> Any:
    """The onnx package, or a ModelError that says how to install it."""
    try:
        import onnx
    except ImportError:
        raise ModelError(
            "ONNX export and editing need onnx: pip install 'reciprocam[onnx]'"
        ) from None
    return onnx


def _save(graph: Any, file: Path) -> None:
    onnx = require_onnx()
    onnx.checker.check_model(graph, full_check=True)
    onnx.save_model(graph, str(file))
