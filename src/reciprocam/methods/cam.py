"""CAM (Zhou et al. 2016): the classifier's weights applied to the last feature maps.

For a network whose head is global average pooling and one linear layer (weights W, N x C),
the map of class c is M_c(x, y) = sum_k W[c, k] A_k(x, y), as in the paper (no ReLU; the bias
is a constant and disappears in normalisation). One matrix product gives every class. The head
is checked on the first call: the logits must equal W . GAP(A) + b, else CAM does not apply
(Grad-CAM generalises it to any head, and equals it on such heads).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from .._model import same_output
from ..errors import ModelError, TargetError
from ..grids import grid_axes
from ..layers import TargetLayer
from ..targets import BoundTarget, OutputIndex
from .feature_maps import FeatureMapExplainer


class CAM(FeatureMapExplainer):
    """CAM: maps of every class from the weights of a GAP + linear head."""

    uses_gradients: ClassVar[bool] = False
    _classifier: nn.Linear | None = None

    def _resolve(self, image: Tensor) -> list[TargetLayer]:
        layers = super()._resolve(image)
        if len(layers) != 1:
            raise ModelError("CAM reads one layer, the one the classifier pools; give one")
        activations, _, logits, _ = self._tapped_pass(
            layers, image, OutputIndex(0), gradients=False
        )
        pooled = activations[0].mean(dim=grid_axes(activations[0]))
        linear = [m for m in self.model.modules() if isinstance(m, nn.Linear)]
        for module in reversed(linear):
            if (
                logits.ndim == 2
                and module.in_features == pooled.shape[1]
                and module.out_features == logits.shape[1]
                and same_output(module(pooled), logits)
            ):
                self._classifier = module
                return layers
        raise ModelError(
            f"CAM needs the output of '{layers[0]}' to reach the logits through global average"
            " pooling and one linear layer (as in ResNet); this model's head is different:"
            " use Grad-CAM, which equals CAM on such heads and works on any"
        )

    def _layer_maps(
        self, x: Tensor, logits: Tensor, target: BoundTarget, layer: TargetLayer,
        activations: Tensor, gradients: Tensor | None,
    ) -> Tensor:  # fmt: skip
        assert self._classifier is not None  # found by _resolve
        if not target.reads_classes or logits.ndim != 2:
            raise TargetError(
                "CAM maps the classes of its linear head only; explain other targets with"
                " Grad-CAM, which equals CAM on such heads"
            )
        return torch.einsum("nc,bc...->bn...", self._classifier.weight, activations)
