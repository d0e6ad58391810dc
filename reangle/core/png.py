"""A PNG encoder that compresses strips of rows on several threads.

Pillow deflates a picture on one thread: about 150 ms for a 1024x1024 output even at zlib level 1, a tenth
of a fast GPU edit (docs/benchmarks.md 1.4). Here each strip of rows is deflated on its own (zlib releases the
GIL) and the pieces are joined into one valid zlib stream: every strip but the last ends with a full flush,
which ends on a byte boundary with no final-block bit, and the checksum is the Adler-32 of all the rows. The
strips depend on the picture's size only, so the same pixels give the same bytes on any machine.
"""

from __future__ import annotations

import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import numpy as np
from PIL import Image

#: Pillow modes written here, with their PNG colour type; other modes are left to Pillow.
COLOUR_TYPES = {"L": 0, "RGB": 2, "RGBA": 6}
SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Filtered bytes per strip: small enough to spread a 1 MP picture over several cores, large enough that
#: each strip compresses nearly as well as the whole would.
STRIP_BYTES = 256 * 1024
FILTER_UP = 2


def encode_png(image: Image.Image, level: int) -> bytes | None:
    """The picture as PNG bytes, or None for a mode this encoder does not write (Pillow's job then)."""
    colour_type = COLOUR_TYPES.get(image.mode)
    if colour_type is None:
        return None
    pixels = np.asarray(image, dtype=np.uint8)
    height, width = image.height, image.width
    rows = pixels.reshape(height, -1)
    filtered = up_filtered(rows)
    row_bytes = filtered.shape[1]
    step = max(1, STRIP_BYTES // row_bytes)  # rows per strip
    strips = [filtered[start : start + step].tobytes() for start in range(0, height, step)]
    last = len(strips) - 1
    pieces = list(_pool().map(lambda job: _deflate(job[1], level, final=job[0] == last), enumerate(strips)))
    checksum = 1
    for strip in strips:
        checksum = zlib.adler32(strip, checksum)
    header = bytes([0x78, 0x01])  # deflate, 32 KiB window, no dictionary (the level hint is informative)
    stream = header + b"".join(pieces) + struct.pack(">I", checksum)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", stream) + _chunk(b"IEND", b"")


def up_filtered(rows: np.ndarray) -> np.ndarray:
    """Each row as PNG filter type 2 (Up: the byte minus the one above it, mod 256), led by its filter byte.

    Up suits photographs and renders, whose rows resemble the row above, and is one vectorised subtraction."""
    difference = rows.copy()
    np.subtract(rows[1:], rows[:-1], out=difference[1:])
    lead = np.full((rows.shape[0], 1), FILTER_UP, dtype=np.uint8)
    return np.concatenate([lead, difference], axis=1)


def _deflate(data: bytes, level: int, *, final: bool) -> bytes:
    compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush(zlib.Z_FINISH if final else zlib.Z_FULL_FLUSH)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="reangle-png")
