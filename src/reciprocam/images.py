"""Reading photos safely: any Pillow format and mode to upright 8-bit RGB, with clear errors."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
MAX_PIXELS = 89_478_485
"""Pillow's own decompression-bomb limit (about 89 megapixels); larger images are refused."""
MAX_ASPECT_RATIO = 100
"""Longest side / shortest side: a thinner image is refused, since resizing its short side to
the model's input would take more memory than its pixels say (a 40000x1 line: 10M x 256)."""
WRITTEN = ".reciprocam-written"
"""In a folder reciprocam wrote images into: their names, one a line, so that no later run
reads its own results back as data."""


def find_images(paths: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders (searched recursively for image suffixes) into a list of files.

    A folder's images that reciprocam wrote (listed in its `WRITTEN` file) are left out. A
    path that does not exist stays in the list, so that reading it reports it and the others
    are still explained.
    """
    found: list[Path] = []
    for entry in map(Path, paths):
        if entry.is_dir():
            images = folder_images(entry)
            if not images:
                suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
                raise ImageError(f"{entry}: the folder holds no images ({suffixes})")
            found.extend(images)
        else:
            found.append(entry)
    if not found:
        raise ImageError("no images given")
    return found


def folder_images(folder: Path, *, recursive: bool = True) -> list[Path]:
    """The image files in `folder` (and below it), sorted, less those reciprocam wrote."""
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    images = [p for p in candidates if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    written = {parent: written_names(parent) for parent in {p.parent for p in images}}
    return sorted(p for p in images if p.name not in written[p.parent])


def written_names(folder: Path) -> set[str]:
    """The names of the images reciprocam wrote into `folder` (its `WRITTEN` listing)."""
    listing = folder / WRITTEN
    try:
        return set(listing.read_text(encoding="utf-8", errors="replace").splitlines())
    except OSError:  # no listing (or an unreadable one): nothing is known to be ours
        return set()


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Read an image as upright (EXIF-rotated) 8-bit RGB.

    Grayscale, palette, CMYK and 16-bit images are converted; transparent images are
    composited on white. Raises ImageError for a missing, non-image, truncated or huge file.
    """
    path = Path(path)
    try:
        if path.is_file() and path.stat().st_size == 0:
            raise ImageError(f"{path}: the file is empty (0 bytes)")
        with warnings.catch_warnings():
            # Pillow warns above its limit; the explicit check below turns that into an error.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageError(
                        f"{path}: {width}x{height} pixels is over the limit of {max_pixels:,}"
                        " (a guard against decompression bombs); downscale the image first"
                    )
                if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
                    raise ImageError(
                        f"{path}: {width}x{height} pixels is thinner than the limit of"
                        f" {MAX_ASPECT_RATIO}:1 (resizing it for the model would take far more"
                        " memory than its pixels); crop the image first"
                    )
                image.load()
                return _to_rgb(ImageOps.exif_transpose(image))
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a folder, not an image") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied; check the file's read permission") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file (Pillow cannot identify it)") from None
    except Image.DecompressionBombError:
        raise ImageError(
            f"{path}: too many pixels (a guard against decompression bombs);"
            " downscale the image first"
        ) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(
            f"{path}: cannot decode the image, it may be truncated or corrupt ({error})"
        ) from None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB" and "transparency" not in image.info:
        return image
    if image.mode.startswith("I") or image.mode == "F":
        return Image.fromarray(_to_8bit(np.asarray(image)), mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _to_8bit(values: np.ndarray) -> np.ndarray:
    """16-bit (or 32-bit integer / float) grayscale to 8 bits, keeping the full range visible.

    16-bit values are always divided by 257 (65535 -> 255), even in a dark image; 32-bit
    integers and floats only when above 255 (as 16-bit values while they fit, else scaled so
    that the largest is 255, rather than saturating), and floats in [0, 1] are multiplied by
    255.
    """
    floating = values.dtype.kind == "f"
    sixteen_bit = values.dtype.kind == "u" and values.dtype.itemsize == 2
    values = values.astype(np.float64)
    peak = values.max(initial=0.0)
    if floating and peak <= 1.0:
        values = values * 255.0
    elif peak > 65535.0:
        values = values * (255.0 / peak)
    elif sixteen_bit or peak > 255.0:
        values = values / 257.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)
