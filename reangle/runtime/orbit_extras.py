"""The extra assets of an orbit job: an animated WebP turntable and a labelled contact sheet."""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Sequence

from PIL import Image, ImageDraw

TURNTABLE_FRAME_MS = 500
SHEET_COLUMNS = 4
SHEET_CELL = 384  #: longest side of each view on the sheet
LABEL_HEIGHT = 18


def turntable_webp(views: Sequence[Image.Image], labels: Sequence[str], *, quality: int = 85) -> bytes:
    """All views as one looping animation, in the order given, one frame each.

    The WebP encoder merges consecutive frames that look the same into one: where two neighbouring views are
    alike (a demo engine's, or a model that ignored the pose), every frame carries its label, so the
    animation still steps through each view. Real views differ and stay unmarked."""
    buffer = io.BytesIO()
    frames = [view.convert("RGB") for view in views]
    if any(a.tobytes() == b.tobytes() for a, b in itertools.pairwise(frames)):
        count = len(frames)
        frames = [
            _labelled(frame, f"{index}/{count}  {label}")  # the index keeps even repeated azimuths apart
            for index, (frame, label) in enumerate(zip(frames, labels, strict=True), start=1)
        ]
    first, *rest = frames
    first.save(
        buffer,
        format="WEBP",
        save_all=True,
        append_images=rest,
        duration=TURNTABLE_FRAME_MS,
        loop=0,
        quality=quality,
    )
    return buffer.getvalue()


def contact_sheet(views: Sequence[Image.Image], labels: Sequence[str]) -> Image.Image:
    """A grid of the views (at most 4 a row, each at most 384 px), each with its label underneath."""
    views = [_thumbnail(view) for view in views]
    width = max(view.width for view in views)
    height = max(view.height for view in views)
    columns = min(SHEET_COLUMNS, len(views))
    rows = math.ceil(len(views) / columns)
    sheet = Image.new("RGB", (columns * width, rows * (height + LABEL_HEIGHT)), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (view, label) in enumerate(zip(views, labels, strict=True)):
        x, y = (index % columns) * width, (index // columns) * (height + LABEL_HEIGHT)
        sheet.paste(view.convert("RGB"), (x, y))
        draw.text((x + 4, y + height + 3), label, fill="black")
    return sheet


def _thumbnail(view: Image.Image) -> Image.Image:
    small = view.convert("RGB")
    small.thumbnail((SHEET_CELL, SHEET_CELL))
    return small


def _labelled(frame: Image.Image, label: str) -> Image.Image:
    marked = frame.copy()
    draw = ImageDraw.Draw(marked)
    box = draw.textbbox((4, 4), label)
    draw.rectangle((box[0] - 3, box[1] - 3, box[2] + 3, box[3] + 3), fill="white")
    draw.text((4, 4), label, fill="black")
    return marked
