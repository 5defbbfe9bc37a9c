"""Deletion and Insertion (Petsiuk et al., RISE, BMVC 2018), with the official code's protocol.

Pixels are ranked by decreasing saliency (ties by position). Deletion replaces the top
pixels of the image with a substrate (zeros in the normalised space, i.e. the mean colour),
`step` pixels at a time; Insertion starts from a blurred copy (an 11 x 11 Gaussian kernel of
sigma 5, as RISE's `gkern`) and puts the top pixels of the image back. With p_t the target's
score (the class probability, a region's mean probability) after t steps (t = 0..n,
n = ceil(H W / step)):

    AUC = (sum_t p_t - p_0 / 2 - p_n / 2) / n        the trapezoid rule on [0, 1]

Deletion: lower is better; Insertion: higher is better. `steps` instead uses openvino_xai's
schedule, int(t H W / steps) pixels after step t. The curves are kept for plots.
"""

from __future__ import annotations

import math
from abc import abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import OptionError
from ..options import one_of, positive, positive_or_none
from .base import Metric, MetricInfo
from .batch import Batch

BLUR_SIZE = 11
BLUR_SIGMA = 5.0


def check_steps(steps: int | None, height: int, width: int) -> None:
    """OptionError if `steps` asks for more steps than an image of height x width has pixels."""
    if steps is not None and steps > height * width:
        raise OptionError(
            f"steps={steps} is more than the {height * width} pixels of a {height}x{width}"
            f" image; give at most {height * width}"
        )


class _CausalMetric(Metric):
    """A probability curve per image, from `base` towards `filler` in saliency order."""

    def __init__(
        self,
        model: nn.Module,
        *,
        step: int | None = None,
        steps: int | None = None,
        batch_size: int = 64,
    ) -> None:
        super().__init__()
        if step is not None and steps is not None:
            raise OptionError("give step (pixels per step) or steps (how many), not both")
        self.model = model
        self.step = positive_or_none("step", step)
        self.steps = positive_or_none("steps", steps)
        self.batch_size = positive("batch_size", batch_size)
        self._curves: list[Tensor] = []

    @property
    def curves(self) -> list[Tensor]:
        """Each image's (n + 1,) probabilities p_0..p_n, in the order seen."""
        return list(self._curves)

    def reset(self) -> None:
        super().reset()
        self._curves = []

    def pixel_counts(self, height: int, width: int) -> Tensor:
        """(n + 1,) how many top pixels are changed after each step t = 0..n."""
        check_steps(self.steps, height, width)
        pixels = height * width
        if self.steps is not None:
            return torch.tensor([t * pixels // self.steps for t in range(self.steps + 1)])
        step = self.step or width  # 224 pixels a step at 224 x 224, as RISE
        return (torch.arange(math.ceil(pixels / step) + 1) * step).clamp_max(pixels)

    def measure(self, batch: Batch) -> Tensor:
        height, width = batch.images.shape[-2:]
        counts = self.pixel_counts(height, width).to(batch.images.device)
        aucs = []
        for index, (image, saliency) in enumerate(zip(batch.images, batch.maps, strict=True)):
            curve = self._curve(batch, index, image, saliency, counts)
            self._curves.append(curve.detach().to("cpu", torch.float64))
            aucs.append(area_under_curve(curve))
        return torch.stack(aucs)

    def _curve(
        self, batch: Batch, index: int, image: Tensor, saliency: Tensor, counts: Tensor
    ) -> Tensor:
        order = saliency.flatten().argsort(descending=True, stable=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel(), device=order.device)
        rank = rank.view(saliency.shape)
        base, filler = self._endpoints(image)
        points = []
        for chunk in torch.split(counts, self.batch_size):
            changed = rank[None, None] < chunk[:, None, None, None]  # (T, 1, H, W)
            images = torch.where(changed, filler[None], base[None])
            of = torch.full((len(images),), index, device=images.device)
            points.append(batch.scores(self.model, images, self.batch_size, of))
        return torch.cat(points)

    @abstractmethod
    def _endpoints(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """The (C, H, W) image at step 0 and the one whose pixels replace it."""


class Deletion(_CausalMetric):
    """Deletion AUC: remove the most salient pixels first; a fast drop (low AUC) is better.

    substrate: "zeros" (RISE: 0 in the normalised space, the mean colour) or "blur".
    """

    info = MetricInfo("deletion", "Del", higher_is_better=False, needs_model=True)

    def __init__(
        self,
        model: nn.Module,
        *,
        step: int | None = None,
        steps: int | None = None,
        substrate: str = "zeros",
        batch_size: int = 64,
    ) -> None:
        super().__init__(model, step=step, steps=steps, batch_size=batch_size)
        self.substrate = one_of("substrate", substrate, ("zeros", "blur"))

    def _endpoints(self, image: Tensor) -> tuple[Tensor, Tensor]:
        removed = torch.zeros_like(image) if self.substrate == "zeros" else rise_blur(image)
        return image, removed


class Insertion(_CausalMetric):
    """Insertion AUC: add the most salient pixels first; a fast rise (high AUC) is better.

    start: "blur" (RISE: the image blurred by its 11 x 11, sigma 5 kernel) or "zeros".
    """

    info = MetricInfo("insertion", "Ins", higher_is_better=True, needs_model=True)

    def __init__(
        self,
        model: nn.Module,
        *,
        step: int | None = None,
        steps: int | None = None,
        start: str = "blur",
        batch_size: int = 64,
    ) -> None:
        super().__init__(model, step=step, steps=steps, batch_size=batch_size)
        self.start = one_of("start", start, ("blur", "zeros"))

    def _endpoints(self, image: Tensor) -> tuple[Tensor, Tensor]:
        blank = rise_blur(image) if self.start == "blur" else torch.zeros_like(image)
        return blank, image


def area_under_curve(curve: Tensor) -> Tensor:
    """(sum p_t - p_0 / 2 - p_n / 2) / n for p_0..p_n: the trapezoid rule on [0, 1]."""
    steps = curve.numel() - 1
    if steps == 0:
        return curve[0]
    return (curve.sum() - (curve[0] + curve[-1]) / 2) / steps


def rise_kernel(size: int = BLUR_SIZE, sigma: float = BLUR_SIGMA) -> Tensor:
    """(size, size) RISE's `gkern`: scipy's gaussian_filter (truncate 4, reflect) of a delta.

    The filter's radius (20 for sigma 5) exceeds the 11 x 11 window, so reflection folds the
    tails back in; the kernel still sums to 1.
    """
    radius = int(4.0 * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    centre = size // 2
    line = torch.zeros(size, dtype=torch.float64)
    for i in range(size):
        for offset, weight in zip(range(-radius, radius + 1), weights, strict=True):
            source = (i + offset) % (2 * size)  # scipy's "reflect": d c b a | a b c d | d c b a
            if source >= size:
                source = 2 * size - 1 - source
            if source == centre:
                line[i] += weight
    return torch.outer(line, line)


def rise_blur(image: Tensor) -> Tensor:
    """(C, H, W) each channel convolved with `rise_kernel()`, zero padded (RISE's conv2d)."""
    kernel = rise_kernel().to(image)
    channels = image.shape[0]
    weight = kernel.expand(channels, 1, *kernel.shape)
    return F.conv2d(image[None], weight, padding=BLUR_SIZE // 2, groups=channels)[0]
