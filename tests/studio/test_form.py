"""The studio's form in a real browser: fields checked before sending, the server's refusals said by their
field in the page's words, resetting the camera and the view, the one file control, and the phone layout."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from playwright.sync_api import Route, expect

from tests.studio.conftest import Studio, StudioFactory

RECORD_ERRORS = """(ids) => {
    window.seenErrors = [];
    for (const id of ids) {
        const line = document.getElementById(id);
        new MutationObserver(() => window.seenErrors.push([id, line.textContent]))
            .observe(line, { childList: true, characterData: true, subtree: true });
    }
}"""


def jobs_of(studio: Studio) -> list[object]:
    response = httpx.get(f"{studio.server_url}/v1/jobs", headers={"Authorization": f"Bearer {studio.key}"})
    data: list[object] = response.json()["data"]
    return data


def test_a_number_field_that_is_no_number_or_out_of_limits_stops_generate(
    open_studio: StudioFactory, photo: Path
) -> None:
    studio = open_studio().open()
    page = studio.page
    studio.upload(photo)
    studio.open_advanced()
    page.locator("#guidance").press_sequentially("1e")  # reads as "" in a number input
    page.fill("#steps", "2.5")
    page.fill("#num-outputs", "5")
    page.click("#generate")
    expect(page.locator("#guidance-error")).to_have_text("Guidance must be a number.")
    expect(page.locator("#guidance")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#steps-error")).to_have_text(
        "Steps must be a whole number between 1 and 100, not 2.5."
    )
    expect(page.locator("#num-outputs-error")).to_have_text(
        "Outputs must be a whole number between 1 and 4, not 5."
    )
    expect(page.locator("#generate")).to_be_enabled()
    assert jobs_of(studio) == []  # nothing was sent
    # width and height with an aspect ratio: said by those fields, before sending
    page.fill("#guidance", "")
    page.fill("#steps", "")
    page.fill("#num-outputs", "1")
    page.fill("#width", "64")
    page.select_option("#aspect-ratio", "1:1")
    page.click("#generate")
    expect(page.locator("#width-error")).to_have_text(
        "Give either a width and height or an aspect ratio, not both."
    )
    expect(page.locator("#aspect-ratio")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#guidance-error")).to_be_hidden()
    assert jobs_of(studio) == []
    page.select_option("#aspect-ratio", "")
    page.click("#generate")
    studio.wait_done()
    expect(page.locator("#width-error")).to_be_hidden()


def test_a_camera_number_is_judged_once_it_is_typed(open_studio: StudioFactory) -> None:
    page = open_studio().open().page
    page.evaluate(RECORD_ERRORS, ["vertical-angle-error", "horizontal-angle-error", "zoom-error"])
    field = page.locator("#vertical-angle-number")
    field.click()
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.press("Backspace")  # empty on the way to another number
    page.keyboard.type("-")
    page.keyboard.type("40")
    expect(page.locator("#vertical-angle")).to_have_value("-40")
    zoom = page.locator("#zoom-number")
    zoom.click()
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type("e")  # not a number (it reads as ""): leaving the field puts the camera's value back
    page.keyboard.press("Tab")
    expect(zoom).to_have_value("5")
    field.fill("")
    page.keyboard.press("Tab")
    expect(field).to_have_value("-40")
    assert page.evaluate("() => window.seenErrors") == []
    expect(page.locator("#pose-phrase")).to_have_text("<sks> front view low-angle shot medium shot")
    # a whole number out of range is said at once
    field.fill("120")
    expect(page.locator("#vertical-angle-error")).to_have_text("Vertical angle must be between -90 and 90")
    # typed key by key, 95 passes through 9, in range: once left, the camera is where it was before the typing
    for axis, typed, kept in (("vertical-angle", "95", "-40"), ("horizontal-angle", "400", "0")):
        number = page.locator(f"#{axis}-number")
        number.click()
        page.keyboard.press("ControlOrMeta+a")
        page.keyboard.type(typed)
        expect(page.locator(f"#{axis}-error")).not_to_be_empty()
        page.keyboard.press("Tab")
        expect(number).to_have_value(kept)
        expect(page.locator(f"#{axis}")).to_have_value(kept)
        expect(page.locator(f"#{axis}-error")).to_be_empty()
    expect(page.locator("#pose-phrase")).to_have_text("<sks> front view low-angle shot medium shot")


def refuse_jobs_with(studio: Studio, message: str, code: str = "invalid_input") -> None:
    """The server's next job submissions answer 422 with `message` (as it words a schema refusal)."""

    def refuse(route: Route) -> None:
        if route.request.method != "POST":
            route.fallback()
            return
        body = json.dumps({"error": {"code": code, "message": message}})
        route.fulfill(status=422, content_type="application/json", body=body)

    studio.page.unroute("**/v1/jobs")
    studio.page.route("**/v1/jobs", refuse)


def test_the_servers_refusals_are_said_by_their_field_in_the_pages_words(
    open_studio: StudioFactory, photo: Path
) -> None:
    studio = open_studio().open()
    page = studio.page
    studio.upload(photo)
    # the real server's word on a width the page does not know the limit of
    studio.open_advanced()
    page.fill("#width", "4000")
    page.click("#generate")
    expect(page.locator("#width-error")).to_have_text(
        "Width must be between 16 and 2048 after rounding down to a multiple of 16, got 4000"
    )
    expect(page.locator("#width")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#generate-error")).to_be_hidden()
    # a side that follows from the other one and the image's shape (96x64): said by the size fields
    page.fill("#width", "20")
    page.click("#generate")
    expect(page.locator("#width-error")).to_contain_text("Height would be 13, from the width asked for")
    expect(page.locator("#height")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#generate-error")).to_be_hidden()
    # both sides too large: the server names one, the page marks (and says) the other as well
    page.fill("#width", "20000")
    page.fill("#height", "20000")
    page.click("#generate")
    expect(page.locator("#width-error")).to_have_text(
        "Width must be between 16 and 2048 after rounding down to a multiple of 16, got 20000. "
        "Height must be between 16 and 2048 after rounding down to a multiple of 16, got 20000."
    )
    for side in ("#width", "#height"):
        expect(page.locator(side)).to_have_attribute("aria-invalid", "true")
    page.fill("#width", "")
    page.fill("#height", "")

    refuse_jobs_with(studio, "input.num_inference_steps: Input should be a valid integer")
    page.click("#generate")
    expect(page.locator("#steps-error")).to_have_text("Steps: Input should be a valid integer")
    expect(page.locator("#steps")).to_have_attribute("aria-invalid", "true")

    refuse_jobs_with(studio, "input.images.0: Input should be a valid string")
    page.click("#generate")
    expect(page.locator("#images-error")).to_have_text("The image: Input should be a valid string")
    expect(page.locator("#drop-zone")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#steps-error")).to_be_hidden()

    refuse_jobs_with(studio, "give either width/height or aspect_ratio, not both")
    page.click("#generate")
    expect(page.locator("#width-error")).to_have_text("Give either width/height or aspect ratio, not both")
    expect(page.locator("#aspect-ratio")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#generate-error")).to_be_hidden()


def test_the_camera_and_the_view_can_be_reset_from_the_keyboard(open_studio: StudioFactory) -> None:
    studio = open_studio().open()
    page = studio.page
    page.get_by_role("button", name="Back", exact=True).click()
    page.get_by_role("button", name="High angle").click()
    page.fill("#zoom-number", "9")
    expect(page.locator("#pose-phrase")).to_have_text("<sks> back view high-angle shot close-up")
    # drag the view itself (from a corner, away from the camera): a fixed point moves on the screen
    point = "() => window.studio.scene.screenOf([1, 0, 0])"
    before = studio.evaluate(point)
    box = page.locator("#scene-canvas").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + 10, box["y"] + box["height"] - 10)
    page.mouse.down()
    page.mouse.move(box["x"] + 150, box["y"] + box["height"] - 60, steps=10)
    page.mouse.up()
    assert studio.evaluate(point) != before

    reset_view = page.get_by_role("button", name="Reset view")
    reset_view.focus()
    page.keyboard.press("Enter")
    page.wait_for_function(
        "(before) => { const p = window.studio.scene.screenOf([1, 0, 0]);"
        " return Math.abs(p.x - before.x) < 0.5 && Math.abs(p.y - before.y) < 0.5; }",
        arg=before,
    )
    expect(page.locator("#pose-phrase")).to_have_text("<sks> back view high-angle shot close-up")  # kept

    page.get_by_role("button", name="Reset camera").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#pose-phrase")).to_have_text("<sks> front view eye-level shot medium shot")
    expect(page.locator("#horizontal-angle-number")).to_have_value("0")
    expect(page.locator("#vertical-angle-number")).to_have_value("0")
    expect(page.locator("#zoom-number")).to_have_value("5")


def test_one_file_control_is_shown_and_reached_with_the_keyboard(
    open_studio: StudioFactory, photo: Path
) -> None:
    studio = open_studio().open()
    page = studio.page
    # turns on catching the file dialog now: doing it at the press itself races with the press
    page.on("filechooser", lambda _chooser: None)
    expect(page.locator("#file-input")).to_be_hidden()
    choose = page.get_by_role("button", name="choose a file")
    expect(choose).to_be_visible()
    choose.focus()
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Enter")
    chooser.value.set_files(str(photo))
    expect(page.locator("#input-status")).to_contain_text("Input: photo.png")


def test_on_a_phone_the_image_panel_comes_first(open_studio: StudioFactory) -> None:
    page = open_studio(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True).open().page
    image = page.locator(".input-panel").bounding_box()
    camera = page.locator(".view-panel").bounding_box()
    assert image is not None
    assert camera is not None
    assert image["y"] + image["height"] <= camera["y"], (image, camera)
