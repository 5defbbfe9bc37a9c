"""Targets: what is explained, as the (n, T) scores a target reads from the model's output.

Every method explains scores, never the raw output: a target turns the model's explained
output (the part `reciprocam._model.explained_output` picks) into T scores per image, and
the maps explain each of them.

    Classes(c)       a class (one for all, one per image, several per image: multi-label),
                     None for each image's top-1, "all" for every class: output[:, c]
    TopClasses(k)    each image's k highest classes
    Region(c, region, reduce)
                     a class of a segmentation output (B, N, H, W) over a region R of pixels
                     (Seg-Grad-CAM, Vinogradova et al. 2020): sum_{(i,j) in R} output[:, c, i, j]
                     ("sum") or that over |R| ("mean", the default; the same maps, a score
                     comparable between images); R is the region the model predicts for c
                     (argmax over classes == c), a given mask, or a box
    OutputIndex(i)   the raw value at index i of each image's flattened output (regression)
    Similarity(e)    the cosine similarity of each image's flattened output to an embedding
    Custom(f)        f(output) -> (n,) or (n, T), for any other question; f must score each
                     row of the output on its own (masked copies are rows of one batch)

A target is bound once per batch on the unmodified images' output (`Target.bind`): top
classes, predicted regions and every check are decided there, so every masked copy of image b
is scored against image b's target (`BoundTarget.__call__(output, images, scale)`).

Scale: targets that read classes (Classes, TopClasses, Region) read them after the method's
`score` transform over the class axis (axis 1): "logit" (the raw output; the gradient methods,
Score-CAM and Ablation-CAM), "softmax" (ReciproCAM's and RISE's default) or "sigmoid" (each
class on its own: multi-label heads, pytorch-grad-cam's BinaryClassifierOutputTarget). The
others read the raw output whatever the method's score.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from numbers import Integral
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ._model import class_probabilities
from .errors import TargetError

Scale = Literal["logit", "softmax", "sigmoid"]
Reduce = Literal["mean", "sum"]
Box = tuple[int, int, int, int]
RegionSpec = Literal["predicted"] | Tensor | np.ndarray | Box


def scaled(output: Tensor, scale: Scale) -> Tensor:
    """The output on the `scale` over its class axis (axis 1), in float32 or wider.

    A one-class output (N = 1) is a binary head: its softmax is its sigmoid,
    softmax([0, z])[1] (a softmax over one class would be 1 whatever the image).
    """
    values = output.to(torch.promote_types(output.dtype, torch.float32))
    return values if scale == "logit" else class_probabilities(values, scale == "sigmoid")


class BoundTarget(ABC):
    """A target bound to one batch of B images: scores any rows of outputs of those images.

    indices: (B, T) what each map explains: its class (Classes, TopClasses, Region), its
        output index (OutputIndex), or its number 0..T-1 (Similarity, Custom).
    stacked: the maps carry a T axis, (B, T, H, W); else T is 1 and maps are (B, H, W).
    reads_classes: the target reads the class axis, so the method's `score` applies.
    regions: (B, T, *grid) pixel weights of each target's region (Region), else None.
    """

    regions: Tensor | None = None

    def __init__(self, indices: Tensor, stacked: bool, reads_classes: bool) -> None:
        self.indices = indices
        self.stacked = stacked
        self.reads_classes = reads_classes

    @property
    def count(self) -> int:
        """T, the number of scores per image."""
        return self.indices.shape[1]

    def __call__(self, output: Tensor, images: Tensor, scale: Scale = "logit") -> Tensor:
        """(n, T) scores of n output rows, row r an output of image `images[r]`."""
        return self._scores(scaled(output, scale) if self.reads_classes else output, images)

    @abstractmethod
    def _scores(self, output: Tensor, images: Tensor) -> Tensor: ...

    def every(self) -> BoundTarget:
        """The scores one forward computation gives with these: every class for class targets
        (so `Explanation.scores` holds all N), the targets themselves otherwise."""
        return self

    def pick(self, maps: Tensor) -> Tensor:
        """(B, T, h, w) maps of these targets from (B, T', h, w) maps of `every()`."""
        return maps


class _ClassScores(BoundTarget):
    def __init__(self, indices: Tensor, stacked: bool, classes: int) -> None:
        super().__init__(indices, stacked, reads_classes=True)
        self.classes = classes

    def _scores(self, output: Tensor, images: Tensor) -> Tensor:
        return output.gather(1, self.indices[images])

    def every(self) -> BoundTarget:
        return _AllClasses(self.classes)

    def pick(self, maps: Tensor) -> Tensor:
        rows = torch.arange(maps.shape[0], device=maps.device)[:, None]
        return maps[rows, self.indices.to(maps.device)]


class _AllClasses(BoundTarget):
    def __init__(self, classes: int) -> None:
        super().__init__(torch.arange(classes)[None], stacked=True, reads_classes=True)

    def _scores(self, output: Tensor, images: Tensor) -> Tensor:
        return output


class Target(ABC):
    """What to explain; `bind` it to a batch's output to score outputs of those images."""

    @abstractmethod
    def bind(self, output: Tensor) -> BoundTarget:
        """The target on the unmodified batch's (B, ...) output, checked against it."""


def class_output(output: Tensor, what: str) -> int:
    """N, the classes of a (B, N) output, or TargetError for another shape."""
    if output.ndim != 2:
        hint = (
            ": give targets=Region(class) to explain a class of a segmentation output"
            if output.ndim >= 4
            else ""
        )
        raise TargetError(
            f"{what} reads class scores of shape (batch, classes), but the model's output is"
            f" {tuple(output.shape)}{hint}"
        )
    return output.shape[1]


def check_classes(indices: Tensor, classes: int) -> None:
    """TargetError unless every index is a class in [0, classes)."""
    bad = indices[(indices < 0) | (indices >= classes)]
    if bad.numel():
        raise TargetError(
            f"class {int(bad[0])} is out of range: the model has {classes} classes"
            f" (0 to {classes - 1})"
        )


def class_table(classes: object, batch: int, what: str = "targets") -> tuple[Tensor | None, bool]:
    """(B, T) class indices from a user's classes, and whether they are stacked (several per
    image, or a list per image), or (None, False) for None (each image's top-1).

    Accepted: an int (every image), a sequence of B ints or a (B,) tensor (one per image), a
    sequence of B sequences of T ints or a (B, T) tensor (T per image).
    """
    if classes is None:
        return None, False
    if isinstance(classes, np.ndarray):
        classes = torch.from_numpy(classes)
    if isinstance(classes, Tensor):
        if classes.is_floating_point() or classes.is_complex() or classes.dtype == torch.bool:
            raise TargetError(f"{what} must be integer class indices, not {classes.dtype}")
        if classes.ndim > 2:
            raise TargetError(
                f"{what} must be one class, one per image or (images, T) classes,"
                f" got shape {tuple(classes.shape)}"
            )
        classes = classes.tolist()
    if isinstance(classes, Integral) and not isinstance(classes, bool):
        return torch.full((batch, 1), int(classes), dtype=torch.long), False
    if not isinstance(classes, Sequence) or isinstance(classes, str):
        raise TargetError(
            f"{what} must be None, a class index, one per image or a list per image,"
            f" not {type(classes).__name__}"
        )
    rows = list(classes)
    if len(rows) != batch:
        raise TargetError(
            f"got {len(rows)} {what} for a batch of {batch} images"
            + (f": image {len(rows)} has none" if len(rows) < batch else "")
            + "; give one per image (or one list per image)"
        )
    nested = any(isinstance(row, (Sequence, Tensor, np.ndarray)) for row in rows)
    table = [_class_row(row, image, what) if nested else [row] for image, row in enumerate(rows)]
    for image, row in enumerate(table):
        if any(isinstance(v, bool) or not isinstance(v, Integral) for v in row):
            raise TargetError(f"{what} of image {image} must be integer class indices: {row!r}")
        if len(row) != len(table[0]):
            raise TargetError(
                f"image {image} has {len(row)} classes but image 0 has {len(table[0])};"
                " give every image the same number"
            )
    if not table[0]:
        raise TargetError(f"{what} of image 0 is an empty list; give at least one class")
    return torch.tensor(table, dtype=torch.long), nested


def _class_row(row: object, image: int, what: str) -> list[object]:
    if isinstance(row, (Tensor, np.ndarray)):
        row = row.tolist()
    if isinstance(row, Integral) or not isinstance(row, Sequence) or isinstance(row, str):
        raise TargetError(
            f"{what} of image {image} is {row!r}: give every image a list of classes, or every"
            " image one class"
        )
    return list(row)


class Classes(Target):
    """Classes of a (B, N) output: None (top-1), "all", an int, one per image, or several per
    image (multi-label: T maps each)."""

    def __init__(self, classes: object = None) -> None:
        self.classes = classes

    def bind(self, output: Tensor) -> BoundTarget:
        count = class_output(output, "a class target")
        if isinstance(self.classes, str) and self.classes == "all":
            return _AllClasses(count)
        table, stacked = class_table(self.classes, output.shape[0])
        if table is None:
            table = output.argmax(dim=1, keepdim=True)
        check_classes(table, count)
        return _ClassScores(table.to(output.device), stacked, count)


class TopClasses(Target):
    """Each image's k highest-scoring classes, highest first (T = k maps per image)."""

    def __init__(self, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, Integral) or k < 1:
            raise TargetError(f"the number of top classes must be a positive integer, not {k!r}")
        self.k: int = int(k)

    def bind(self, output: Tensor) -> BoundTarget:
        count = class_output(output, "TopClasses")
        if self.k > count:
            raise TargetError(f"asked for the top {self.k} of a model with {count} classes")
        return _ClassScores(output.topk(self.k, dim=1).indices, True, count)


class _RegionScores(BoundTarget):
    def __init__(self, indices: Tensor, stacked: bool, weights: Tensor, reduce: Reduce) -> None:
        super().__init__(indices, stacked, reads_classes=True)
        self.regions = weights
        self.reduce = reduce
        self.area = weights.flatten(2).sum(dim=2)  # (B, T)

    def _scores(self, output: Tensor, images: Tensor) -> Tensor:
        rows = torch.arange(output.shape[0], device=output.device)[:, None]
        chosen = output[rows, self.indices[images]]  # (n, T, H, W)
        assert self.regions is not None
        total = (chosen * self.regions[images].to(chosen)).flatten(2).sum(dim=2)
        return total / self.area[images].to(total) if self.reduce == "mean" else total


class Region(Target):
    """A class of a segmentation output (B, N, *grid) over a region of its pixels.

    classes: as `Classes` takes them (an int, one per image, a list per image).
    region: "predicted" (the pixels whose argmax over classes is the class, Seg-Grad-CAM's
        region), a mask at the output's size, (H, W), (B, H, W) or (B, T, H, W), of bools or
        weights in [0, 1], or a box (x0, y0, x1, y1) in output pixels, x1 and y1 excluded.
    reduce: "mean" (the region's mean score) or "sum" (Seg-Grad-CAM's sum).
    """

    def __init__(
        self, classes: object, region: RegionSpec = "predicted", reduce: Reduce = "mean"
    ) -> None:
        if classes is None:
            raise TargetError("a Region needs the class to explain, e.g. Region(15)")
        if reduce not in ("mean", "sum"):
            raise TargetError(f"reduce must be 'mean' or 'sum', not {reduce!r}")
        self.classes = classes
        self.region = region
        self.reduce: Reduce = reduce

    def bind(self, output: Tensor) -> BoundTarget:
        if output.ndim < 3:
            raise TargetError(
                "a Region reads a segmentation output (batch, classes, height, width), but the"
                f" model's output is {tuple(output.shape)}: explain it with Classes"
            )
        batch, count = output.shape[:2]
        table, stacked = class_table(self.classes, batch, "Region classes")
        assert table is not None
        check_classes(table, count)
        table = table.to(output.device)
        weights = self._weights(output, table)
        area = weights.flatten(2).sum(dim=2)
        empty = torch.nonzero(area <= 0)
        if len(empty):
            image, target = (int(v) for v in empty[0])
            cause = (
                "the model predicts no pixel of it: choose a class the image shows, or give a mask"
                if isinstance(self.region, str)
                else "the given region is empty"
            )
            raise TargetError(
                f"the region of class {int(table[image, target])} in image {image} is empty:"
                f" {cause}"
            )
        return _RegionScores(table, stacked, weights, self.reduce)

    def _weights(self, output: Tensor, table: Tensor) -> Tensor:
        """(B, T, *grid) pixel weights of each image's and target's region."""
        batch, grid = output.shape[0], tuple(output.shape[2:])
        shape = (batch, table.shape[1], *grid)
        region = self.region
        if isinstance(region, str):
            if region != "predicted":
                raise TargetError(f"region must be 'predicted', a mask or a box, not {region!r}")
            predicted = output.argmax(dim=1, keepdim=True)  # (B, 1, *grid)
            return (predicted == table.view(*table.shape, *([1] * len(grid)))).float()
        if isinstance(region, tuple):
            return _box_weights(region, grid).to(output.device).expand(shape)
        if isinstance(region, np.ndarray):
            region = torch.from_numpy(region)
        if not isinstance(region, Tensor):
            raise TargetError(
                f"region must be 'predicted', a mask tensor or a box, not {type(region).__name__}"
            )
        if tuple(region.shape[-len(grid) :]) != grid or region.ndim > len(grid) + 2:
            raise TargetError(
                f"the region mask has shape {tuple(region.shape)} but the model's output grid is"
                f" {'x'.join(map(str, grid))}: give a mask of that size, (H, W), (B, H, W) or"
                " (B, T, H, W)"
            )
        weights = region.to(device=output.device, dtype=torch.float32)
        if not bool(((weights >= 0) & (weights <= 1)).all()):
            raise TargetError("a region mask holds booleans or weights in [0, 1]")
        if weights.ndim == len(grid) + 1:
            weights = weights.unsqueeze(1)
        while weights.ndim < len(shape):
            weights = weights.unsqueeze(0)
        if weights.shape[0] not in (1, batch) or weights.shape[1] not in (1, shape[1]):
            raise TargetError(
                f"the region mask has shape {tuple(region.shape)}, for a batch of {batch} images"
                f" and {shape[1]} classes each"
            )
        return weights.expand(shape)


def _box_weights(box: Box, grid: tuple[int, ...]) -> Tensor:
    if len(box) != 4 or len(grid) != 2 or not all(isinstance(v, Integral) for v in box):
        raise TargetError(f"a box is four integers (x0, y0, x1, y1), not {box!r}")
    x0, y0, x1, y1 = (int(v) for v in box)
    height, width = grid
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise TargetError(
            f"the box {box} is not inside the {width}x{height} output (0 <= x0 < x1 <= width,"
            " 0 <= y0 < y1 <= height)"
        )
    weights = torch.zeros(grid)
    weights[y0:y1, x0:x1] = 1.0
    return weights


class _IndexScores(BoundTarget):
    def _scores(self, output: Tensor, images: Tensor) -> Tensor:
        return output.flatten(1).gather(1, self.indices[images])


class OutputIndex(Target):
    """The raw values at `index` (an int, or a list: T values) of each image's flattened
    output: a regression output, a logit read as it is."""

    def __init__(self, index: int | Sequence[int]) -> None:
        indices = [index] if isinstance(index, int) else list(index)
        if not indices or any(isinstance(i, bool) or not isinstance(i, Integral) for i in indices):
            raise TargetError(f"an output index is an integer or a list of them, not {index!r}")
        self.indices = [int(i) for i in indices]
        self.stacked = not isinstance(index, Integral)

    def bind(self, output: Tensor) -> BoundTarget:
        size = output[0].numel()
        bad = [i for i in self.indices if not 0 <= i < size]
        if bad:
            raise TargetError(
                f"output index {bad[0]} is out of range: each image's output has {size} values"
            )
        table = torch.tensor(self.indices, device=output.device).expand(output.shape[0], -1)
        return _IndexScores(table, self.stacked, reads_classes=False)


class _SimilarityScores(BoundTarget):
    def __init__(self, references: Tensor, stacked: bool, batch: int) -> None:
        indices = torch.arange(references.shape[0], device=references.device)
        super().__init__(indices.expand(batch, -1), stacked, reads_classes=False)
        self.references = references  # (T, D), unit length

    def _scores(self, output: Tensor, images: Tensor) -> Tensor:
        rows = F.normalize(output.flatten(1).to(self.references), dim=1)
        return rows @ self.references.T


class Similarity(Target):
    """Cosine similarity of each image's flattened output (an embedding) to a reference
    embedding (D,), or to T references (T, D): T maps per image."""

    def __init__(self, embedding: Tensor | np.ndarray) -> None:
        if isinstance(embedding, np.ndarray):
            embedding = torch.from_numpy(embedding)
        if not isinstance(embedding, Tensor) or embedding.ndim not in (1, 2):
            raise TargetError("the reference embedding must be a (D,) or (T, D) tensor")
        if not embedding.is_floating_point() or not bool(torch.isfinite(embedding).all()):
            raise TargetError("the reference embedding must hold finite float values")
        if bool((embedding.flatten(-1).norm(dim=-1) == 0).any()):
            raise TargetError("a reference embedding of zeros has no direction to compare with")
        self.embedding = embedding

    def bind(self, output: Tensor) -> BoundTarget:
        references = self.embedding.reshape(-1, self.embedding.shape[-1])
        size = output[0].numel()
        if references.shape[1] != size:
            raise TargetError(
                f"the reference embedding has {references.shape[1]} values but the model's"
                f" output has {size} per image; give an embedding of the model's output"
            )
        dtype = torch.promote_types(output.dtype, torch.float32)
        unit = F.normalize(references.to(device=output.device, dtype=dtype), dim=1)
        return _SimilarityScores(unit, self.embedding.ndim == 2, output.shape[0])


class _CustomScores(BoundTarget):
    def __init__(self, function: Callable[[Tensor], Tensor], count: int, stacked: bool, batch: int):
        indices = torch.arange(count).expand(batch, -1)
        super().__init__(indices, stacked, reads_classes=False)
        self.function = function

    def _scores(self, output: Tensor, images: Tensor) -> Tensor:
        scores = self.function(output)
        return scores[:, None] if scores.ndim == 1 else scores


class Custom(Target):
    """Any score: `function(output) -> (n,)` or `(n, T)` for n output rows, row by row."""

    def __init__(self, function: Callable[[Tensor], Tensor]) -> None:
        if not callable(function):
            raise TargetError(f"a custom target is a function, not {type(function).__name__}")
        self.function = function

    def bind(self, output: Tensor) -> BoundTarget:
        name = getattr(self.function, "__name__", "the target function")
        try:
            scores = self.function(output)
        except Exception as error:
            raise TargetError(f"{name} failed on the model's output: {error}") from None
        batch = output.shape[0]
        if not isinstance(scores, Tensor) or scores.ndim not in (1, 2) or len(scores) != batch:
            found = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
            raise TargetError(
                f"{name} must return ({batch},) or ({batch}, T) scores for {batch} images,"
                f" got {found}"
            )
        if not scores.is_floating_point():
            raise TargetError(f"{name} must return float scores, not {scores.dtype}")
        return _CustomScores(self.function, 1 if scores.ndim == 1 else scores.shape[1],
                             scores.ndim == 2, batch)  # fmt: skip


TargetSpec = (
    Target
    | BoundTarget
    | Callable[[Tensor], Tensor]
    | int
    | Sequence[object]
    | Tensor
    | np.ndarray
    | str
    | None
)
"""Targets as users give them: a Target, a function (`Custom`), "all", classes as `Classes`
takes them (None: each image's top-1), or a target bound before (an Explanation's `target`)."""


class _AlreadyBound(Target):
    """A target bound to a batch before (an Explanation's), used again for the same images."""

    def __init__(self, bound: BoundTarget) -> None:
        self.bound = bound

    def bind(self, output: Tensor) -> BoundTarget:
        if output.shape[0] != self.bound.indices.shape[0]:
            raise TargetError(
                f"the target was bound to {self.bound.indices.shape[0]} images, not the"
                f" {output.shape[0]} given"
            )
        return self.bound


def as_target(spec: TargetSpec) -> Target:
    """The Target a user's `targets` argument names (a bound one is used as it is).

    Classes of a model whose output is a segmentation grid are read as `Region(classes)`
    (the region the model predicts for each) when the target is bound.
    """
    if isinstance(spec, Target):
        return spec
    if isinstance(spec, BoundTarget):
        return _AlreadyBound(spec)
    if callable(spec) and not isinstance(spec, (Tensor, np.ndarray)):
        return Custom(spec)
    if isinstance(spec, str) and spec != "all":
        raise TargetError(f"targets must be classes, 'all', a Target or a function, not {spec!r}")
    return _ClassesOrRegion(spec)


class _ClassesOrRegion(Classes):
    def bind(self, output: Tensor) -> BoundTarget:
        if output.ndim >= 4 and not isinstance(self.classes, str):
            if self.classes is None:
                raise TargetError(
                    "a segmentation output has no top-1 class to explain: give the class,"
                    " e.g. targets=15 or Region(15, region=mask)"
                )
            return Region(self.classes).bind(output)
        return super().bind(output)
