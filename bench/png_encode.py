#!/usr/bin/env python
"""Time PNG encoding of one output picture: Pillow at reangle's zlib level against reangle's strip encoder.

    .venv/bin/python bench/png_encode.py --size 1024 --rounds 15

Two pictures: a photo-like one (the GPU benchmark's input) and noise (what random-weight outputs look like,
the worst case for deflate). Rounds alternate the encoders, so load on the machine hits both alike; compare
the ratio, not the milliseconds.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
from gpu_timing import make_input_png
from PIL import Image

from reangle.core.images import PNG_COMPRESS_LEVEL
from reangle.core.png import encode_png


def pillow_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def strip_png(image: Image.Image) -> bytes:
    data = encode_png(image, PNG_COMPRESS_LEVEL)
    assert data is not None
    return data


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="png_encode.py", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="picture side in pixels (default 1024)")
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds per encoder (default 15)")
    args = parser.parse_args(argv)
    if args.size < 1 or args.rounds < 1:
        parser.error("--size and --rounds must be at least 1")

    photo = Image.open(io.BytesIO(make_input_png(args.size))).convert("RGB")
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8), "RGB")
    encoders: dict[str, Callable[[Image.Image], bytes]] = {"Pillow": pillow_png, "strips": strip_png}
    cpus = os.cpu_count()
    print(f"{args.size}x{args.size}, zlib level {PNG_COMPRESS_LEVEL}, {cpus} CPUs, {args.rounds} rounds")
    print("| picture | encoder | median ms | min ms | size KB |")
    print("|---|---|---|---|---|")
    for name, picture in (("photo-like", photo), ("noise", noise)):
        times: dict[str, list[float]] = {encoder: [] for encoder in encoders}
        sizes: dict[str, int] = {}
        for _ in range(args.rounds):
            for encoder, encode in encoders.items():
                started = time.perf_counter()
                sizes[encoder] = len(encode(picture))
                times[encoder].append(time.perf_counter() - started)
        for encoder in encoders:
            median, fastest = statistics.median(times[encoder]) * 1000, min(times[encoder]) * 1000
            print(f"| {name} | {encoder} | {median:.0f} | {fastest:.0f} | {sizes[encoder] / 1024:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
