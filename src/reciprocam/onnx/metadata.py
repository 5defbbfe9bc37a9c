"""What an exported file says about itself: method, target layer, preprocessing, class names.

Stored as JSON in the ONNX model's `metadata_props` under "reciprocam", so any ONNX tool shows
it and `reciprocam explain --onnx` needs nothing but the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from torchvision.transforms import InterpolationMode

from ..errors import ModelError
from ..zoo import Preprocessing

KEY = "reciprocam"


@dataclass(frozen=True)
class ExportMetadata:
    """The method and layer of an exported explanation, and how to feed the graph photos."""

    method: str
    target_layer: str
    options: dict[str, Any] = field(default_factory=dict)
    preprocessing: Preprocessing | None = None
    categories: tuple[str, ...] | None = None

    def to_json(self) -> str:
        preprocessing = self.preprocessing
        return json.dumps(
            {
                "method": self.method,
                "target_layer": self.target_layer,
                "options": self.options,
                "preprocessing": None
                if preprocessing is None
                else {
                    "resize": preprocessing.resize,
                    "crop": preprocessing.crop,
                    "mean": list(preprocessing.mean),
                    "std": list(preprocessing.std),
                    "interpolation": preprocessing.interpolation.value,
                },
                "categories": None if self.categories is None else list(self.categories),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ExportMetadata:
        try:
            data = json.loads(text)
            given = data["preprocessing"]
            preprocessing = (
                None
                if given is None
                else Preprocessing(
                    resize=int(given["resize"]),
                    crop=int(given["crop"]),
                    mean=tuple(float(v) for v in given["mean"]),  # type: ignore[arg-type]
                    std=tuple(float(v) for v in given["std"]),  # type: ignore[arg-type]
                    interpolation=InterpolationMode(given["interpolation"]),
                )
            )
            categories = data["categories"]
            return cls(
                method=str(data["method"]),
                target_layer=str(data["target_layer"]),
                options=dict(data["options"]),
                preprocessing=preprocessing,
                categories=None if categories is None else tuple(str(c) for c in categories),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise ModelError(f"the file's reciprocam metadata is unreadable: {error}") from None

    def write_to(self, model: Any) -> None:
        """Set (or replace) the entry in an `onnx.ModelProto`'s metadata."""
        for entry in list(model.metadata_props):
            if entry.key == KEY:
                model.metadata_props.remove(entry)
        entry = model.metadata_props.add()
        entry.key, entry.value = KEY, self.to_json()
