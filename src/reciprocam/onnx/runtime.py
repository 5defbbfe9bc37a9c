"""Explaining with an explainable ONNX file on onnxruntime: no PyTorch model at run time.

An explainable file has the outputs `logits` (B, N) and `saliency_maps` (B, N, h, w): what
`export_onnx` writes and what `insert_reciprocam` adds to a plain classifier.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._model import check_input
from ..errors import InputError, ModelError, TargetError, first_line
from ..explainer import Explanation, Targets, upsample_maps
from ..targets import as_target
from .export import OUTPUT_NAMES
from .metadata import KEY, ExportMetadata

MAPS = OUTPUT_NAMES[1]


def _runtime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ModelError(
            "explaining an ONNX file needs onnxruntime: pip install 'reciprocam[onnx]'"
        ) from None
    return onnxruntime


class OnnxExplainer:
    """`explain(x, targets)` on an explainable ONNX file, as `Explainer.explain` does on a model.

    Args:
        path: the .onnx file.
        providers: onnxruntime execution providers (default: CPU).
    """

    def __init__(self, path: str | Path, providers: list[str] | None = None) -> None:
        runtime = _runtime()
        path = Path(path)
        if path.is_dir():
            raise ModelError(f"{path} is a folder; give the .onnx file in it")
        if not path.is_file():
            raise ModelError(f"no ONNX file at {path}")
        try:
            self.session = runtime.InferenceSession(
                str(path), providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own untyped errors
            raise ModelError(
                f"{path} is not a model onnxruntime can run: {first_line(error)}"
            ) from None
        outputs = [output.name for output in self.session.get_outputs()]
        if MAPS not in outputs or len(outputs) != 2:
            raise ModelError(
                f"{path} has the outputs {outputs}, not logits and saliency_maps; make an"
                " explainable file with `reciprocam export` or `reciprocam insert`"
            )
        # The logits: `logits` in an exported file, the classifier's own output name otherwise.
        self.output_names = [next(name for name in outputs if name != MAPS), MAPS]
        logits_shape = self.session.get_outputs()[outputs.index(self.output_names[0])].shape
        if len(logits_shape) != 2 or not isinstance(logits_shape[1], int):
            raise ModelError(f"{path}'s logits have shape {logits_shape}, not (batch, classes)")
        self.classes: int = logits_shape[1]
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(f"{path} takes {len(inputs)} inputs; an image classifier takes one")
        self.input_name = inputs[0].name
        self.input_shape = tuple(inputs[0].shape)
        custom = self.session.get_modelmeta().custom_metadata_map
        self.metadata = ExportMetadata.from_json(custom[KEY]) if KEY in custom else None

    @property
    def target_layer(self) -> str | None:
        """The explained layer, as the file's metadata names it."""
        return None if self.metadata is None else self.metadata.target_layer

    def explain(self, x: Tensor | np.ndarray, targets: Targets = None) -> Explanation:
        """Maps (B, H, W) at the input size, targets, logits and every class's map."""
        batch = check_input(torch.as_tensor(x) if isinstance(x, np.ndarray) else x, None)
        fixed = self.input_shape[1:]
        if any(isinstance(a, int) and a != b for a, b in zip(fixed, batch.shape[1:], strict=True)):
            raise InputError(
                f"the graph takes inputs of shape (batch, {', '.join(map(str, fixed))}), got"
                f" {tuple(batch.shape)}"
            )
        target = as_target(targets)
        values = batch.detach().to("cpu", torch.float32).numpy()
        logits, class_maps = (
            torch.from_numpy(np.asarray(output))
            for output in self.session.run(self.output_names, {self.input_name: values})
        )
        bound = target.bind(logits)
        if not bound.reads_classes or bound.every().count != self.classes:
            raise TargetError(
                "an explainable ONNX graph holds the maps of its classes: explain classes"
                " (an int, one per image, a list per image or TopClasses)"
            )
        maps, chosen = bound.pick(class_maps), bound.indices
        if maps.shape[-2:] != batch.shape[-2:]:
            maps = upsample_maps(maps, (batch.shape[2], batch.shape[3]))
        if not bound.stacked:
            maps, chosen = maps[:, 0], chosen[:, 0]
        multilabel = self.metadata is not None and self.metadata.options.get("score") == "sigmoid"
        return Explanation(
            maps=maps,
            targets=chosen,
            logits=logits,
            class_maps=class_maps,
            multilabel=multilabel,
            target=bound,
        )

    def __call__(self, x: Tensor | np.ndarray, targets: Targets = None) -> Tensor:
        return self.explain(x, targets).maps

    def close(self) -> None:
        """Nothing to release; present so that it is used like an Explainer."""

    def __enter__(self) -> OnnxExplainer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
