"""What the studio keeps and what it drops: the last results when a job ends without any, the newest of
several uploads, the state of a key when another is entered, and the panels when the key is refused
mid-session."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from playwright.sync_api import Error, FilePayload, Page, Request, Route, expect

from tests.conftest import image_bytes, make_image
from tests.studio.conftest import WAIT_MS, Studio, StudioFactory
from tests.studio.test_jobs import only_job, set_advanced, start_a_long_job


def generate_quickly(studio: Studio) -> None:
    set_advanced(studio.page, steps="2", width="64", height="64")
    studio.page.click("#generate")
    studio.wait_done()


def test_a_canceled_job_keeps_the_last_results(open_studio: StudioFactory, photo: Path) -> None:
    studio = open_studio().open()
    page = studio.page
    studio.upload(photo)
    generate_quickly(studio)
    results = page.locator("#results li img")
    expect(results).to_have_count(1)
    shown = results.get_attribute("src")
    start_a_long_job(studio, photo)
    page.click("#cancel")
    studio.wait_done("Canceled")
    expect(results).to_have_count(1)
    assert results.get_attribute("src") == shown
    # the canceled job loaded back from the history brings its settings, and leaves the results as they are
    canceled = only_canceled(studio)
    page.fill("#steps", "7")
    page.locator(f"#history [data-job='{canceled}']").click()
    expect(page.locator("#steps")).to_have_value("100")  # loaded (the results are shown in the same task)
    expect(results).to_have_count(1)
    assert results.get_attribute("src") == shown
    expect(page.locator("#compare")).to_be_visible()


def only_canceled(studio: Studio) -> str:
    headers = {"Authorization": f"Bearer {studio.key}"}
    jobs = httpx.get(f"{studio.server_url}/v1/jobs", headers=headers).json()["data"]
    (job_id,) = (job["id"] for job in jobs if job["status"] == "canceled")
    return str(job_id)


def choose(page: Page, name: str, width: int, height: int) -> None:
    data = image_bytes(make_image(width, height), "PNG")
    page.set_input_files("#file-input", files=[FilePayload(name=name, mimeType="image/png", buffer=data)])


def wait_until(page: Page, condition: Callable[[], bool]) -> None:
    """Let the page and its routes run until `condition()` holds (what the test waits on is in Python)."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        page.wait_for_timeout(20)


def test_the_last_file_chosen_is_the_input_and_generate_waits_for_its_upload(
    open_studio: StudioFactory, photo: Path
) -> None:
    studio = open_studio().open()
    page = studio.page
    studio.upload(photo)
    set_advanced(page, steps="2", width="64", height="64")
    held: list[Route] = []  # the uploads after the photo, answered when the test says

    def hold_upload(route: Route) -> None:
        if route.request.method == "POST":
            held.append(route)
        else:
            route.fallback()

    page.route("**/v1/assets", hold_upload)
    settled: list[Request] = []
    page.on("requestfinished", lambda request: settled.append(request))
    page.on("requestfailed", lambda request: settled.append(request))
    choose(page, "big.png", 120, 80)
    choose(page, "small.png", 40, 30)
    wait_until(page, lambda: len(held) == 2)
    # Generate while small.png is on its way waits for it, as for a job: said, and Cancel abandons the wait
    page.click("#generate")
    expect(page.locator("#progress-text")).to_have_text("Waiting for the upload…")
    expect(page.locator("#generate")).to_be_disabled()
    page.click("#cancel")
    expect(page.locator("#progress-text")).to_have_text("Canceled")
    expect(page.locator("#generate")).to_be_enabled()
    expect(page.locator("#cancel")).to_be_disabled()
    page.click("#generate")  # waits for small.png again, and then sends it, not the photo
    expect(page.locator("#progress-text")).to_have_text("Waiting for the upload…")
    held[1].continue_()
    studio.wait_done()
    with contextlib.suppress(Error):  # the page may have given up on it already
        held[0].continue_()  # the big one, answered last
    wait_until(page, lambda: held[0].request in settled)
    page.evaluate("() => fetch('/healthz').then((response) => response.json())")  # its answer handled, if any
    expect(page.locator("#input-status")).to_have_text("Input: small.png (40x30)")
    job = only_job(studio)
    image = job["input"]["images"][0]  # type: ignore[index]
    asset = httpx.get(
        f"{studio.server_url}/v1/assets/{image}", headers={"Authorization": f"Bearer {studio.key}"}
    ).json()
    assert (asset["width"], asset["height"]) == (40, 30)


def test_another_key_starts_afresh(open_studio: StudioFactory, photo: Path) -> None:
    studio = open_studio().open()
    page = studio.page
    studio.upload(photo)
    generate_quickly(studio)
    expect(page.locator("#results li")).to_have_count(1)
    start_a_long_job(studio, photo)  # followed when the key changes
    headers = {"Authorization": f"Bearer {studio.key}"}
    old_job = httpx.get(f"{studio.server_url}/v1/jobs", headers=headers).json()["data"][0]["id"]
    page.fill("#api-key", studio.new_key())
    page.click("#save-key")
    expect(page.locator("#key-status")).to_have_text("Key accepted.")
    expect(page.locator("#results li")).to_have_count(0)
    expect(page.locator("#compare")).to_be_hidden()
    expect(page.locator("#input-preview")).to_be_hidden()
    expect(page.locator("#input-status")).to_have_text("")
    expect(page.locator("#history li")).to_have_count(0)
    expect(page.locator("#generate")).to_be_enabled()  # the old key's job is no longer followed
    expect(page.locator("#progress-text")).to_have_text("")
    expect(page.locator("#generate-error")).to_be_hidden()
    assert page.evaluate("() => sessionStorage.getItem('reangle.followedJob')") is None
    page.click("#generate")
    expect(page.locator("#images-error")).to_contain_text("Bring an image first")
    old = httpx.get(f"{studio.server_url}/v1/jobs/{old_job}", headers=headers).json()
    assert old["status"] in ("processing", "succeeded")  # not canceled: only no longer followed here


def test_a_key_refused_mid_session_locks_the_panels(open_studio: StudioFactory) -> None:
    studio = open_studio().open()
    page = studio.page
    expect(page.locator("#key-status")).to_have_text("Key accepted.")

    def revoked(route: Route) -> None:
        route.fulfill(
            status=401,
            json={"error": {"code": "unauthorized", "message": "this API key is not valid"}},
        )

    page.route(re.compile(r".*/v1/.*"), revoked)  # as a server does once the key is revoked
    page.click("#refresh-history")
    expect(page.locator("#api-key-error")).to_have_text(
        "The server refused this key: this API key is not valid"
    )
    expect(page.locator("#key-status")).to_have_text("Enter your API key above to start.")
    expect(page.locator("#studio")).to_have_js_property("inert", True)
    expect(page.locator("#api-key")).to_be_focused()
    page.unroute(re.compile(r".*/v1/.*"), revoked)
    page.fill("#api-key", studio.new_key())
    page.click("#save-key")
    expect(page.locator("#key-status")).to_have_text("Key accepted.")
    expect(page.locator("#studio")).to_have_js_property("inert", False)


def test_a_mistyped_key_keeps_the_one_in_use_and_its_work(open_studio: StudioFactory, photo: Path) -> None:
    studio = open_studio().open()
    page = studio.page
    studio.upload(photo)
    generate_quickly(studio)
    expect(page.locator("#history li")).to_have_count(1)
    page.fill("#api-key", "mistyped")
    page.click("#save-key")
    expect(page.locator("#api-key-error")).to_contain_text("The server refused this key")
    expect(page.locator("#key-status")).to_have_text("Still using the key accepted before.")
    expect(page.locator("#studio")).to_have_js_property("inert", False)
    expect(page.locator("#results li")).to_have_count(1)
    expect(page.locator("#input-preview")).to_be_visible()
    expect(page.locator("#history li")).to_have_count(1)
    assert page.evaluate("() => localStorage.getItem('reangle.apiKey')") == studio.key
    page.click("#refresh-history")  # the requests still go with the accepted key
    expect(page.locator("#history li")).to_have_count(1)
    expect(page.locator("#history-error")).to_be_hidden()
    # the field emptied: the kept key is forgotten, and the page cleared as for another key
    page.fill("#api-key", "")
    page.click("#save-key")
    expect(page.locator("#key-status")).to_have_text(
        "Key forgotten: this browser no longer keeps it. Enter a key to start again."
    )
    expect(page.locator("#api-key-error")).to_be_hidden()
    expect(page.locator("#studio")).to_have_js_property("inert", True)
    expect(page.locator("#results li")).to_have_count(0)
    expect(page.locator("#input-preview")).to_be_hidden()
    expect(page.locator("#history li")).to_have_count(0)
    assert page.evaluate("() => localStorage.getItem('reangle.apiKey')") is None
    assert page.evaluate("() => localStorage.getItem('reangle.form')") is None
    page.fill("#api-key", studio.key or "")
    page.click("#save-key")
    expect(page.locator("#key-status")).to_have_text("Key accepted.")
    expect(page.locator("#studio")).to_have_js_property("inert", False)


def test_a_reload_brings_the_form_back_and_a_new_key_clears_it(
    open_studio: StudioFactory, photo: Path
) -> None:
    studio = open_studio().open()
    page = studio.page
    studio.upload(photo)
    page.fill("#prompt", "make it dusk")
    page.fill("#horizontal-angle-number", "90")
    page.fill("#zoom-number", "8")
    set_advanced(page, steps="7", seed="42", width="64", height="64")
    page.select_option("#output-format", "webp")
    page.click("#path-add")
    page.fill("#vertical-angle-number", "30")
    page.click("#path-add")
    page.reload()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.locator("#prompt")).to_have_value("make it dusk")
    expect(page.locator("#horizontal-angle-number")).to_have_value("90")
    expect(page.locator("#vertical-angle-number")).to_have_value("30")
    expect(page.locator("#zoom-number")).to_have_value("8")
    for control, value in {
        "steps": "7",
        "seed": "42",
        "width": "64",
        "height": "64",
        "output-format": "webp",
    }.items():
        expect(page.locator(f"#{control}")).to_have_value(value)
    expect(page.locator("#path-list li")).to_have_count(2)
    expect(page.locator("#input-status")).to_have_text("Input: photo.png (96x64)")
    expect(page.locator("#input-preview")).to_be_visible()
    page.click("#generate")  # the image came back as the input
    studio.wait_done()
    assert only_job(studio)["input"]["images"] == [  # type: ignore[index]
        page.evaluate("() => JSON.parse(localStorage.getItem('reangle.form')).input.assetId")
    ]
    page.fill("#api-key", studio.new_key())
    page.click("#save-key")
    expect(page.locator("#key-status")).to_have_text("Key accepted.")
    expect(page.locator("#prompt")).to_have_value("")
    expect(page.locator("#steps")).to_have_value("")
    expect(page.locator("#path-list li")).to_have_count(0)
    page.reload()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.locator("#prompt")).to_have_value("")
    expect(page.locator("#horizontal-angle-number")).to_have_value("0")
    expect(page.locator("#input-preview")).to_be_hidden()


def test_a_kept_image_no_longer_on_the_server_is_said_quietly(open_studio: StudioFactory) -> None:
    studio = open_studio()
    kept = {"options": {"prompt": "kept"}, "input": {"assetId": "asset_gone", "label": "gone.png (8x8)"}}
    studio.page.context.add_init_script(
        f"localStorage.setItem('reangle.form', {json.dumps(json.dumps(kept))})"
    )
    page = studio.open().page
    expect(page.locator("#input-status")).to_have_text(
        "The image of last time is no longer on the server: bring it again."
    )
    expect(page.locator("#prompt")).to_have_value("kept")
    expect(page.locator("#input-preview")).to_be_hidden()
    expect(page.locator("#images-error")).to_be_hidden()
