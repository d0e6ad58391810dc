"""The history while it refreshes itself (a listed job unfinished): rows updated in place, so the keyboard
focus stays where it was and a thumbnail shown is not downloaded again; and the links that make that so."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
from playwright.sync_api import Page, expect

from tests.studio.conftest import Studio, StudioFactory
from tests.studio.test_jobs import HISTORY_POLL_MS, api_job, hold_the_runner, wait_for_status


def open_with_a_waiting_job(studio: Studio) -> tuple[Page, str, Callable[[], None]]:
    """The page opened while a job of its key waits, queued (the runner held), and seen so in the history;
    and a function that lets the job run to its end and moves the page's clock on to its next refresh."""
    release = hold_the_runner(studio)
    waiting = str(api_job(studio, "edit", wait=False, num_inference_steps=1)["id"])
    page = studio.page
    page.clock.install()  # the page's own timers, moved on below rather than waited for
    studio.open()
    expect(page.locator(f"#history [data-job='{waiting}'] .status")).to_have_text(
        re.compile("queued|processing")
    )

    def end_it() -> None:
        release()
        wait_for_status(studio, waiting, "succeeded")
        page.clock.fast_forward(HISTORY_POLL_MS)

    return page, waiting, end_it


def test_the_keyboard_focus_stays_on_its_row_while_the_history_refreshes(open_studio: StudioFactory) -> None:
    studio = open_studio()
    done = api_job(studio, "edit", num_inference_steps=1)
    page, waiting, end_it = open_with_a_waiting_job(studio)
    status = page.locator(f"#history [data-job='{waiting}'] .status")
    row = page.locator(f"#history [data-job='{done['id']}']")
    row.focus()
    page.evaluate("() => { window.focusedRow = document.activeElement; }")
    end_it()
    expect(status).to_have_text("succeeded")  # refreshed meanwhile, with no click
    expect(row).to_be_focused()
    assert page.evaluate("() => document.activeElement === window.focusedRow")


def test_a_thumbnail_is_not_downloaded_again_by_a_refresh(open_studio: StudioFactory) -> None:
    studio = open_studio()
    done = api_job(studio, "edit", num_inference_steps=1)
    thumbnail = done["output"]["assets"][0]["id"]  # type: ignore[index]
    page, waiting, end_it = open_with_a_waiting_job(studio)
    expect(page.locator(f"#history [data-job='{done['id']}'] img")).to_have_js_property("complete", True)
    end_it()
    expect(page.locator(f"#history [data-job='{waiting}'] .status")).to_have_text("succeeded")
    downloads = [url for url in studio.requests if f"/v1/files/{thumbnail}?" in url]
    assert len(downloads) == 1, downloads


def test_a_long_prompt_keeps_its_row_short_and_says_it_all_by_name(open_studio: StudioFactory) -> None:
    studio = open_studio()
    prompt = "make it dusk, " * 140
    job = api_job(studio, "edit", prompt=prompt.strip(), num_inference_steps=1, width=64, height=64)
    page = studio.open().page
    row = page.locator(f"#history [data-job='{job['id']}']")
    expect(row).to_be_visible()
    box = row.bounding_box()
    assert box is not None
    assert box["height"] < 120, box
    assert prompt.strip() in str(row.get_attribute("aria-label"))
    assert prompt.strip() in str(row.get_attribute("title"))


def test_a_job_of_another_model_is_named_and_not_loaded_as_a_camera_edit(open_studio: StudioFactory) -> None:
    studio = open_studio()
    headers = {"Authorization": f"Bearer {studio.key}"}
    response = httpx.post(
        f"{studio.server_url}/v1/jobs?wait=30",
        json={
            "model": "qwen-image-2512",
            "kind": "edit",
            "input": {"prompt": "a red fox", "width": 64, "height": 64, "num_inference_steps": 1},
        },
        headers=headers,
        timeout=40,
    )
    assert response.status_code == 200, response.text
    job = response.json()
    page = studio.open().page
    page.fill("#prompt", "mine")
    page.fill("#horizontal-angle-number", "90")
    row = page.locator(f"#history [data-job='{job['id']}']")
    expect(row.locator(".settings")).to_contain_text("qwen-image-2512 edit:")
    row.click()
    expect(page.locator("#history-status")).to_contain_text("of the model qwen-image-2512")
    expect(page.locator("#results li")).to_have_count(1)  # its outputs are shown
    expect(page.locator("#prompt")).to_have_value("mine")  # the form is not its
    expect(page.locator("#horizontal-angle-number")).to_have_value("90")
