"""Decode input images strictly (real content, not the file name) and encode outputs."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from PIL import Image, ImageOps, UnidentifiedImageError

from reangle.core.png import encode_png
from reangle.errors import InvalidImage, InvalidInput, ReangleError, TooLarge, UnsupportedImage

OutputFormat = Literal["png", "jpeg", "webp"]
OUTPUT_FORMATS: tuple[OutputFormat, ...] = ("png", "jpeg", "webp")
ACCEPTED_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
MIME_TYPES: dict[OutputFormat, str] = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
DEFAULT_MAX_PIXELS = 40_000_000
#: zlib level of PNG outputs. On a 1024x1024 natural image, level 1 encodes about 6x faster than Pillow's
#: default (6) for a file about 17 % larger; the levels in between buy a few percent each for much more time
#: (docs/benchmarks.md). PNG stays lossless at every level.
PNG_COMPRESS_LEVEL = 1


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, EXIF orientation applied
    mime_type: str


def decode_image(data: bytes, *, name: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode PNG, JPEG or WebP bytes fully; anything else, truncated or oversized is an InvalidImage (or
    TooLarge, UnsupportedImage), whatever a hostile file makes Pillow raise."""
    try:
        return _decode(data, name, max_pixels)
    except ReangleError:
        raise
    except MemoryError:
        raise TooLarge(f"{name} needs more memory to decode than this server has", field=name) from None
    except Exception as exc:  # Pillow raises ValueError, struct.error, IndexError... on crafted files
        raise InvalidImage(
            f"{name} could not be decoded ({type(exc).__name__}: {_short(exc)})", field=name
        ) from None


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 120 else text[:117] + "..."


def _decode(data: bytes, name: str, max_pixels: int) -> DecodedImage:
    try:
        with Image.open(io.BytesIO(data)) as probe:
            kind = probe.format or "unknown"
            width, height = probe.size
    except UnidentifiedImageError:
        raise InvalidImage(f"{name} is not an image (expected PNG, JPEG or WebP)", field=name) from None
    except Image.DecompressionBombError:  # Pillow will not even open it: far past any sane limit
        raise TooLarge(f"{name} has more pixels than the limit of {max_pixels:,}", field=name) from None
    except (OSError, SyntaxError) as exc:
        raise InvalidImage(f"{name} could not be read ({exc}); is the file truncated?", field=name) from None
    if kind not in ACCEPTED_FORMATS:
        raise UnsupportedImage(f"{name} is a {kind} image; only PNG, JPEG and WebP are accepted", field=name)
    if width * height > max_pixels:
        raise TooLarge(
            f"{name} is {width}x{height} pixels, more than the limit of {max_pixels:,}", field=name
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()
    except (OSError, SyntaxError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise InvalidImage(
            f"{name} could not be decoded ({exc}); is the file truncated?", field=name
        ) from None
    # in place, and converted only when not RGB already: a copy of a 40 MP image is 120 MB more at the peak
    ImageOps.exif_transpose(image, in_place=True)
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return DecodedImage(image=rgb, mime_type=ACCEPTED_FORMATS[kind])


def read_image_file(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InvalidInput(f"input file not found: {path}", field="images") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}", field="images") from None
    return decode_image(data, name=str(path), max_pixels=max_pixels)


def encode_image(image: Image.Image, fmt: OutputFormat = "png", quality: int = 90) -> bytes:
    """Encode without metadata, so the same pixels always give the same bytes."""
    if fmt not in OUTPUT_FORMATS:
        raise InvalidInput(
            f"output format must be one of {', '.join(OUTPUT_FORMATS)}, got {fmt!r}", field="format"
        )
    if not 1 <= quality <= 100:
        raise InvalidInput(f"quality must be between 1 and 100, got {quality}", field="quality")
    if fmt == "png":
        data = encode_png(image, PNG_COMPRESS_LEVEL)
        if data is not None:
            return data
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    elif fmt == "jpeg":
        image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    else:
        image.save(buffer, format="WEBP", quality=quality)
    return buffer.getvalue()
