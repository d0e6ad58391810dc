"""The studio's job flow in a real browser: bring an image, generate with live progress, cancel, errors next
to their controls, orbit with its turntable, a path of chosen poses, and the history."""

from __future__ import annotations

import base64
import random
import re
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from PIL import Image
from playwright.sync_api import Page, Route, expect

from tests.api.conftest import ServerProcess
from tests.conftest import image_bytes, make_image
from tests.studio.conftest import WAIT_MS, Studio, StudioFactory, drop_file

#: What #progress-text shows each time the page lets go (with the bar's value), and every text it was given:
#: texts set one after the other in one task (from one chunk of several events) are all seen only there.
RECORD_PROGRESS = """() => {
    window.seenProgress = [];
    window.setProgress = [];
    const text = document.getElementById("progress-text");
    const bar = document.getElementById("progress");
    new MutationObserver((records) => {
        for (const record of records) {
            window.setProgress.push(record.type === "characterData"
                ? record.target.data
                : [...record.addedNodes].map((node) => node.textContent).join(""));
        }
        window.seenProgress.push([text.textContent, bar.value]);
    }).observe(text, { childList: true, characterData: true, subtree: true });
}"""


RECORD_FOCUS = """() => {
    window.seenFocus = [];
    const text = document.getElementById("progress-text");
    new MutationObserver(() => window.seenFocus.push([text.textContent, document.activeElement.id]))
        .observe(text, { childList: true, characterData: true, subtree: true });
}"""


#: The page's longest wait before it asks an unreachable server again (api.js).
RETRY_MAX_MS = 5000
#: How often the page's history lists the jobs again while one of them is unfinished (gallery.js).
HISTORY_POLL_MS = 3000


def api_job(
    studio: Studio, kind: str, *, wait: bool = True, key: str | None = None, **input: object
) -> dict[str, object]:
    """A job of the studio's key (or `key`) made through the API (not the page), on a small image: finished,
    or with `wait=False` as it is once queued."""
    headers = {"Authorization": f"Bearer {key or studio.key}"}
    image = httpx.post(
        f"{studio.server_url}/v1/assets",
        files={"file": ("api.png", image_bytes(make_image(32, 32), "PNG"), "image/png")},
        headers=headers,
    ).json()["id"]
    image_field = {"image": image} if kind == "orbit" else {"images": [image]}
    response = httpx.post(
        f"{studio.server_url}/v1/jobs" + ("?wait=30" if wait else ""),
        json={"model": "qwen-edit-multiangle-2511", "kind": kind, "input": image_field | input},
        headers=headers,
        timeout=40,
    )
    job: dict[str, object] = response.json()
    return job


def hold_the_runner(studio: Studio) -> Callable[[], None]:
    """Keep the server's one runner busy with another key's long job (8 views of 100 steps: 40 s), so that the
    jobs sent after it stay queued for as long as the test needs; the function returned cancels it."""
    key = studio.new_key()
    azimuths = [45 * view for view in range(8)]
    holder = api_job(studio, "orbit", wait=False, key=key, azimuths=azimuths, num_inference_steps=100)

    def release() -> None:
        response = httpx.post(
            f"{studio.server_url}/v1/jobs/{holder['id']}/cancel", headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status_code == 200, response.text

    return release


def wait_for_status(studio: Studio, job_id: str, status: str) -> None:
    """Wait until the server says the job has `status` (a job the page is kept from seeing)."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while (job := server_job(studio, job_id))["status"] != status:
        assert time.monotonic() < deadline, job
        time.sleep(0.02)


def server_job(studio: Studio, job_id: str) -> dict[str, object]:
    response = httpx.get(
        f"{studio.server_url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {studio.key}"}
    )
    assert response.status_code == 200, response.text
    job: dict[str, object] = response.json()
    return job


def only_job(studio: Studio) -> dict[str, object]:
    response = httpx.get(f"{studio.server_url}/v1/jobs", headers={"Authorization": f"Bearer {studio.key}"})
    (job,) = response.json()["data"]
    assert isinstance(job, dict)
    return job


def set_advanced(page: Page, **values: str) -> None:
    if page.locator("#advanced").get_attribute("open") is None:
        page.locator("#advanced summary").click()
    for control, value in values.items():
        page.fill(f"#{control.replace('_', '-')}", value)


def test_upload_by_file_input_shows_the_image_on_the_card(open_studio: StudioFactory, photo: Path) -> None:
    studio = open_studio().open()
    studio.upload(photo)
    expect(studio.page.locator("#input-status")).to_contain_text("photo.png (96x64)")
    expect(studio.page.locator("#input-preview")).to_be_visible()
    assert studio.page.locator("#input-preview").evaluate("(img) => img.complete && img.naturalWidth") == 96
    # the panel is no tab stop of its own (Tab reaches its file input): a focus there would do nothing
    assert studio.page.locator("#drop-zone").evaluate("(zone) => zone.tabIndex") == -1


def test_upload_by_drop_and_the_servers_message_for_a_bad_file(open_studio: StudioFactory) -> None:
    studio = open_studio().open()
    page = studio.page
    drop_file(page, "#drop-zone", "not-an-image.gif", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "image/gif")
    expect(page.locator("#images-error")).to_have_text("file is not an image (expected PNG, JPEG or WebP)")
    drop_file(page, "#drop-zone", "notes.txt", b"hello", "text/plain")
    expect(page.locator("#images-error")).to_contain_text("not an image")
    drop_file(page, "#drop-zone", "dropped.png", image_bytes(make_image(40, 30), "PNG"), "image/png")
    expect(page.locator("#input-status")).to_contain_text("dropped.png (40x30)")
    expect(page.locator("#images-error")).to_be_hidden()
    # a refused file after it: the image before it stays in use, and the page says which one that is
    drop_file(page, "#drop-zone", "notes.txt", b"hello", "text/plain")
    expect(page.locator("#images-error")).to_contain_text("not an image")
    expect(page.locator("#input-status")).to_have_text(
        "Input: dropped.png (40x30) (kept: the new file was refused)"
    )
    # one that never reached the server (it is down) was not refused: it could not be sent
    page.route("**/v1/assets", lambda route: route.abort())
    drop_file(page, "#drop-zone", "later.png", image_bytes(make_image(40, 30), "PNG"), "image/png")
    expect(page.locator("#images-error")).to_contain_text("the server did not answer")
    expect(page.locator("#input-status")).to_have_text(
        "Input: dropped.png (40x30) (kept: the new file could not be sent)"
    )


def test_upload_by_paste(open_studio: StudioFactory) -> None:
    studio = open_studio().open()
    page = studio.page
    page.evaluate(
        """(b64) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "clipboard.png", { type: "image/png" }));
            document.dispatchEvent(new ClipboardEvent("paste", { clipboardData: transfer, bubbles: true }));
        }""",
        base64.b64encode(image_bytes(make_image(50, 40), "PNG")).decode(),
    )
    expect(page.locator("#input-status")).to_contain_text("clipboard.png (50x40)")
    expect(page.locator("#input-preview")).to_be_visible()


def test_a_file_over_the_servers_upload_limit_shows_its_message(
    open_studio: StudioFactory, open_server: ServerProcess
) -> None:
    studio = open_studio(key=None, server=open_server).open()  # its limit: 2,000 bytes
    page = studio.page
    noise = Image.frombytes("RGB", (100, 100), random.Random(7).randbytes(30_000))  # hardly compresses
    drop_file(page, "#drop-zone", "big.png", image_bytes(noise, "PNG"), "image/png")
    expect(page.locator("#images-error")).to_contain_text("more than the limit of 2,000")
    expect(page.locator("#input-preview")).to_be_hidden()


def test_cancel_while_queued(open_studio: StudioFactory, photo: Path) -> None:
    studio = open_studio().open()
    page = studio.page
    studio.upload(photo)
    # the server runs one job at a time: one of the same key's, sent by the API, holds it meanwhile
    holder = api_job(studio, "edit", wait=False, num_inference_steps=100)
    headers = {"Authorization": f"Bearer {studio.key}"}
    try:
        set_advanced(page, steps="4", width="64", height="64")
        page.click("#generate")
        expect(page.locator("#progress-text")).to_have_text("Queued")
        page.click("#cancel")
        studio.wait_done("Canceled")
        expect(page.locator("#generate")).to_be_enabled()
    finally:
        httpx.post(f"{studio.server_url}/v1/jobs/{holder['id']}/cancel", headers=headers)
    jobs = httpx.get(f"{studio.server_url}/v1/jobs", headers=headers).json()["data"]
    (mine,) = (job for job in jobs if job["id"] != holder["id"])
    assert (mine["status"], mine["started_at"]) == ("canceled", None)  # canceled before it ever ran


def test_generate_follows_the_jobs_progress_and_shows_the_result(
    open_studio: StudioFactory, photo: Path
) -> None:
    studio = open_studio().open()
    page = studio.page
    studio.upload(photo)
    page.fill("#horizontal-angle-number", "90")
    page.fill("#prompt", "make it dusk")
    set_advanced(page, steps="20", seed="7", width="64", height="64")
    page.evaluate(RECORD_PROGRESS)
    page.click("#generate")
    studio.wait_done()
    seen = page.evaluate("() => window.seenProgress")
    texts = [text for text, _ in seen]
    assert "Queued" in texts or "Running" in texts, texts
    given = page.evaluate("() => window.setProgress")
    assert [text for text in given if text.startswith("Step ")][-1] == "Step 20 of 20", given
    steps = [text for text in texts if text.startswith("Step ")]
    assert steps[0] != steps[-1], texts  # seen while it ran, not only at the end
    values = [value for _, value in seen]
    assert values == sorted(values), values
    result = page.locator("#results li")
    expect(result).to_have_count(1)
    expect(result.locator(".caption")).to_have_text(
        "<sks> right side view eye-level shot medium shot make it dusk · seed 7"
    )
    image = result.locator("img")
    expect(image).to_have_js_property("complete", True)
    assert image.evaluate("(img) => img.naturalWidth") == 64
    job_id = only_job(studio)["id"]  # in the name, so that the downloads of several jobs do not collide
    assert result.get_by_role("link", name="Download").get_attribute("download") == f"result-{job_id}-0.png"
    expect(page.locator("#compare")).to_be_visible()  # before / after
    # the 64x64 result over the 96x64 input: letterboxed, not stretched to the input's shape
    assert page.locator("#compare-after").evaluate("(img) => getComputedStyle(img).objectFit") == "contain"
    page.locator("#compare-slider").fill("80")
    assert "80%" in str(page.locator("#compare-after").evaluate("(img) => img.style.clipPath"))
    # "use as input" chains the next move from the result
    result.get_by_role("button", name="Use as input").click()
    expect(page.locator("#input-status")).to_contain_text("a result")
    page.fill("#horizontal-angle-number", "180")
    page.fill("#steps", "1")  # its progress is not the point
    page.click("#generate")
    studio.wait_done()
    jobs = httpx.get(f"{studio.server_url}/v1/jobs", headers={"Authorization": f"Bearer {studio.key}"}).json()
    newest, first = jobs["data"]
    assert newest["input"]["images"] == [first["output"]["assets"][0]["id"]]


def test_result_links_that_expired_while_the_page_stayed_open_are_renewed(
    open_studio: StudioFactory, photo: Path
) -> None:
    studio = open_studio().open()
    page = studio.page
    studio.upload(photo)
    set_advanced(page, steps="1", width="64", height="64")
    page.click("#generate")
    studio.wait_done()
    job = only_job(studio)
    (output,) = (asset["id"] for asset in job["output"]["assets"])  # type: ignore[index]

    # as once REANGLE_URL_TTL_S has passed: the links given so far answer 403, and the job read again gives
    # new ones (the real server's, marked so that the test tells them apart)
    def expired(route: Route) -> None:
        if "renewed" in route.request.url:
            route.fallback()
        else:
            route.fulfill(
                status=403, json={"error": {"code": "forbidden", "message": "this link has expired"}}
            )

    def read_again(route: Route) -> None:
        response = route.fetch()
        body = response.json()
        for asset in body["output"]["assets"]:
            asset["url"] += "&renewed=1"
        route.fulfill(response=response, json=body)

    page.route(re.compile(rf"/v1/files/{output}\?"), expired)
    page.route(f"**/v1/jobs/{job['id']}", read_again)
    with page.expect_download() as download:
        page.get_by_role("link", name="Download: output 1").click()
    assert "renewed" in download.value.url
    assert download.value.failure() is None
    # a link that fails in an image (a job of the history, listed before it expired) is renewed as well
    page.reload()  # a new page: no image of the old links in its memory
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    page.locator(f"#history [data-job='{job['id']}']").click()
    for image in (page.locator("#results li img"), page.locator("#compare-after")):
        expect(image).to_have_attribute("src", re.compile("renewed"))
        expect(image).to_have_js_property("naturalWidth", 64)
    page.get_by_role("button", name="Use as input: output 1").click()
    expect(page.locator("#input-status")).to_contain_text("a result")
    expect(page.locator("#input-preview")).to_have_attribute("src", re.compile("renewed"))
    expect(page.locator("#results-error")).to_be_hidden()
    # the job gone meanwhile: said
    page.unroute(f"**/v1/jobs/{job['id']}")
    gone = {"error": {"code": "not_found", "message": f"no job {job['id']}"}}
    page.route(f"**/v1/jobs/{job['id']}", lambda route: route.fulfill(status=404, json=gone))
    page.get_by_role("link", name="Download: output 1").click()
    expect(page.locator("#results-error")).to_have_text(
        f"Job {job['id']} is no longer on the server: its outputs can no longer be downloaded or used."
    )


def start_a_long_job(studio: Studio, photo: Path) -> None:
    """A 100-step edit of `photo`, generated and seen running."""
    studio.upload(photo)
    set_advanced(studio.page, steps="100", width="64", height="64")
    studio.page.click("#generate")
    expect(studio.page.locator("#progress-text")).to_have_text(re.compile(r"Step \d+ of 100"))


def test_cancel_while_running(open_studio: StudioFactory, photo: Path) -> None:
    studio = open_studio().open()
    page = studio.page
    start_a_long_job(studio, photo)
    expect(page.locator("#cancel")).to_be_enabled()
    page.click("#cancel")
    studio.wait_done("Canceled")
    expect(page.locator("#generate")).to_be_enabled()
    expect(page.locator("#cancel")).to_be_disabled()
    job = only_job(studio)
    assert job["status"] == "canceled"
    assert job["started_at"] is not None  # it was canceled while running, not before


def test_a_limit_the_page_knows_is_said_by_its_field_before_sending(
    open_studio: StudioFactory, photo: Path
) -> None:
    studio = open_studio().open()
    page = studio.page
    studio.upload(photo)
    set_advanced(page, steps="500")
    page.click("#advanced summary")  # closed again: the error must open it
    page.click("#generate")
    expect(page.locator("#steps-error")).to_have_text(
        "Steps must be a whole number between 1 and 100, not 500."
    )
    expect(page.locator("#steps")).to_be_visible()
    expect(page.locator("#steps")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#generate-error")).to_be_hidden()
    response = httpx.get(f"{studio.server_url}/v1/jobs", headers={"Authorization": f"Bearer {studio.key}"})
    assert response.json()["data"] == []  # nothing was sent
    # fixed, it runs, and the error goes
    page.fill("#steps", "4")
    page.click("#generate")
    studio.wait_done()
    expect(page.locator("#steps-error")).to_be_hidden()


def test_generate_without_an_image_says_so(open_studio: StudioFactory) -> None:
    page = open_studio().open().page
    page.click("#generate")
    expect(page.locator("#images-error")).to_contain_text("Bring an image first")


def test_a_wrong_key_is_explained_and_a_good_one_is_kept(open_studio: StudioFactory) -> None:
    studio = open_studio(key=None)
    page = studio.page
    page.goto(f"{studio.server_url}/")
    page.fill("#api-key", "not-a-key")
    page.click("#save-key")
    expect(page.locator("#api-key-error")).to_contain_text("The server refused this key")
    expect(page.locator("#key-status")).to_have_text("Enter your API key above to start.")
    expect(page.locator("#studio")).to_have_js_property("inert", True)
    good = studio.new_key()
    page.fill("#api-key", good)
    page.click("#save-key")
    expect(page.locator("#key-status")).to_have_text("Key accepted.")
    expect(page.locator("#api-key-error")).to_be_hidden()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.locator("#studio")).to_have_js_property("inert", False)
    page.reload()
    expect(page.locator("#api-key")).to_have_value(good)  # kept in local storage
    expect(page.locator("#key-status")).to_have_text("Key accepted.")
    # a wrong key after the good one: refused, and the good one stays in use (and stored)
    page.fill("#api-key", "not-a-key-either")
    page.click("#save-key")
    expect(page.locator("#api-key-error")).to_contain_text("The server refused this key")
    expect(page.locator("#key-status")).to_have_text("Still using the key accepted before.")
    expect(page.locator("#studio")).to_have_js_property("inert", False)
    assert page.evaluate("() => localStorage.getItem('reangle.apiKey')") == good


def test_a_missing_key_is_asked_for(open_studio: StudioFactory) -> None:
    studio = open_studio(key=None)
    studio.page.goto(f"{studio.server_url}/")
    expect(studio.page.locator("#api-key-error")).to_contain_text("needs an API key")
    expect(studio.page.locator("#api-key")).to_be_focused()
    # nothing below can work without a key: the panels are inert (no click, no focus, no drop) and say why
    expect(studio.page.locator("#key-status")).to_have_text("Enter your API key above to start.")
    expect(studio.page.locator("#studio")).to_have_js_property("inert", True)


def test_orbit_plays_the_turntable_and_offers_every_file(open_studio: StudioFactory, photo: Path) -> None:
    studio = open_studio().open()
    page = studio.page
    studio.upload(photo)
    page.fill("#vertical-angle-number", "30")
    set_advanced(page, steps="1", width="64", height="64")
    page.click("#orbit")
    studio.wait_done()
    views = page.locator("#results li .caption")
    expect(views).to_have_count(8)
    expect(views.nth(2)).to_contain_text("<sks> right side view elevated shot medium shot")
    turntable = page.locator("#turntable")
    expect(turntable).to_be_visible()
    expect(turntable).to_have_js_property("complete", True)
    assert_animation_plays(page)
    links = page.locator("#turntable-links a")
    expect(links).to_have_text(["Download turntable", "Contact sheet"])
    assert httpx.get(str(links.nth(1).get_attribute("href"))).headers["content-type"] == "image/png"
    assert page.locator("#results li a[download]").count() == 8
    job_id = only_job(studio)["id"]
    assert [links.nth(i).get_attribute("download") for i in range(2)] == [
        f"turntable-{job_id}.webp",
        f"contact-sheet-{job_id}.png",
    ]
    assert page.locator("#results li a[download]").nth(2).get_attribute("download") == f"view-{job_id}-2.png"


def assert_animation_plays(page: Page) -> None:
    """The turntable on screen shows another frame later. Screenshots, because a canvas only ever gets an
    animated image's first frame; and on screen, because Chromium animates only what can be seen."""
    turntable = page.locator("#turntable")
    turntable.scroll_into_view_if_needed()
    first = turntable.screenshot()
    deadline = time.monotonic() + WAIT_MS / 1000
    while turntable.screenshot() == first:
        assert time.monotonic() < deadline, "the turntable shows one frame only"


def test_a_path_of_picked_poses_renders_in_order(open_studio: StudioFactory, photo: Path) -> None:
    studio = open_studio().open()
    page = studio.page
    studio.upload(photo)
    set_advanced(page, steps="1", width="64", height="64")
    page.click("#path-pick")
    expect(page.locator("#path-pick")).to_have_attribute("aria-pressed", "true")
    picks = [(90, 0, 5), (45, 30, 8), (0, -30, 1)]
    for horizontal, vertical, zoom in picks:
        point = page.evaluate(
            "(c) => window.studio.scene.pointOnScreen(c)",
            {"horizontal": horizontal, "vertical": vertical, "zoom": zoom},
        )
        page.mouse.click(point["x"], point["y"])
    expected = [
        "right side view eye-level shot medium shot",
        "front-right quarter view elevated shot close-up",
        "front view low-angle shot wide shot",
    ]
    expect(page.locator("#path-list li")).to_have_text([f"{phrase} remove" for phrase in expected])
    page.click("#render-path")
    studio.wait_done()
    expect(page.locator("#results li .caption")).to_have_count(3)
    captions = page.locator("#results li .caption").all_text_contents()
    assert [caption.split(" · ")[0] for caption in captions] == [f"<sks> {phrase}" for phrase in expected]
    expect(page.locator("#turntable")).to_be_visible()
    assert_animation_plays(page)
    poses = only_job(studio)["input"]["poses"]  # type: ignore[index]
    assert poses == [{"horizontal_angle": h, "vertical_angle": v, "zoom": z} for h, v, z in picks]


def test_history_loads_a_job_back_into_the_editor(open_studio: StudioFactory, photo: Path) -> None:
    studio = open_studio().open()
    page = studio.page
    studio.upload(photo)
    page.fill("#horizontal-angle-number", "135")
    page.fill("#prompt", "snow")
    set_advanced(page, seed="5", width="64", height="64")
    page.click("#generate")
    studio.wait_done()
    job = only_job(studio)

    page.reload()  # a new visit: nothing in the editor but what the history brings back
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.locator("#input-preview")).to_be_hidden()
    item = page.locator(f"#history [data-job='{job['id']}']")
    expect(item).to_contain_text("succeeded")
    expect(item).to_contain_text("h 135° v 0° zoom 5, “snow”, seed 5")
    expect(item.locator("img")).to_have_js_property("complete", True)
    item.click()
    expect(page.locator("#horizontal-angle-number")).to_have_value("135")
    expect(page.locator("#pose-phrase")).to_have_text(
        "<sks> back-right quarter view eye-level shot medium shot"
    )
    expect(page.locator("#prompt")).to_have_value("snow")
    expect(page.locator("#seed")).to_have_value("5")
    expect(page.locator("#input-preview")).to_be_visible()
    expect(page.locator("#input-preview")).to_have_js_property("naturalWidth", 96)
    expect(page.locator("#results li")).to_have_count(1)
    # and runs again from there, on the same input asset
    page.click("#generate")
    studio.wait_done()
    response = httpx.get(f"{studio.server_url}/v1/jobs", headers={"Authorization": f"Bearer {studio.key}"})
    again, first = response.json()["data"]
    assert again["input"]["images"] == first["input"]["images"]
    assert (again["input"]["horizontal_angle"], again["input"]["seed"]) == (135, 5)


def test_a_server_restart_mid_job_is_followed_to_the_end(
    open_studio: StudioFactory, open_server: ServerProcess, photo: Path
) -> None:
    server = open_server  # auth off plays no part here; a server of its own would cost one more start
    studio = open_studio(key=None, server=server)
    page = studio.page
    page.clock.install()  # its waits before asking again, moved on below rather than waited for
    studio.open()
    studio.upload(photo)
    set_advanced(page, steps="60", width="64", height="64")
    page.click("#generate")
    expect(page.locator("#progress-text")).to_have_text(re.compile(r"Step \d+ of 60"))
    server.stop()  # the server queues the running job again for its next start
    try:
        expect(page.locator("#progress-text")).to_have_text("Reconnecting to the server…")
        expect(page.locator("#cancel")).to_be_enabled()
        expect(page.locator("#generate")).to_be_disabled()
        expect(page.locator("#generate-error")).to_be_hidden()
    finally:
        server.env["REANGLE_FAKE_STEP_SECONDS"] = "0.005"  # the job runs again from its first step: quickly
        server.start()  # even after a failed check: the server is the package's
    page.clock.fast_forward(RETRY_MAX_MS)  # the page's next try comes now, not after its longest wait
    studio.wait_done()
    expect(page.locator("#results li")).to_have_count(1)
    assert only_job(studio)["status"] == "succeeded"


def test_a_reload_mid_job_follows_it_again_with_cancel(open_studio: StudioFactory, photo: Path) -> None:
    studio = open_studio().open()
    page = studio.page
    start_a_long_job(studio, photo)
    page.reload()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.locator("#progress-text")).to_have_text(re.compile(r"Step \d+ of 100"))
    expect(page.locator("#generate")).to_be_disabled()
    job_id = only_job(studio)["id"]
    expect(page.locator(f"#history [data-job='{job_id}'] .status")).to_have_text("processing")
    page.click("#cancel")
    studio.wait_done("Canceled")
    expect(page.locator("#generate")).to_be_enabled()
    assert only_job(studio)["status"] == "canceled"
    expect(page.locator(f"#history [data-job='{job_id}'] .status")).to_have_text("canceled")


def test_the_history_follows_unfinished_jobs_to_their_end(open_studio: StudioFactory) -> None:
    studio = open_studio()
    headers = {"Authorization": f"Bearer {studio.key}"}
    image = httpx.post(
        f"{studio.server_url}/v1/assets",
        files={"file": ("api.png", image_bytes(make_image(32, 32), "PNG"), "image/png")},
        headers=headers,
    ).json()["id"]
    release = hold_the_runner(studio)  # the job waits, queued, until the page has listed it so
    job = httpx.post(  # made by another client: the page does not follow it, only lists it
        f"{studio.server_url}/v1/jobs",
        json={"model": "qwen-edit-multiangle-2511", "input": {"images": [image], "num_inference_steps": 1}},
        headers=headers,
    ).json()
    page = studio.page
    page.clock.install()  # the page's own timers, moved on below rather than waited for
    studio.open()
    status = page.locator(f"#history [data-job='{job['id']}'] .status")
    expect(status).to_have_text(re.compile("queued|processing"))
    release()
    wait_for_status(studio, job["id"], "succeeded")
    page.clock.fast_forward(HISTORY_POLL_MS)
    expect(status).to_have_text("succeeded")  # with no click on Refresh


def test_cancel_pressed_while_the_job_is_submitted_cancels_it(
    open_studio: StudioFactory, photo: Path
) -> None:
    studio = open_studio()
    page = studio.page
    page.clock.install()  # the history's next refresh, moved on below rather than waited for
    studio.open()
    studio.upload(photo)
    set_advanced(page, steps="100", width="64", height="64")
    held: list[Route] = []  # the submission: the server makes the job, but its answer never comes back

    def lose_the_answer(route: Route) -> None:
        if route.request.method == "POST" and not held:
            held.append(route)
            sent = route.request.headers
            headers = {name: sent[name] for name in ("authorization", "idempotency-key") if name in sent}
            httpx.post(f"{studio.server_url}/v1/jobs", content=route.request.post_data, headers=headers)
        else:
            route.fallback()

    page.route("**/v1/jobs", lose_the_answer)
    page.click("#generate")
    expect(page.locator("#progress-text")).to_have_text("Submitting")
    expect(page.locator("#cancel")).to_be_enabled()
    page.click("#cancel")
    # free at once, without the submission's answer
    expect(page.locator("#progress-text")).to_have_text("Canceled")
    expect(page.locator("#generate")).to_be_enabled()
    expect(page.locator("#cancel")).to_be_disabled()
    # the job the server made is found (the same Idempotency-Key) and canceled, and the history shows it
    status = page.locator("#history .status")
    expect(status).to_have_count(1)  # listed: canceled, or still stopping and then listed again by its timer
    wait_for_status(studio, str(only_job(studio)["id"]), "canceled")
    page.clock.fast_forward(HISTORY_POLL_MS)
    expect(status).to_have_text(["canceled"])
    assert only_job(studio)["status"] == "canceled"


def test_history_loads_api_jobs_made_with_azimuth_elevation_and_distance(open_studio: StudioFactory) -> None:
    studio = open_studio()
    edit = api_job(studio, "edit", azimuth=90, elevation=30, distance=0.6, num_inference_steps=1)
    orbit = api_job(studio, "orbit", azimuths=[0, 90, 180], elevation=30, distance=1.8, num_inference_steps=1)
    page = studio.open().page
    edit_item = page.locator(f"#history [data-job='{edit['id']}']")
    expect(edit_item).to_contain_text("edit: azimuth 90° elevation 30° distance 0.6")
    orbit_item = page.locator(f"#history [data-job='{orbit['id']}']")
    expect(orbit_item).to_contain_text("orbit: azimuths 0° 90° 180° elevation 30° distance 1.8")

    page.fill("#zoom-number", "1")  # the loaded job's distance replaces the zoom, it does not keep it
    page.keyboard.press("Tab")
    edit_item.click()
    expect(page.locator("#pose-phrase")).to_have_text("<sks> right side view elevated shot close-up")
    expect(page.locator("#horizontal-angle-number")).to_have_value("90")
    expect(page.locator("#zoom-number")).to_have_value("8")

    orbit_item.click()
    expect(page.locator("#path-list li")).to_have_text(
        [
            f"{azimuth} elevated shot wide shot remove"
            for azimuth in ("front view", "right side view", "back view")
        ]
    )
    expect(page.locator("#pose-phrase")).to_have_text("<sks> front view elevated shot wide shot")


def test_keyboard_focus_moves_to_cancel_while_running_and_back_after(
    open_studio: StudioFactory, photo: Path
) -> None:
    studio = open_studio().open()
    page = studio.page
    studio.upload(photo)
    set_advanced(page, steps="20", width="64", height="64")
    page.evaluate(RECORD_FOCUS)
    page.focus("#generate")
    page.keyboard.press("Enter")
    studio.wait_done()
    expect(page.locator("#generate")).to_be_focused()
    seen = page.evaluate("() => window.seenFocus")
    running = [focus for text, focus in seen if text.startswith("Step ")]
    assert running, seen
    assert set(running) == {"cancel"}, seen


def test_removing_a_path_pose_keeps_the_keyboard_focus_in_the_list(open_studio: StudioFactory) -> None:
    page = open_studio().open().page
    for preset in ("Front", "Right side", "Back"):
        page.get_by_role("button", name=preset, exact=True).click()
        page.click("#path-add")
    removes = page.locator("#path-list button")
    expect(removes).to_have_count(3)
    removes.nth(1).focus()
    page.keyboard.press("Enter")  # the middle one: the focus goes to the one that took its place
    expect(page.locator("#path-list li")).to_have_text(
        ["front view eye-level shot medium shot remove", "back view eye-level shot medium shot remove"]
    )
    expect(removes.nth(1)).to_be_focused()
    page.keyboard.press("Enter")  # the last one: to the one before it
    expect(removes.nth(0)).to_be_focused()
    page.keyboard.press("Enter")  # the only one: to the list
    expect(page.locator("#path-list")).to_be_focused()


def test_messages_go_when_their_cause_does(open_studio: StudioFactory) -> None:
    page = open_studio().open().page
    for _ in range(17):
        page.click("#path-add")
    expect(page.locator("#path-error")).to_have_text("A path has at most 16 poses.")
    page.click("#path-clear")
    expect(page.locator("#path-error")).to_be_hidden()

    error = page.locator("#horizontal-angle-error")
    page.fill("#horizontal-angle-number", "400")
    expect(error).to_contain_text("between 0 and 360")
    page.locator("#horizontal-angle").fill("90")  # the slider moves the camera: the field is valid again
    expect(error).to_be_hidden()
    expect(page.locator("#horizontal-angle-number")).to_have_value("90")
    page.fill("#horizontal-angle-number", "-5")
    expect(error).to_contain_text("between 0 and 360")
    page.keyboard.press("Tab")  # leaving the field puts the camera's value back, and takes the error away
    expect(page.locator("#horizontal-angle-number")).to_have_value("90")
    expect(error).to_be_hidden()


def test_a_seed_the_page_cannot_send_exactly_is_refused_at_its_field(
    open_studio: StudioFactory, photo: Path
) -> None:
    studio = open_studio().open()
    page = studio.page
    studio.upload(photo)
    set_advanced(page, seed="9007199254740993")  # 2**53 + 1: a double would send 2**53
    page.click("#generate")
    expect(page.locator("#seed-error")).to_have_text(
        "Seed must be a whole number between 0 and 9007199254740991, not 9007199254740993."
    )
    expect(page.locator("#seed")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#generate")).to_be_enabled()
    response = httpx.get(f"{studio.server_url}/v1/jobs", headers={"Authorization": f"Bearer {studio.key}"})
    assert response.json()["data"] == []  # nothing was sent


def test_each_outputs_controls_are_named_apart_and_the_size_hints_show_whole(
    open_studio: StudioFactory, photo: Path
) -> None:
    studio = open_studio().open()
    page = studio.page
    studio.upload(photo)
    set_advanced(page, steps="1", width="64", height="64", num_outputs="2")
    for field in ("steps", "guidance"):  # the placeholder fits its field (less its padding and spin buttons)
        room = page.locator(f"#{field}").evaluate(
            """(input) => {
                const style = getComputedStyle(input);
                const context = document.createElement("canvas").getContext("2d");
                context.font = style.font;
                const text = context.measureText(input.placeholder).width;
                const padding = parseFloat(style.paddingLeft) + parseFloat(style.paddingRight);
                return input.clientWidth - padding - 20 - text;
            }"""
        )
        assert isinstance(room, float | int)
        assert room >= 0, (field, room)
    page.click("#generate")
    studio.wait_done()
    for number in (1, 2):
        expect(page.get_by_role("button", name=f"Use as input: output {number}", exact=True)).to_have_count(1)
        expect(page.get_by_role("button", name=f"Before / after: output {number}", exact=True)).to_have_count(
            1
        )
        expect(page.get_by_role("link", name=f"Download: output {number}", exact=True)).to_have_count(1)
    # just wider than the phone layout, the image panel is narrowest: the fields shrink to fit it
    panel = page.locator(".input-panel")
    for width in (801, 815, 830):
        page.set_viewport_size({"width": width, "height": 800})
        edge = panel.evaluate("(panel) => panel.getBoundingClientRect().right")
        for field in ("steps", "guidance"):
            right = page.locator(f"#{field}").evaluate("(input) => input.getBoundingClientRect().right")
            assert right <= edge, (width, field, right, edge)


def test_before_after_of_a_result_far_from_the_inputs_shape_is_big_enough(open_studio: StudioFactory) -> None:
    studio = open_studio().open()
    page = studio.page
    drop_file(page, "#drop-zone", "strip.png", image_bytes(make_image(2000, 100), "PNG"), "image/png")
    expect(page.locator("#input-status")).to_contain_text("Input: strip.png (2000x100)")
    set_advanced(page, steps="1", width="64", height="64")
    page.click("#generate")
    studio.wait_done()
    expect(page.locator("#compare")).to_be_visible()
    after = page.locator("#compare-after")
    expect(after).to_have_js_property("complete", True)
    shown = after.evaluate(
        """(img) => {
            const scale = Math.min(img.clientWidth / img.naturalWidth, img.clientHeight / img.naturalHeight);
            return [img.naturalWidth * scale, img.naturalHeight * scale];
        }"""
    )
    assert isinstance(shown, list)
    assert min(shown) >= 200, shown  # the square result, letterboxed in a frame of its own size
