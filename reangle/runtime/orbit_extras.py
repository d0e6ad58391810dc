"""The extra assets of an orbit job: an animated WebP turntable and a labelled contact sheet."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from PIL import Image, ImageDraw

TURNTABLE_FRAME_MS = 500
SHEET_COLUMNS = 4
SHEET_CELL = 384  #: longest side of each view on the sheet
LABEL_HEIGHT = 18


def turntable_webp(views: Sequence[Image.Image], *, quality: int = 85) -> bytes:
    """All views as one looping animation, in the order given."""
    buffer = io.BytesIO()
    first, *rest = [view.convert("RGB") for view in views]
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
