"""The studio when the server cannot be reached: a Cancel pressed meanwhile is kept and sent once it answers,
and a page opened while it is down says so and opens its panels by itself once it answers; and when it refuses
the job's event stream (the key holds all it may), the job is polled instead."""

from __future__ import annotations

import time
from pathlib import Path

from playwright.sync_api import Route, expect

from tests.studio.conftest import Studio, StudioFactory
from tests.studio.test_jobs import RETRY_MAX_MS, hold_the_runner, only_job, set_advanced, wait_for_status

RECONNECTING = "Reconnecting to the server…"
CANCEL_KEPT = f"{RECONNECTING} The job will be canceled when reconnected."

#: Every text #api-key-error shows, recorded from the page's first script on (the element comes later).
RECORD_KEY_ERRORS = """() => {
    window.seenKeyErrors = [];
    new MutationObserver(() => {
        const text = document.getElementById("api-key-error")?.textContent;
        const seen = window.seenKeyErrors;
        if (text !== undefined && text !== seen[seen.length - 1]) seen.push(text);
    }).observe(document, { childList: true, characterData: true, subtree: true });
}"""


JOB, EVENTS, CANCEL = "**/v1/jobs/*", "**/v1/jobs/*/events", "**/v1/jobs/*/cancel"


def abort(route: Route) -> None:
    route.abort()


def cut_off_mid_job(
    studio: Studio, photo: Path, button: str, *, steps: int = 100, seen: str = "Running"
) -> None:
    """A job of `steps` a view, seen `seen` (running, or queued); then every request about it fails as if the
    server were gone, and the page says it is reconnecting. Its event stream fails from the start (the page
    polls the job instead), because a route cannot break a stream once it is open."""
    page = studio.page
    page.route(EVENTS, abort)
    studio.upload(photo)
    set_advanced(page, steps=str(steps), width="64", height="64")
    page.click(button)
    expect(page.locator("#progress-text")).to_have_text(seen)
    page.route(JOB, abort)
    page.route(CANCEL, abort)
    expect(page.locator("#progress-text")).to_have_text(RECONNECTING)


def test_cancel_pressed_while_the_server_is_unreachable_is_sent_once_it_answers(
    open_studio: StudioFactory, photo: Path
) -> None:
    studio = open_studio().open()
    page = studio.page
    cut_off_mid_job(studio, photo, "#orbit")  # 8 views of 100 steps: 40 s
    page.click("#cancel")
    expect(page.locator("#progress-text")).to_have_text(CANCEL_KEPT)
    expect(page.locator("#generate-error")).to_be_hidden()
    assert only_job(studio)["status"] == "processing"  # nothing reached the server
    page.unroute_all()
    studio.wait_done("Canceled")
    assert only_job(studio)["status"] == "canceled"
    expect(page.locator("#generate")).to_be_enabled()
    expect(page.locator("#generate-error")).to_be_hidden()


def test_a_kept_cancel_refused_because_the_job_ended_meanwhile_shows_how_it_ended(
    open_studio: StudioFactory, photo: Path
) -> None:
    studio = open_studio().open()
    page = studio.page
    release = hold_the_runner(studio)  # the job waits, queued, until the test lets it run to its end
    cut_off_mid_job(studio, photo, "#generate", steps=2, seen="Queued")
    page.click("#cancel")
    expect(page.locator("#progress-text")).to_have_text(CANCEL_KEPT)
    release()
    wait_for_status(studio, str(only_job(studio)["id"]), "succeeded")
    # the cancel gets through first, while the job's own reads still fail: refused (409), it is no error
    with page.expect_response(CANCEL) as answer:
        page.unroute(CANCEL)
    assert answer.value.status == 409
    expect(page.locator("#progress-text")).to_have_text(RECONNECTING)  # no cancel is promised any more
    expect(page.locator("#generate-error")).to_be_hidden()
    page.unroute_all()
    studio.wait_done("Done")
    expect(page.locator("#results li")).to_have_count(1)
    expect(page.locator("#generate-error")).to_be_hidden()
    expect(page.locator("#generate")).to_be_enabled()


def test_a_server_unreachable_at_first_load_is_said_and_the_page_opens_once_it_answers(
    open_studio: StudioFactory,
) -> None:
    studio = open_studio()
    page = studio.page
    page.context.add_init_script(f"({RECORD_KEY_ERRORS})()")
    page.clock.install()  # its waits before asking again, moved on below rather than waited for
    server: dict[str, object] = {"state": "down"}  # down: no answer at all; 503: an error of its own; up
    asked: list[str] = []

    def through(route: Route) -> None:
        asked.append(route.request.url)
        if server["state"] == "down":
            route.abort()
        elif server["state"] == 503:
            route.fulfill(status=503, json={"error": {"code": "unavailable", "message": "starting up"}})
        else:
            route.fallback()

    page.route("**/v1/poses", through)
    page.route("**/healthz", through)
    page.goto(f"{studio.server_url}/")
    error = page.locator("#api-key-error")
    expect(error).to_have_text(f"Cannot reach the server at {studio.server_url}; retrying…")
    expect(page.locator("#studio")).to_have_js_property("inert", True)
    page.evaluate("() => { window.sameDocument = true; }")
    server["state"] = 503
    page.clock.fast_forward(RETRY_MAX_MS)  # the page's next try comes now, not after its wait
    expect(error).to_have_text(f"Cannot reach the server at {studio.server_url} (starting up); retrying…")
    expect(page.locator("#studio")).to_have_js_property("inert", True)
    server["state"] = "up"
    page.clock.fast_forward(RETRY_MAX_MS)
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    assert page.evaluate("() => window.sameDocument") is True  # asked again by itself, with no reload
    assert sum(url.endswith("/v1/poses") for url in asked) >= 3
    expect(page.locator("#studio")).to_have_js_property("inert", False)
    expect(page.locator("#key-status")).to_have_text("Key accepted.")
    expect(error).to_be_hidden()
    expect(page.locator("#demo-notice")).to_be_visible()  # its health check is asked again too
    seen = page.evaluate("() => window.seenKeyErrors")
    assert seen == [
        "",
        f"Cannot reach the server at {studio.server_url}; retrying…",
        f"Cannot reach the server at {studio.server_url} (starting up); retrying…",
        "",
    ], seen


def test_after_a_refused_event_stream_the_job_is_polled_to_its_end(
    open_studio: StudioFactory, photo: Path
) -> None:
    studio = open_studio().open()
    page = studio.page
    streams: list[str] = []

    def too_many_streams(route: Route) -> None:  # as when the key holds REANGLE_MAX_STREAMS_PER_KEY streams
        streams.append(route.request.url)
        message = "this API key has 1 event streams open; each key may have 1: poll GET /v1/jobs/{id} instead"
        route.fulfill(
            status=429,
            headers={"Retry-After": "5"},
            json={"error": {"code": "too_many_streams", "message": message}},
        )

    polls: list[float] = []

    def busy_once(route: Route) -> None:  # the first poll is asked to wait
        polls.append(time.monotonic())
        if len(polls) == 1:
            busy = {"error": {"code": "rate_limited", "message": "too many requests"}}
            route.fulfill(status=429, headers={"Retry-After": "1"}, json=busy)
        else:
            route.fallback()

    page.route(EVENTS, too_many_streams)
    page.route(JOB, busy_once)
    studio.upload(photo)
    set_advanced(page, steps="20", width="64", height="64")  # 1 s: still running when first polled
    page.click("#generate")
    studio.wait_done()
    assert len(streams) == 1, streams  # not asked again while the job was polled
    assert len(polls) >= 2, polls
    assert polls[1] - polls[0] >= 0.9, polls  # after the wait the server asked for
    expect(page.locator("#results li")).to_have_count(1)
    expect(page.locator("#generate-error")).to_be_hidden()
