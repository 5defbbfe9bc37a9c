"""Add ReciproCAM to an existing ONNX classifier: a second output with every class's map.

The target is a spatial tensor T (B, C, H, W) through which alone the input reaches the logits
(a cut of the graph). The inserted branch makes the B*K masked copies of T (K = H*W, copy k keeps
position k), runs a copy of the head (the nodes between T and the logits) on them, and turns the
(B*K, N) scores into min-max normalised (B, N, H, W) maps, the output `saliency_maps`:

    T (B,C,H,W) -> Unsqueeze (B,1,C,H,W) * masks (1,K,1,H,W) -> Reshape (B*K,C,H,W) -> head copy
      -> Softmax -> Reshape (B,K,N) -> Transpose (B,N,K) -> Reshape (B,N,H,W) -> min-max per map

When the head starts with global average pooling, each copy is fed as its pooled (C, 1, 1)
vector, F[:, k] * sum(M_k) / K, which is exact (ReciproCAM's GAP shortcut). Only onnx and numpy
are used: no PyTorch model is needed.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LayerError, ModelError, first_line
from ..files import write_atomically
from ..options import one_of
from .export import OUTPUT_NAMES, require_onnx
from .metadata import ExportMetadata

_PREFIX = "reciprocam/"
_GAUSSIAN_3X3 = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float64) / 16


def position_masks(height: int, width: int, mask: str) -> np.ndarray:
    """(K, H, W) masks, row k = i*W + j: one-hot at (i, j), or the 3x3 Gaussian clipped there."""
    positions = height * width
    one_hot = np.eye(positions).reshape(positions, height, width)
    if mask == "pixel":
        return one_hot
    padded = np.pad(one_hot, ((0, 0), (1, 1), (1, 1)))
    blurred = np.zeros_like(one_hot)
    for a in range(3):
        for b in range(3):
            blurred += _GAUSSIAN_3X3[a, b] * padded[:, a : a + height, b : b + width]
    return blurred


@dataclass(frozen=True)
class _Graph:
    """Who produces and who consumes each tensor of an ONNX graph, and the known shapes."""

    nodes: list[Any]
    producer: dict[str, int]
    consumers: dict[str, list[int]]
    shapes: dict[str, list[int | str | None]]
    types: dict[str, int]  # onnx.TensorProto element types
    input_name: str

    @classmethod
    def of(cls, model: Any) -> _Graph:
        onnx = require_onnx()
        graph = model.graph
        inferred = onnx.shape_inference.infer_shapes(model).graph
        shapes: dict[str, list[int | str | None]] = {}
        types: dict[str, int] = {}
        for info in [*inferred.value_info, *inferred.input, *inferred.output]:
            tensor = info.type.tensor_type
            if info.type.HasField("tensor_type") and tensor.HasField("shape"):
                shapes[info.name] = [
                    d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                    for d in tensor.shape.dim
                ]
                types[info.name] = tensor.elem_type
        initializers = {i.name for i in graph.initializer}
        inputs = [i.name for i in graph.input if i.name not in initializers]
        if len(inputs) != 1:
            raise ModelError(f"the graph has {len(inputs)} inputs; an image classifier has one")
        producer: dict[str, int] = {}
        consumers: dict[str, list[int]] = {}
        for index, node in enumerate(graph.node):
            for name in node.output:
                producer[name] = index
            for name in node.input:
                consumers.setdefault(name, []).append(index)
        return cls(list(graph.node), producer, consumers, shapes, types, inputs[0])

    def upstream(self, tensor: str, cut: str = "") -> set[int]:
        """The nodes `tensor` depends on, not looking past the tensor `cut`."""
        found: set[int] = set()
        stack = [tensor]
        while stack:
            name = stack.pop()
            index = self.producer.get(name)
            if name == cut or index is None or index in found:
                continue
            found.add(index)
            stack.extend(self.nodes[index].input)
        return found

    def reaches_input(self, tensor: str, cut: str) -> bool:
        """Whether `tensor` depends on the graph input other than through `cut`."""
        return tensor == self.input_name or any(
            self.input_name in self.nodes[index].input for index in self.upstream(tensor, cut)
        )

    def downstream(self, tensor: str) -> set[int]:
        """The nodes that depend on `tensor`."""
        found: set[int] = set()
        stack = list(self.consumers.get(tensor, []))
        while stack:
            index = stack.pop()
            if index in found:
                continue
            found.add(index)
            for name in self.nodes[index].output:
                stack.extend(self.consumers.get(name, []))
        return found

    def spatial(self, tensor: str) -> tuple[int, int, int] | None:
        """(C, H, W) if `tensor` is a (B, C, H, W) map with fixed C, H, W and H, W > 1."""
        shape = self.shapes.get(tensor)
        if shape is None or len(shape) != 4:
            return None
        channels, height, width = shape[1:]
        if not all(isinstance(d, int) and d > 0 for d in (channels, height, width)):
            return None
        assert isinstance(channels, int)
        assert isinstance(height, int)
        assert isinstance(width, int)
        return (channels, height, width) if height > 1 and width > 1 else None


def _find_target(graph: _Graph, logits: str, target_node: str | None) -> str:
    """The target tensor: the named one, or the last spatial tensor that is a cut."""
    if target_node is not None:
        by_node = {node.name: node.output[0] for node in graph.nodes if node.name and node.output}
        tensor: str = by_node.get(target_node, target_node)
        if tensor not in graph.producer:
            names = [*by_node, *graph.producer]
            close = difflib.get_close_matches(target_node, names, n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise LayerError(f"the graph has no node or tensor named '{target_node}'{hint}")
        if graph.spatial(tensor) is None:
            raise LayerError(
                f"'{target_node}' outputs {graph.shapes.get(tensor, 'an unknown shape')}, not a"
                " (batch, channels, height, width) map with fixed sizes above 1"
            )
        if graph.reaches_input(logits, tensor):
            raise LayerError(
                f"the logits depend on the input through other paths than '{target_node}'; choose"
                " a node all of the input's information passes through"
            )
        return tensor
    for node in reversed(graph.nodes):
        for output in node.output:
            if graph.spatial(output) and not graph.reaches_input(logits, output):
                return str(output)
    raise LayerError(
        "found no spatial (batch, channels, height, width) node through which alone the input"
        " reaches the logits; give target_node, or explain a model with a convolutional"
        " feature map"
    )


class _Builder:
    """New nodes and constants under the `reciprocam/` prefix, for the given opset."""

    def __init__(self, opset: int) -> None:
        self.onnx = require_onnx()
        self.opset = opset
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0

    def constant(self, name: str, values: np.ndarray) -> str:
        full = _PREFIX + name
        self.initializers.append(self.onnx.numpy_helper.from_array(values, full))
        return full

    def node(self, op: str, inputs: Iterable[str], **attributes: Any) -> str:
        self._count += 1
        output = f"{_PREFIX}{op.lower()}_{self._count}"
        self.nodes.append(
            self.onnx.helper.make_node(
                op, list(inputs), [output], name=f"{_PREFIX}{op}_{self._count}", **attributes
            )
        )
        return output

    def reduce(self, op: str, tensor: str, axes: list[int]) -> str:
        """ReduceMin/ReduceMax keeping dims (axes: an input from opset 18, an attribute before)."""
        if self.opset >= 18:
            axes_name = self.constant(f"axes_{self._count}", np.array(axes, dtype=np.int64))
            return self.node(op, [tensor, axes_name], keepdims=1)
        return self.node(op, [tensor], axes=axes, keepdims=1)

    def shape(self, name: str, dims: list[int]) -> str:
        return self.constant(name, np.array(dims, dtype=np.int64))


def _is_global_average_pool(node: Any, onnx: Any, constants: dict[str, np.ndarray]) -> bool:
    if node.op_type == "GlobalAveragePool":
        return True
    if node.op_type != "ReduceMean":
        return False
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if attributes.get("keepdims", 1) != 1:
        return False
    axes = attributes.get("axes")
    if axes is None and len(node.input) > 1:
        axes = constants.get(node.input[1])
    return axes is not None and sorted(int(a) % 4 for a in axes) == [2, 3]


def insert_reciprocam(
    path_in: str | Path,
    path_out: str | Path,
    target_node: str | None = None,
    *,
    score: str = "softmax",
    mask: str = "pixel",
) -> Path:
    """Write a copy of the ONNX classifier `path_in` with ReciproCAM maps as a second output.

    Args:
        path_in: an ONNX image classifier with one input and (B, N) logits as its first output.
        path_out: the file to write (atomically).
        target_node: the node (or tensor) name of the feature map to explain; None takes the
            last (B, C, H, W) tensor through which alone the input reaches the logits.
        score: "softmax" (the paper), "logit" or "sigmoid" (multi-label).
        mask: "pixel" (the paper) or "gaussian" (the 3x3 mask).

    Raises LayerError when no such spatial tensor exists or the named one is not a cut, and
    ModelError for files that are not a single-input classifier.
    """
    one_of("score", score, ("softmax", "logit", "sigmoid"))
    one_of("mask", mask, ("pixel", "gaussian"))
    onnx = require_onnx()
    source = Path(path_in)
    if not source.is_file():
        raise ModelError(f"no ONNX file at {source}")
    try:
        model = onnx.load(str(source))
        onnx.checker.check_model(model)
    except Exception as error:  # protobuf and checker errors have no common type
        raise ModelError(f"{source} is not a valid ONNX model: {first_line(error)}") from None
    if any(output.name == OUTPUT_NAMES[1] for output in model.graph.output):
        raise ModelError(f"{source} already has a saliency_maps output")
    opset = next(
        (entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 0
    )
    if opset < 13:
        raise ModelError(f"{source} uses opset {opset}; re-export it with opset 13 or later")
    graph = _Graph.of(model)
    logits = model.graph.output[0].name
    logits_shape = graph.shapes.get(logits)
    if logits_shape is None or len(logits_shape) != 2 or not isinstance(logits_shape[1], int):
        raise ModelError(
            f"the first output '{logits}' has shape {logits_shape}, not (batch, classes) logits"
        )
    classes = logits_shape[1]
    target = _find_target(graph, logits, target_node)
    spatial = graph.spatial(target)
    assert spatial is not None  # checked by _find_target
    channels, height, width = spatial
    positions = height * width
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(graph.types[target]))
    constants = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    builder = _Builder(opset)
    masks = position_masks(height, width, mask)

    head = graph.downstream(target) & graph.upstream(logits)
    first = [i for i in sorted(head) if target in graph.nodes[i].input]
    renamed: dict[str, str] = {}
    skipped: set[int] = set()
    if (
        len(first) == 1
        and len(graph.consumers[target]) == 1
        and _is_global_average_pool(graph.nodes[first[0]], onnx, constants)
    ):
        # GAP of copy k is F[:, k] * sum(M_k) / K: feed (B*K, C, 1, 1) vectors, skip the pooling.
        mass = masks.reshape(positions, -1).sum(axis=1) / positions
        vectors = builder.node(
            "Reshape", [target, builder.shape("vectors", [-1, channels, positions])]
        )
        vectors = builder.node("Transpose", [vectors], perm=[0, 2, 1])
        weighted = builder.node(
            "Mul", [vectors, builder.constant("mass", mass.reshape(positions, 1).astype(dtype))]
        )
        pooled = builder.node("Reshape", [weighted, builder.shape("pooled", [-1, channels, 1, 1])])
        renamed[graph.nodes[first[0]].output[0]] = pooled
        skipped.add(first[0])
    else:
        expanded = builder.node("Unsqueeze", [target, builder.shape("unsqueeze_axes", [1])])
        weights = builder.constant(
            "masks", masks.reshape(1, positions, 1, height, width).astype(dtype)
        )
        masked = builder.node("Mul", [expanded, weights])
        renamed[target] = builder.node(
            "Reshape", [masked, builder.shape("copies", [-1, channels, height, width])]
        )

    prologue = len(builder.nodes)

    input_batch = graph.shapes.get(graph.input_name, [None])[0]
    copies = []
    for index in sorted(head - skipped):
        node = onnx.NodeProto()
        node.CopyFrom(graph.nodes[index])
        node.name = _PREFIX + (node.name or f"node_{index}")
        for position, name in enumerate(node.input):
            node.input[position] = renamed.get(name, name)
        if node.op_type == "Reshape" and isinstance(input_batch, int):
            node.input[1] = _batch_free_shape(node.input[1], input_batch, constants, builder)
        for position, name in enumerate(node.output):
            renamed[name] = node.output[position] = _PREFIX + name
        copies.append(node)

    scores = renamed[logits]
    if score == "sigmoid" or (score == "softmax" and classes == 1):  # see class_probabilities
        scores = builder.node("Sigmoid", [scores])
    elif score == "softmax":
        scores = builder.node("Softmax", [scores], axis=-1)
    by_position = builder.node(
        "Reshape", [scores, builder.shape("by_position", [-1, positions, classes])]
    )
    by_class = builder.node("Transpose", [by_position], perm=[0, 2, 1])
    maps = builder.node("Reshape", [by_class, builder.shape("maps", [-1, classes, height, width])])
    low = builder.reduce("ReduceMin", maps, [2, 3])
    spread = builder.node("Sub", [builder.reduce("ReduceMax", maps, [2, 3]), low])
    tiny = builder.constant("tiny", np.array(np.finfo(dtype).tiny, dtype=dtype))
    builder.node("Div", [builder.node("Sub", [maps, low]), builder.node("Max", [spread, tiny])])
    builder.nodes[-1].output[0] = OUTPUT_NAMES[1]

    model.graph.node.extend([*builder.nodes[:prologue], *copies, *builder.nodes[prologue:]])
    model.graph.initializer.extend(builder.initializers)
    model.graph.output.append(
        onnx.helper.make_tensor_value_info(
            OUTPUT_NAMES[1],
            onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype)),
            [input_batch if input_batch is not None else "batch", classes, height, width],
        )
    )
    ExportMetadata(
        method="ReciproCAM", target_layer=target, options={"score": score, "mask": mask}
    ).write_to(model)
    destination = Path(path_out)
    write_atomically(destination, lambda file: _save(model, file))
    return destination


def _batch_free_shape(
    shape: str, batch: int, constants: dict[str, np.ndarray], builder: _Builder
) -> str:
    """A Reshape's constant target shape with a fixed batch `batch` first, made -1 for copies."""
    values = constants.get(shape)
    if values is None or values.ndim != 1 or values.size == 0 or int(values[0]) != batch:
        return shape
    if -1 in values.tolist():
        raise ModelError(
            "the head reshapes to a fixed batch size; export the model with a dynamic batch"
        )
    return builder.shape(f"batch_free_{shape}", [-1, *values[1:].tolist()])


def _save(model: Any, file: Path) -> None:
    onnx = require_onnx()
    onnx.checker.check_model(model)
    onnx.save_model(model, str(file))
