"""The history while it refreshes itself (a listed job unfinished): rows updated in place, so the keyboard
focus stays where it was and a thumbnail shown is not downloaded again; and the links that make that so."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.studio.conftest import StudioFactory
from tests.studio.test_jobs import api_job


def test_the_keyboard_focus_stays_on_its_row_while_the_history_refreshes(open_studio: StudioFactory) -> None:
    studio = open_studio()
    done = api_job(studio, "edit", num_inference_steps=1)
    running = str(api_job(studio, "edit", wait=False, num_inference_steps=60)["id"])
    page = studio.open().page
    status = page.locator(f"#history [data-job='{running}'] .status")
    expect(status).to_have_text(re.compile("queued|processing"))
    row = page.locator(f"#history [data-job='{done['id']}']")
    row.focus()
    page.evaluate("() => { window.focusedRow = document.activeElement; }")
    expect(status).to_have_text("succeeded")  # refreshed meanwhile, with no click
    expect(row).to_be_focused()
    assert page.evaluate("() => document.activeElement === window.focusedRow")


def test_a_thumbnail_is_not_downloaded_again_by_a_refresh(open_studio: StudioFactory) -> None:
    studio = open_studio()
    done = api_job(studio, "edit", num_inference_steps=1)
    thumbnail = done["output"]["assets"][0]["id"]  # type: ignore[index]
    running = str(api_job(studio, "edit", wait=False, num_inference_steps=60)["id"])
    page = studio.open().page
    expect(page.locator(f"#history [data-job='{done['id']}'] img")).to_have_js_property("complete", True)
    expect(page.locator(f"#history [data-job='{running}'] .status")).to_have_text("succeeded")
    downloads = [url for url in studio.requests if f"/v1/files/{thumbnail}?" in url]
    assert len(downloads) == 1, downloads
