"""reangle.core.png: the strip-parallel PNG encoder, checked against Pillow's and zlib's own decoders."""

from __future__ import annotations

import io
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from reangle.core import png
from reangle.core.images import encode_image
from tests.core.test_images import natural_image


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of each chunk, each CRC checked."""
    assert data[:8] == png.SIGNATURE
    found, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind, body = data[offset + 4 : offset + 8], data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        found.append((kind, body))
        offset += 12 + length
    return found


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_a_picture_of_many_strips_is_one_valid_zlib_stream_decoding_to_the_same_pixels() -> None:
    image = natural_image(512).resize((300, 1200))  # 900 bytes a row: five strips
    data = png.encode_png(image, 1)
    assert data is not None

    parts = chunks(data)
    assert [kind for kind, _ in parts] == [b"IHDR", b"IDAT", b"IEND"]
    raw = zlib.decompress(parts[1][1])  # checks the joined stream's Adler-32
    assert len(raw) == 1200 * (1 + 300 * 3)
    assert np.array_equal(np.asarray(decoded(data)), np.asarray(image))
    assert 4 * png.STRIP_BYTES < 1200 * 901


@pytest.mark.parametrize("size", [(1, 1), (1, 700), (700, 1), (17, 3)])
@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_odd_sizes_and_each_mode_round_trip(size: tuple[int, int], mode: str) -> None:
    rng = np.random.default_rng(size[0] * 1000 + size[1])
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    image = Image.fromarray(pixels.squeeze(-1) if mode == "L" else pixels, mode)

    back = decoded(encode_image(image, "png"))

    assert (back.mode, back.size) == (mode, size)
    assert back.tobytes() == image.tobytes()


def test_other_modes_are_left_to_pillow() -> None:
    image = natural_image(64).convert("P")
    assert png.encode_png(image, 1) is None
    back = decoded(encode_image(image, "png"))
    assert back.mode == "P"
    assert back.tobytes() == image.tobytes()


def test_the_bytes_do_not_depend_on_how_many_threads_compress(monkeypatch: pytest.MonkeyPatch) -> None:
    image = natural_image(512)
    many = png.encode_png(image, 1)
    with ThreadPoolExecutor(max_workers=1) as single:
        monkeypatch.setattr(png, "_pool", lambda: single)
        assert png.encode_png(image, 1) == many


def test_it_compresses_a_photo_about_as_well_as_pillow() -> None:
    image = natural_image(512)
    pillow = io.BytesIO()
    image.save(pillow, format="PNG", compress_level=1)
    ours = png.encode_png(image, 1)
    assert ours is not None
    assert len(ours) < 1.05 * len(pillow.getvalue())
