"""What `reciprocam evaluate` reads: images with optional labels, and optional ground truth.

A dataset is one of:
- an ImageFolder tree: each sub-folder is a class. Its label is the folder name when that is a
  class index or one of the model's class names, else its position among the sorted folders
  (torchvision's ImageFolder rule, which gives ImageNet's indices for its WordNet-ID folders);
- a flat folder of images (no labels);
- a text file listing one image a line, optionally followed by its label (index or name);
  paths (without spaces) are relative to the list's folder, '#' starts a comment.

Ground truth for the pointing games: a JSON file mapping each image (its path relative to the
dataset, as in `Sample.key`) to boxes [x_min, y_min, x_max, y_max] in the image's pixels,
either as a list (boxes of any class) or as {class: list} (boxes by class index or name), or a
folder of masks (an image per image, same relative path, any suffix; non-zero = object).

For `--task segmentation`, the masks are label images: each pixel's value is its class index
(0 the background, 255 void, as in Pascal VOC), and each class an image shows is one sample.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageDraw
from torch import Tensor
from torchvision.transforms import InterpolationMode

from ..errors import ImageError, InputError, TargetError
from ..images import IMAGE_SUFFIXES, WRITTEN, folder_images, load_image
from ..photos import class_index
from ..zoo import Preprocessing


@dataclass(frozen=True)
class Sample:
    """One image of a dataset: its key (path relative to the dataset), file and label.

    For segmentation, one sample per class of an image: `label` is the class, `key` is
    "<image key>#<class>" and `image` the image's own key.
    """

    key: str
    path: Path
    label: int | None = None
    image: str | None = None

    @property
    def image_key(self) -> str:
        """The key of the image this sample is (or is a class of)."""
        return self.image or self.key


def read_dataset(source: Path, categories: Sequence[str]) -> list[Sample]:
    """The samples of a folder tree, a flat folder or a file list, sorted by key."""
    if source.is_file():
        samples = _read_list(source, categories)
    elif source.is_dir():
        samples = _read_folder(source, categories)
    else:
        raise InputError(f"{source}: no such file or folder (give a folder of images or a list)")
    if not samples:
        raise InputError(
            f"{source}: the dataset holds no images ({', '.join(sorted(IMAGE_SUFFIXES))});"
            " give a folder of images, class folders of images, or a list of image paths"
        )
    keys = [sample.key for sample in samples]
    if len(set(keys)) != len(keys):
        duplicate = next(key for key in keys if keys.count(key) > 1)
        raise InputError(f"{source}: the image {duplicate} is listed twice")
    return sorted(samples, key=lambda sample: sample.key)


def _read_folder(root: Path, categories: Sequence[str]) -> list[Sample]:
    samples = [Sample(p.name, p) for p in folder_images(root, recursive=False)]
    folders = {
        p: folder_images(p) for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
    }
    # A folder that only holds an earlier run's outputs is not a class.
    classes = sorted(p for p, images in folders.items() if images or not (p / WRITTEN).is_file())
    lowered = [name.lower() for name in categories]
    for position, folder in enumerate(classes):
        if folder.name.isdigit() and int(folder.name) < len(categories):
            label = int(folder.name)
        elif folder.name.lower() in lowered:
            label = lowered.index(folder.name.lower())
        else:
            label = position
        samples.extend(
            Sample(path.relative_to(root).as_posix(), path, label) for path in folders[folder]
        )
    return samples


def _read_list(listing: Path, categories: Sequence[str]) -> list[Sample]:
    samples = []
    text = listing.read_text(encoding="utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split("#", 1)[0].split(maxsplit=1)
        if not fields:
            continue
        path = Path(fields[0])
        try:
            label = class_index(fields[1].strip(), categories) if len(fields) == 2 else None
        except TargetError as error:
            raise InputError(f"{listing}:{number}: {error}") from None
        location = path if path.is_absolute() else listing.parent / path
        samples.append(Sample(path.as_posix(), location, label))
    return samples


@dataclass(frozen=True)
class GroundTruth:
    """Objects per image: boxes (all classes, or by class) or mask files."""

    boxes: dict[str, list[Sequence[float]] | dict[int, list[Sequence[float]]]] | None = None
    masks: Path | None = None
    labelled: bool = False  # masks hold class indices (segmentation), not object/no object

    @staticmethod
    def read_boxes(path: Path, categories: Sequence[str]) -> GroundTruth:
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise InputError(f"{path}: cannot read the boxes as JSON ({error})") from None
        if not isinstance(content, dict):
            raise InputError(f"{path}: expected a JSON object mapping images to boxes")
        boxes: dict[str, list[Sequence[float]] | dict[int, list[Sequence[float]]]] = {}
        for key, value in content.items():
            if isinstance(value, dict):
                by_class = {}
                for name, listed in value.items():
                    index = class_index(str(name), categories)
                    assert index is not None
                    by_class[index] = _boxes(path, key, listed)
                boxes[key] = by_class
            else:
                boxes[key] = _boxes(path, key, value)
        return GroundTruth(boxes=boxes)

    @staticmethod
    def mask_folder(path: Path, labelled: bool = False) -> GroundTruth:
        if not path.is_dir():
            raise InputError(f"{path}: the masks folder does not exist")
        return GroundTruth(masks=path, labelled=labelled)

    def class_samples(self, samples: Sequence[Sample], classes: int) -> list[Sample]:
        """One sample per class (not 0, the background) each image's label mask shows."""
        expanded = []
        for sample in samples:
            labels = self._label_image(sample)
            if labels is None:
                continue
            present = [int(v) for v in np.unique(labels) if 0 < v < 255]
            for value in present:
                if value >= classes:
                    raise InputError(
                        f"the mask of {sample.key} holds class {value}, but the model has"
                        f" {classes} classes"
                    )
                expanded.append(Sample(f"{sample.key}#{value}", sample.path, value, sample.key))
        return expanded

    def _mask_file(self, sample: Sample) -> Path | None:
        assert self.masks is not None
        stem = Path(sample.image_key).with_suffix("").as_posix()
        found = [
            p for p in sorted(self.masks.glob(f"{stem}.*")) if p.suffix.lower() in IMAGE_SUFFIXES
        ]
        return found[0] if found else None

    def _label_image(self, sample: Sample) -> np.ndarray | None:
        """The (height, width) class indices of an image's label mask, or None if it has none."""
        path = self._mask_file(sample)
        if path is None:
            return None
        try:
            with Image.open(path) as opened:
                labels = np.asarray(opened if opened.mode in ("L", "P") else opened.convert("L"))
        except OSError as error:
            raise InputError(f"the mask of {sample.key}: {path} cannot be read ({error})") from None
        return labels

    def mask(
        self, sample: Sample, size: tuple[int, int], target: int, preprocessing: Preprocessing
    ) -> Tensor | None:
        """(crop, crop) bool mask of the target's objects as the model sees them, or None
        when the image has no object of that class; `size` is the photo's (width, height)."""
        if self.masks is not None and self.labelled:
            labels = self._label_image(sample)
            if labels is None:
                return None
            drawn = Image.fromarray(((labels == target) * 255).astype(np.uint8))
            self._check_size(drawn, sample, size)
        elif self.masks is not None:
            found = self._mask_file(sample)
            if found is None:
                return None
            try:
                drawn = load_image(found).convert("L").point(lambda v: 255 if v else 0)
            except ImageError as error:
                raise InputError(f"the mask of {sample.key}: {error}") from None
            self._check_size(drawn, sample, size)
        else:
            assert self.boxes is not None
            entry = self.boxes.get(sample.key, [])
            boxes = entry.get(target, []) if isinstance(entry, dict) else entry
            if not boxes:
                return None
            drawn = Image.new("L", size, 0)
            draw = ImageDraw.Draw(drawn)
            for x_min, y_min, x_max, y_max in boxes:
                draw.rectangle((x_min, y_min, x_max, y_max), fill=255)  # bounds inclusive
        # The geometry of the model's preprocessing, with nearest-neighbour resizing.
        resized = TF.resize(drawn, preprocessing.resize, interpolation=InterpolationMode.NEAREST)
        cropped = TF.center_crop(resized, [preprocessing.crop, preprocessing.crop])
        mask = torch.from_numpy(np.asarray(cropped) > 0)
        return mask if bool(mask.any()) else None

    def _check_size(self, drawn: Image.Image, sample: Sample, size: tuple[int, int]) -> None:
        if drawn.size != size:
            raise InputError(
                f"the mask of {sample.image_key} is {drawn.size[0]}x{drawn.size[1]} but its image"
                f" is {size[0]}x{size[1]}"
            )


def _boxes(path: Path, key: str, value: object) -> list[Sequence[float]]:
    if not isinstance(value, list) or not all(
        isinstance(box, list) and len(box) == 4 and all(isinstance(v, int | float) for v in box)
        for box in value
    ):
        raise InputError(
            f"{path}: the boxes of {key} must be a list of [x_min, y_min, x_max, y_max]"
        )
    for box in value:
        if box[2] < box[0] or box[3] < box[1]:
            raise InputError(f"{path}: the box {box} of {key} has x_max < x_min or y_max < y_min")
    return value
