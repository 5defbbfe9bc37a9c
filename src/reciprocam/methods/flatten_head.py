"""ReciproCAM's exact shortcut for heads that flatten the map into a Linear layer (VGG, AlexNet).

When the first Linear layer after the target layer reads the layer's output flattened,
y = W . flatten(F) + b, the copy that keeps only position k (the pixel mask) needs only the C
weight columns of that position: y_k = W_k . F[:, k] + b, with W_k (out, C) the columns of
position k. All B*K copies then cost one batched product of (K, out, C) weights with the
(K, C, B) features, a K-th of the dense product; the copies join the batch at the Linear
layer's output (the layers before it run on the B images only) and run the rest of the head.

It is used only when a check on the first call proves the Linear layer's input equals the
flattened output, on the real features and on random ones. The regrouped weights are kept,
once per weight version (VGG-16: 411 MB); `fast_path=False` does without them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from .._model import probe_noise, removing, same_output
from ..layers import TargetLayer, run_tapped
from ..layout import FeatureLayout


def flattening_linear(model: nn.Module, image: Tensor, layer: TargetLayer) -> nn.Linear | None:
    """The first Linear layer after `layer` if it reads the layer's output flattened, else None."""
    layout = layer.layout
    if layout is None or layout.prefix:
        return None
    tapped: list[Tensor] = []
    first: list[tuple[nn.Linear, Tensor]] = []

    def with_noise(output: Tensor) -> Tensor:
        both = torch.cat([output, probe_noise(output) * output.std().clamp_min(1e-6)])
        tapped.append(both)
        return both

    def reader(linear: nn.Linear) -> Callable[[nn.Module, tuple[object, ...]], None]:
        def read(module: nn.Module, inputs: tuple[object, ...]) -> None:
            if tapped and not first and isinstance(inputs[0], Tensor):
                first.append((linear, inputs[0]))

        return read

    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    with removing(*(m.register_forward_pre_hook(reader(m)) for m in linears)):
        try:
            run_tapped(model, image, layer, with_noise)
        except Exception:  # a head the probe cannot run has no shortcut
            return None
    if not first:
        return None
    linear, given = first[0]
    flat = tapped[0].flatten(1)
    if given.shape != flat.shape or not same_output(given, flat):
        return None
    return linear


class FlattenHead:
    """The Linear layer's outputs on every pixel-masked copy, computed from live columns only."""

    def __init__(self, linear: nn.Linear) -> None:
        self.linear = linear
        self._key: tuple[object, ...] | None = None
        self._grouped: Tensor | None = None

    def outputs(self, output: Tensor, layout: FeatureLayout) -> Tensor:
        """(B*K, out) outputs of the B*K copies, image-major, of a (B, ...) layer output."""
        features = layout.to_channels_first(output).flatten(2)  # (B, C, K)
        grouped = self._grouped_weights(layout)  # (K, out, C)
        per_position = torch.bmm(grouped, features.permute(2, 1, 0).to(grouped.dtype))
        rows = per_position.permute(2, 0, 1).reshape(-1, grouped.shape[1])  # (B*K, out)
        bias = self.linear.bias
        return rows if bias is None else rows + bias.detach()

    def _grouped_weights(self, layout: FeatureLayout) -> Tensor:
        """The weight columns of each position, (K, out, C), made once per weight version."""
        weight = self.linear.weight
        key = (id(weight), weight._version, weight.dtype, weight.device, layout)
        if self._grouped is not None and self._key == key:
            return self._grouped
        self._grouped = None  # free the old copy before making the new one
        # The weight rows are laid out like the layer's output: read them the same way.
        rows = weight.detach().view(weight.shape[0], *layout.shape(1)[1:])
        columns = layout.to_channels_first(rows).flatten(2)  # (out, C, K)
        self._grouped, self._key = columns.permute(2, 0, 1).contiguous(), key
        return self._grouped

    @contextmanager
    def appending(self, outputs: list[Tensor]) -> Iterator[None]:
        """Within the block, the Linear layer's output gets the copies' `outputs[0]` appended
        (set by the time it runs): the rest of the head runs on them."""

        def append(module: nn.Module, inputs: object, result: Tensor) -> Tensor:
            return torch.cat([result, outputs[0].to(result.dtype)])

        with removing(self.linear.register_forward_hook(append)):
            yield
