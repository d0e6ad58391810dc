from __future__ import annotations

import io
import random
import struct
import zlib

import pytest
from PIL import Image, ImageDraw, ImageFilter

from reangle.core.images import decode_image, encode_image, read_image_file
from reangle.errors import InvalidImage, InvalidInput, TooLarge, UnsupportedImage
from tests.conftest import image_bytes, make_image


@pytest.mark.parametrize(
    ("fmt", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")]
)
def test_accepted_formats_decode_to_rgb(fmt, mime):  # type: ignore[no-untyped-def]
    decoded = decode_image(image_bytes(make_image(40, 30).convert("RGBA" if fmt == "PNG" else "RGB"), fmt))
    assert decoded.mime_type == mime
    assert decoded.image.mode == "RGB"
    assert decoded.image.size == (40, 30)


def test_other_image_formats_are_rejected_by_content_not_name():
    with pytest.raises(UnsupportedImage, match="GIF image; only PNG, JPEG and WebP"):
        decode_image(image_bytes(make_image(), "GIF"), name="photo.png")


def test_bytes_that_are_not_an_image_are_rejected():
    with pytest.raises(InvalidImage, match=r"photo\.jpg is not an image"):
        decode_image(b"hello, this is text", name="photo.jpg")


def test_a_truncated_image_is_rejected():
    data = image_bytes(make_image(200, 150), "JPEG")
    with pytest.raises(InvalidImage, match="truncated"):
        decode_image(data[: len(data) // 2])


def test_pixel_limit():
    data = image_bytes(make_image(100, 100), "PNG")
    with pytest.raises(TooLarge, match="100x100 pixels, more than the limit of 9,999"):
        decode_image(data, max_pixels=9_999)
    assert decode_image(data, max_pixels=10_000).image.size == (100, 100)


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = image_bytes(make_image(80, 60), "JPEG", exif=exif.tobytes())
    assert decode_image(data).image.size == (60, 80)


def test_missing_file_is_a_clear_input_error(tmp_path):  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput, match="input file not found"):
        read_image_file(tmp_path / "nope.png")


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_encoding_is_deterministic_and_decodable(fmt):  # type: ignore[no-untyped-def]
    image = make_image()
    first, second = encode_image(image, fmt), encode_image(image, fmt)  # type: ignore[arg-type]
    assert first == second
    assert Image.open(io.BytesIO(first)).format == fmt.upper()


def natural_image(size: int = 256, seed: int = 0) -> Image.Image:
    """Gradients, soft shapes, texture and mild noise: a photo's statistics, neither pure noise nor flat."""
    rng = random.Random(seed)
    gradient = Image.linear_gradient("L").resize((size, size))
    radial = Image.radial_gradient("L").resize((size, size))
    image = Image.merge("RGB", (gradient, radial, gradient.transpose(Image.Transpose.ROTATE_90)))
    draw = ImageDraw.Draw(image)
    for _ in range(8):
        x, y, r = rng.randrange(size), rng.randrange(size), rng.randrange(size // 16, size // 4)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(rng.randrange(256), rng.randrange(256), 90))
    image = image.filter(ImageFilter.GaussianBlur(2))
    coarse = Image.frombytes("RGB", (size // 8, size // 8), rng.randbytes(3 * (size // 8) ** 2))
    image = Image.blend(image, coarse.resize((size, size), Image.Resampling.BICUBIC), 0.15)
    return Image.blend(image, Image.frombytes("RGB", (size, size), rng.randbytes(3 * size * size)), 0.03)


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_png_output_is_lossless_and_the_same_bytes_for_the_same_pixels(mode: str) -> None:
    def picture() -> Image.Image:
        image = natural_image().convert(mode)
        if mode == "RGBA":
            image.putalpha(Image.radial_gradient("L").resize(image.size))
        return image

    image = picture()
    data = encode_image(image, "png")
    with Image.open(io.BytesIO(data)) as decoded:
        assert (decoded.format, decoded.mode, decoded.size) == ("PNG", mode, image.size)
        assert decoded.tobytes() == image.tobytes()
    assert encode_image(picture(), "png") == data  # another image object with the same pixels


def test_png_output_is_compressed() -> None:
    image = natural_image()
    assert len(encode_image(image, "png")) < 0.8 * len(image.tobytes())


def test_lower_quality_gives_smaller_jpeg():
    image = make_image(200, 200)
    assert len(encode_image(image, "jpeg", 10)) < len(encode_image(image, "jpeg", 95))


@pytest.mark.parametrize(("fmt", "quality"), [("gif", 90), ("png", 0), ("jpeg", 101)])
def test_bad_encoding_options(fmt, quality):  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput):
        encode_image(make_image(), fmt, quality)  # type: ignore[arg-type]


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a size in its header and holds almost nothing (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def test_a_decompression_bomb_is_too_large_not_a_crash():
    with pytest.raises(TooLarge, match="more pixels than the limit"):
        decode_image(_png_header_only(30_000, 30_000))
