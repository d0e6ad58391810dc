from __future__ import annotations

import io
import random
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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


def chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk with its length and CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a size in its header and holds almost nothing (a decompression bomb's shape)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _png_with(extra: bytes) -> bytes:
    """A valid 1x1 PNG with `extra` chunks between its header and its data."""
    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\x10\x20\x30")
    return PNG_SIGNATURE + chunk(b"IHDR", header) + extra + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


HOSTILE = [
    pytest.param(
        PNG_SIGNATURE + b"\x00\x00\x00\x04IHDR\x00\x00\x00\x01\x85\x09\xd9\xf6", id="truncated IHDR"
    ),
    pytest.param(_png_with(chunk(b"zTXt", b"k\x00\x00" + zlib.compress(b"a" * 3_000_000))), id="zTXt bomb"),
    pytest.param(
        _png_with(chunk(b"iTXt", b"k\x00\x01\x00\x00\x00" + zlib.compress(b"a" * 3_000_000))), id="iTXt bomb"
    ),
    pytest.param(_png_with(chunk(b"acTL", b"\x00\x00")), id="truncated acTL"),
    pytest.param(_png_with(chunk(b"fcTL", b"\x00" * 5)), id="truncated fcTL"),
    pytest.param(_png_with(chunk(b"pHYs", b"\x00")), id="truncated pHYs"),
]


@pytest.mark.parametrize("data", HOSTILE)
def test_a_hostile_png_is_an_invalid_image_whatever_pillow_raises(data: bytes) -> None:
    """Each of these made Pillow raise something other than OSError (ValueError, struct.error...)."""
    with pytest.raises((InvalidImage, TooLarge)) as caught:
        decode_image(data, name="input")
    assert caught.value.field == "input"
    assert caught.value.message.startswith("input ")


SEEDS = {fmt: image_bytes(make_image(24, 16), fmt) for fmt in ("PNG", "JPEG", "WEBP")}
#: Chunk types whose payloads Pillow parses; a fuzzed PNG gets its CRCs fixed so that these parsers run.
PNG_CHUNKS = [b"IHDR", b"PLTE", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"tEXt", b"zTXt", b"iTXt"]
PNG_CHUNKS += [b"pHYs", b"eXIf", b"acTL", b"fcTL", b"fdAT", b"IDAT"]


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, at = [], len(PNG_SIGNATURE)
    while at + 8 <= len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        chunks.append((data[at + 4 : at + 8], data[at + 8 : at + 8 + length]))
        at += 12 + length
    return chunks


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    """A seed PNG, JPEG or WebP with bytes flipped, cut, repeated or inserted; for PNG also whole chunks
    changed, added or dropped with valid CRCs, so that the chunk parsers behind the CRC check are reached."""
    fmt = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[fmt])
    if fmt == "PNG" and draw(st.booleans()):
        chunks = _png_chunks(bytes(data))
        for _ in range(draw(st.integers(1, 3))):
            at = draw(st.integers(0, len(chunks)))
            kind = draw(st.sampled_from(PNG_CHUNKS))
            chunks.insert(at, (kind, draw(st.binary(max_size=40))))
        if draw(st.booleans()):
            del chunks[draw(st.integers(0, len(chunks) - 1))]
        return PNG_SIGNATURE + b"".join(chunk(kind, payload) for kind, payload in chunks)
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data)))
        match draw(st.sampled_from(["flip", "cut", "repeat", "insert"])):
            case "flip" if at < len(data):
                data[at] ^= draw(st.integers(1, 255))
            case "cut":
                del data[at : at + draw(st.integers(1, 64))]
            case "repeat":
                data[at:at] = data[at : at + draw(st.integers(1, 64))]
            case _:
                data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@settings(max_examples=600, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_images())
def test_mutated_images_decode_or_fail_as_a_clear_error(data: bytes) -> None:
    """Bounded and repeatable (the same 600 inputs every run): any other exception would be a 500."""
    try:
        decoded = decode_image(data, name="input")
    except (InvalidImage, TooLarge, UnsupportedImage):
        return  # a clear 413, 415 or 422
    assert decoded.image.mode == "RGB"


def test_a_decompression_bomb_is_too_large_not_a_crash():
    with pytest.raises(TooLarge, match="more pixels than the limit"):
        decode_image(_png_header_only(30_000, 30_000))
