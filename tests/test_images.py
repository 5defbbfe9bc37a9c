"""Reading photos (find_images, load_image) and turning them into model inputs (Preprocessing)."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from helpers import error_message
from PIL import Image
from torchvision.models import ResNet50_Weights
from torchvision.transforms import InterpolationMode

from reciprocam.errors import ImageError
from reciprocam.images import MAX_PIXELS, find_images, load_image
from reciprocam.zoo import Preprocessing

EXIF_ORIENTATION = 0x0112


def image_error(call, *args, **kwargs) -> str:
    return error_message(ImageError, call, *args, **kwargs)


def pixels(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image).astype(np.int64)


def blocks(height: int, width: int) -> np.ndarray:
    """An RGB image of four flat quadrants (JPEG keeps flat 8x8 blocks nearly exact)."""
    array = np.zeros((height, width, 3), np.uint8)
    array[: height // 2, : width // 2] = (230, 20, 20)
    array[: height // 2, width // 2 :] = (20, 200, 40)
    array[height // 2 :, : width // 2] = (30, 40, 220)
    array[height // 2 :, width // 2 :] = (240, 240, 60)
    return array


def stored(path) -> tuple[str, dict]:
    """The mode and info of the file as Pillow reads it, before any conversion."""
    with Image.open(path) as image:
        return image.mode, image.info


def composite_on_white(colour, alpha) -> np.ndarray:
    """Straight-alpha `colour` over white, rounded to 8 bits."""
    colour = np.asarray(colour, np.float64)
    return np.rint(colour * alpha / 255 + 255 * (1 - alpha / 255)).astype(np.int64)


def png_header_only(path, width: int, height: int) -> None:
    """A valid PNG signature and IHDR for a 1-bit `width` x `height` image, with an empty IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


# --- find_images ---------------------------------------------------------------------------


@pytest.fixture
def photo_tree(tmp_path):
    root = tmp_path / "photos"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "looks.png").mkdir()  # a folder named like an image is not an image
    for name in ["b.png", "a.jpg", "notes.txt", "sub/c.JPEG", "sub/deeper/d.webp", "sub/e.tiff"]:
        (root / name).write_bytes(b"")
    (root / "looks.png" / "inside.bmp").write_bytes(b"")
    return root


def test_find_images_searches_folders_recursively_sorted_images_only(photo_tree):
    expected = [
        photo_tree / "a.jpg",
        photo_tree / "b.png",
        photo_tree / "looks.png" / "inside.bmp",
        photo_tree / "sub" / "c.JPEG",
        photo_tree / "sub" / "deeper" / "d.webp",
        photo_tree / "sub" / "e.tiff",
    ]
    assert find_images([photo_tree]) == expected
    assert find_images([str(photo_tree)]) == expected


def test_find_images_keeps_named_files_whatever_their_suffix_in_the_given_order(photo_tree):
    notes, sub = photo_tree / "notes.txt", photo_tree / "sub"
    found = find_images([notes, sub, photo_tree / "b.png"])
    assert found == [
        notes,
        sub / "c.JPEG",
        sub / "deeper" / "d.webp",
        sub / "e.tiff",
        photo_tree / "b.png",
    ]


def test_a_missing_path_is_kept_for_its_reading_to_report(tmp_path):
    missing = tmp_path / "nowhere.jpg"
    assert find_images([missing]) == [missing]
    assert image_error(load_image, missing) == f"{missing}: no such file"


def test_find_images_folder_without_images(tmp_path):
    (tmp_path / "readme.txt").write_text("no pictures here")
    (tmp_path / "fake.jpg").mkdir()
    message = image_error(find_images, [tmp_path])
    assert message.startswith(f"{tmp_path}: the folder holds no images (")
    assert ".jpg" in message
    assert ".png" in message


def test_find_images_nothing_given():
    assert image_error(find_images, []) == "no images given"


# --- load_image: formats and modes ---------------------------------------------------------


def test_png_round_trip_is_exact(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "photo.png")
    image = load_image(tmp_path / "photo.png")
    assert image.size == (30, 20)
    np.testing.assert_array_equal(pixels(image), array)


def test_jpeg_round_trip_keeps_colours(tmp_path):
    array = blocks(32, 48)
    Image.fromarray(array).save(tmp_path / "photo.jpg", quality=100, subsampling=0)
    image = load_image(tmp_path / "photo.jpg")
    assert image.size == (48, 32)
    assert np.abs(pixels(image) - array).max() <= 3


def test_grayscale_becomes_rgb_with_equal_channels(tmp_path):
    gray = np.arange(0, 240, dtype=np.uint8).reshape(12, 20)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    assert stored(tmp_path / "gray.png")[0] == "L"
    result = pixels(load_image(tmp_path / "gray.png"))
    for channel in range(3):
        np.testing.assert_array_equal(result[..., channel], gray)


def test_bilevel_becomes_black_and_white(tmp_path):
    bits = np.zeros((8, 8), bool)
    bits[2:5, 3:7] = True
    Image.fromarray(bits).save(tmp_path / "bits.png")
    assert stored(tmp_path / "bits.png")[0] == "1"
    result = pixels(load_image(tmp_path / "bits.png"))
    np.testing.assert_array_equal(result, np.repeat(bits[..., None] * 255, 3, axis=2))


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.array(
        [[(200, 100, 50, 128), (10, 20, 30, 255), (1, 2, 3, 0), (90, 180, 240, 64)]], np.uint8
    )
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "alpha.png")
    result = pixels(load_image(tmp_path / "alpha.png"))[0]
    np.testing.assert_array_equal(result[0], composite_on_white((200, 100, 50), 128))
    np.testing.assert_array_equal(result[0], [227, 177, 152])  # c * 128/255 + 255 * 127/255
    np.testing.assert_array_equal(result[1], [10, 20, 30])  # opaque: unchanged
    np.testing.assert_array_equal(result[2], [255, 255, 255])  # transparent: white
    np.testing.assert_array_equal(result[3], composite_on_white((90, 180, 240), 64))


def test_grayscale_with_alpha_is_composited_on_white(tmp_path):
    la = np.array([[(100, 128), (100, 255), (100, 0)]], np.uint8)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    assert stored(tmp_path / "la.png")[0] == "LA"
    result = pixels(load_image(tmp_path / "la.png"))[0]
    np.testing.assert_array_equal(result, [[177] * 3, [100] * 3, [255] * 3])


def test_palette_transparency_index_becomes_white(tmp_path):
    palette = Image.new("P", (3, 2))
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255])
    palette.putdata([0, 1, 2, 2, 1, 0])
    palette.save(tmp_path / "palette.png", transparency=0)
    mode, info = stored(tmp_path / "palette.png")
    assert mode == "P"
    assert info["transparency"] == 0
    result = pixels(load_image(tmp_path / "palette.png"))
    white, green, blue = [255, 255, 255], [0, 255, 0], [0, 0, 255]
    np.testing.assert_array_equal(result, [[white, green, blue], [blue, green, white]])


def test_rgb_colour_key_transparency_becomes_white(tmp_path):
    array = np.full((2, 2, 3), 70, np.uint8)
    array[0, 1] = (10, 20, 30)
    Image.fromarray(array).save(tmp_path / "key.png", transparency=(10, 20, 30))
    assert stored(tmp_path / "key.png")[1]["transparency"] == (10, 20, 30)
    expected = array.astype(np.int64)
    expected[0, 1] = 255
    np.testing.assert_array_equal(pixels(load_image(tmp_path / "key.png")), expected)


def test_cmyk_becomes_rgb(tmp_path):
    cmyk = np.array([[(0, 0, 0, 0), (255, 0, 0, 0), (0, 255, 0, 0), (0, 0, 0, 255)]], np.uint8)
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "print.tiff")
    result = pixels(load_image(tmp_path / "print.tiff"))[0]
    np.testing.assert_array_equal(
        result, [[255, 255, 255], [0, 255, 255], [255, 0, 255], [0, 0, 0]]
    )


def test_16_bit_grayscale_is_scaled_to_8_bits(tmp_path):
    levels = np.arange(256, dtype=np.uint16) * 257  # 0, 257, ..., 65535
    Image.fromarray(levels.reshape(16, 16)).save(tmp_path / "deep.png")
    assert stored(tmp_path / "deep.png")[0] == "I;16"
    result = pixels(load_image(tmp_path / "deep.png"))
    np.testing.assert_array_equal(result[..., 0], np.arange(256).reshape(16, 16))
    np.testing.assert_array_equal(result[..., 1], result[..., 0])
    np.testing.assert_array_equal(result[..., 2], result[..., 0])
    assert result[-1, -1, 0] == 255  # 65535


def test_dark_16_bit_grayscale_is_scaled_too(tmp_path):
    # All values <= 255: still 16-bit levels, so nearly black in 8 bits (not read as 8-bit).
    dark = np.array([[0, 100, 128, 200, 255]], np.uint16)
    Image.fromarray(dark).save(tmp_path / "dark.png")
    assert stored(tmp_path / "dark.png")[0] == "I;16"
    result = pixels(load_image(tmp_path / "dark.png"))[0, :, 0]
    np.testing.assert_array_equal(result, [0, 0, 0, 1, 1])  # v / 257, rounded


def test_32_bit_integer_and_float_grayscale(tmp_path):
    Image.fromarray(np.array([[0, 100, 255]], np.int32), mode="I").save(tmp_path / "int.tiff")
    assert pixels(load_image(tmp_path / "int.tiff"))[0, :, 0].tolist() == [0, 100, 255]
    unit = np.array([[0.0, 0.25, 1.0]], np.float32)
    Image.fromarray(unit, mode="F").save(tmp_path / "float.tiff")
    assert pixels(load_image(tmp_path / "float.tiff"))[0, :, 0].tolist() == [0, 64, 255]


@pytest.mark.parametrize(("orientation", "turns"), [(3, 2), (6, -1), (8, 1)])
def test_exif_orientation_is_applied(tmp_path, orientation, turns):
    # 6 means "rotate 90 degrees clockwise to display", 8 counter-clockwise, 3 half a turn.
    stored = np.zeros((32, 64, 3), np.uint8)
    stored[:16, :16] = (255, 0, 0)  # a red marker in the stored top-left corner
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    Image.fromarray(stored).save(tmp_path / "turned.jpg", exif=exif, quality=100, subsampling=0)
    image = load_image(tmp_path / "turned.jpg")
    expected = np.rot90(stored, k=turns)
    assert image.size == (expected.shape[1], expected.shape[0])
    if orientation != 3:
        assert image.size == (32, 64)
    result = pixels(image)
    assert np.abs(result - expected).max() <= 3
    red_corner = {6: (slice(0, 16), slice(-16, None)), 8: (slice(-16, None), slice(0, 16))}
    rows, cols = red_corner.get(orientation, (slice(-16, None), slice(-16, None)))
    assert result[rows, cols, 0].min() >= 250
    assert result[rows, cols, 1:].max() <= 5


# --- load_image: bad files -----------------------------------------------------------------


def test_not_an_image_file(tmp_path):
    (tmp_path / "notes.jpg").write_text("these are words, not pixels\n")
    message = image_error(load_image, tmp_path / "notes.jpg")
    assert message.startswith(f"{tmp_path / 'notes.jpg'}: not an image file")


def test_truncated_jpeg(tmp_path):
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "full.jpg", quality=90)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "half.jpg").write_bytes(data[: len(data) // 2])
    message = image_error(load_image, tmp_path / "half.jpg")
    assert message.startswith(f"{tmp_path / 'half.jpg'}: cannot decode the image")
    assert "truncated or corrupt" in message


def test_image_over_max_pixels_is_refused_before_decoding(tmp_path):
    assert MAX_PIXELS < 9500 * 9500
    Image.new("1", (9500, 9500)).save(tmp_path / "huge.png")  # about 11 kB on disk
    message = image_error(load_image, tmp_path / "huge.png")
    assert message.startswith(f"{tmp_path / 'huge.png'}: 9500x9500 pixels is over the limit of ")
    assert f"{MAX_PIXELS:,}" in message
    assert "decompression bombs" in message
    assert "downscale" in message


def test_image_far_over_pillows_limit_is_refused(tmp_path):
    # Over twice Pillow's limit, Pillow itself refuses the file while reading its header.
    png_header_only(tmp_path / "bomb.png", 20_000, 20_000)
    message = image_error(load_image, tmp_path / "bomb.png")
    assert message.startswith(f"{tmp_path / 'bomb.png'}: too many pixels")
    assert "decompression bombs" in message
    assert "downscale" in message


def test_max_pixels_argument(tmp_path):
    Image.fromarray(blocks(10, 20)).save(tmp_path / "small.png")
    message = image_error(load_image, tmp_path / "small.png", max_pixels=199)
    assert "20x10 pixels is over the limit of 199" in message
    assert "decompression bombs" in message
    np.testing.assert_array_equal(
        pixels(load_image(tmp_path / "small.png", max_pixels=200)), blocks(10, 20)
    )


def test_folder_given_as_image(tmp_path):
    (tmp_path / "album").mkdir()
    message = image_error(load_image, tmp_path / "album")
    assert message == f"{tmp_path / 'album'}: is a folder, not an image"


def test_missing_image(tmp_path):
    message = image_error(load_image, tmp_path / "gone.png")
    assert message == f"{tmp_path / 'gone.png'}: no such file"


# --- Preprocessing -------------------------------------------------------------------------


def like(transform) -> Preprocessing:
    """A Preprocessing with the settings of a torchvision ImageClassification transform."""
    return Preprocessing(
        resize=transform.resize_size[0],
        crop=transform.crop_size[0],
        mean=tuple(transform.mean),
        std=tuple(transform.std),
        interpolation=transform.interpolation,
    )


@pytest.mark.parametrize("size", [(210, 150), (260, 390)])
def test_preprocessing_equals_torchvision_transform(size):
    photo = Image.fromarray(
        np.random.default_rng(2).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    )
    reference = ResNet50_Weights.IMAGENET1K_V2.transforms()
    assert reference.resize_size[0] != reference.crop_size[0]
    tensor, _ = like(reference)(photo)
    expected = reference(photo)
    assert tensor.dtype == torch.float32
    assert tensor.shape == expected.shape == (3, 224, 224)
    torch.testing.assert_close(tensor, expected, rtol=0, atol=1e-6)


def test_bicubic_preprocessing_equals_torchvision_transform():
    photo = Image.fromarray(np.random.default_rng(3).integers(0, 256, (170, 230, 3), np.uint8))
    image_classification = type(ResNet50_Weights.IMAGENET1K_V2.transforms())
    reference = image_classification(
        crop_size=224,
        resize_size=256,
        mean=(0.5, 0.25, 0.75),
        std=(0.5, 0.125, 0.25),
        interpolation=InterpolationMode.BICUBIC,
    )
    tensor, _ = like(reference)(photo)
    torch.testing.assert_close(tensor, reference(photo), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("size", "box"),
    [
        # 400x200 -> 512x256 (x1.28); crop offsets (512-224)/2 = 144 and (256-224)/2 = 16,
        # so the crop shows x in [144, 368) / 1.28 and y in [16, 240) / 1.28.
        ((400, 200), (112.5, 12.5, 287.5, 187.5)),
        ((200, 400), (12.5, 112.5, 187.5, 287.5)),
        ((256, 256), (16.0, 16.0, 240.0, 240.0)),  # no resize: the crop itself
        ((1000, 500), (281.25, 31.25, 718.75, 468.75)),  # shrunk to 512x256 (x0.512)
    ],
)
def test_preprocessing_box_is_the_crop_in_original_pixels(size, box):
    _, found = Preprocessing()(Image.new("RGB", size))
    assert found == pytest.approx(box, abs=1e-9)


@pytest.mark.parametrize("size", [(200, 100), (100, 200)])
def test_preprocessing_box_matches_where_markers_land(size):
    # Doubling with nearest-neighbour makes each original pixel an exact 2x2 block.
    width, height = size
    prepare = Preprocessing(
        resize=200, crop=112, mean=(0, 0, 0), std=(1, 1, 1), interpolation=InterpolationMode.NEAREST
    )
    # Resized to 2x: crop offsets ((2w - 112) / 2, (2h - 112) / 2) in resized pixels, halved.
    left, top = (2 * width - 112) // 4, (2 * height - 112) // 4
    array = np.zeros((height, width, 3), np.uint8)
    array[top, left] = (255, 0, 0)  # first pixel inside the box
    array[top + 55, left + 55] = (0, 255, 0)  # last pixel inside the box
    array[top - 1, left] = array[top, left - 1] = (0, 0, 255)  # just outside
    array[top + 56, left + 55] = array[top + 55, left + 56] = (0, 0, 255)
    tensor, box = prepare(Image.fromarray(array))
    assert box == pytest.approx((left, top, left + 56, top + 56), abs=1e-9)
    crop = (tensor * 255).round().to(torch.int64).permute(1, 2, 0).numpy()
    expected = np.zeros((112, 112, 3), np.int64)
    expected[:2, :2] = (255, 0, 0)
    expected[-2:, -2:] = (0, 255, 0)
    np.testing.assert_array_equal(crop, expected)


def test_unreadable_permissions(tmp_path, monkeypatch):
    # Root reads any file, so the denial is simulated where Pillow opens the file.
    path = tmp_path / "secret.png"
    Image.new("RGB", (4, 4)).save(path)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Image, "open", denied)
    with pytest.raises(ImageError, match=r"secret\.png: permission denied; check the file's read"):
        load_image(path)
