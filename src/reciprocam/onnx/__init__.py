"""ONNX deployment: export a model with its maps, explain an ONNX file, add ReciproCAM to one.

- `export_onnx(model, path)`: one graph with the logits and every class's ReciproCAM map.
- `insert_reciprocam(path_in, path_out)`: the same maps added to an existing ONNX classifier,
  without PyTorch.
- `OnnxExplainer(path)`: explain with such a file on onnxruntime.
"""

from .export import ExplainedModel, export_onnx
from .insert import insert_reciprocam
from .metadata import ExportMetadata
from .runtime import OnnxExplainer

__all__ = ["ExplainedModel", "ExportMetadata", "OnnxExplainer", "export_onnx", "insert_reciprocam"]
