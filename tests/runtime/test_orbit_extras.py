from __future__ import annotations

import io

from PIL import Image

from reangle.runtime.orbit_extras import SHEET_CELL, contact_sheet, turntable_webp
from tests.conftest import make_image

VIEWS = [make_image(800, 600, color=(c, 0, 0)) for c in range(0, 250, 50)]


LABELS = [f"{45 * i} deg" for i in range(len(VIEWS))]


def test_turntable_is_an_animated_looping_webp_with_one_frame_per_view():
    with Image.open(io.BytesIO(turntable_webp(VIEWS, LABELS))) as animation:
        assert animation.format == "WEBP"
        assert animation.n_frames == len(VIEWS)
        assert animation.size == (800, 600)


def test_identical_neighbouring_views_still_get_a_frame_each():
    """The WebP encoder would merge them into one frame; their labels keep them apart."""
    alike = [make_image(160, 96, color=(40, 80, 120)) for _ in range(8)]
    with Image.open(io.BytesIO(turntable_webp(alike, [f"{45 * i}" for i in range(8)]))) as animation:
        assert animation.n_frames == 8
    with Image.open(io.BytesIO(turntable_webp(alike[:3], ["0", "0", "90"]))) as animation:
        assert animation.n_frames == 3  # a repeated azimuth too


def test_contact_sheet_is_a_grid_of_thumbnails_at_most_four_wide():
    sheet = contact_sheet(VIEWS, [f"view {i}" for i in range(len(VIEWS))])
    cell_w, cell_h = SHEET_CELL, SHEET_CELL * 600 // 800
    assert sheet.width == 4 * cell_w
    assert sheet.height >= 2 * cell_h
    assert sheet.getpixel((cell_w + 10, 10)) != sheet.getpixel((10, 10))  # different views side by side
