"""The studio's camera control: the page's camera math against reangle's, the convention (a "right side view"
puts the camera on the subject's right), dragging the camera in the 3D view, sliders, keyboard."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
from typing import Any

from playwright.sync_api import Page, expect

from reangle.cli.main import main
from reangle.core.camera import all_poses, pose_from_continuous
from tests.conftest import image_bytes, make_image
from tests.studio.conftest import StudioFactory, drop_file

CAMERA_MODULE = "/studio/js/camera.js"


def reangle_pose(*flags: str) -> dict[str, Any]:
    """What `reangle pose ... --json` prints: the command line people check a pose with (its entry point,
    called in this process)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["pose", *flags, "--json"]) == 0
    result: dict[str, Any] = json.loads(printed.getvalue())
    return result


def test_the_pages_nearest_pose_is_the_servers_for_any_camera(open_studio: StudioFactory) -> None:
    studio = open_studio().open()
    horizontals = [0, 10, 22.4, 22.5, 67.5, 90, 112.4, 200, 337.4, 337.5, 359.9, -45, 405]
    verticals = [-90, -15.01, -15, 0, 14.9, 15, 44.9, 45, 90]
    zooms = [0, 1.99, 2, 5, 5.99, 6, 10]
    cameras = [
        {"horizontal": h, "vertical": v, "zoom": z}
        for h, v, z in itertools.product(horizontals, verticals, zooms)
    ]
    page_phrases = studio.evaluate(
        "(cameras) => cameras.map((c) => window.studio.table.nearest(c).prompt)", cameras
    )
    expected = [
        pose_from_continuous(c["horizontal"], c["vertical"], c["zoom"]).camera_phrase for c in cameras
    ]
    assert page_phrases == expected
    # every one of the 96 snap points is its own pose
    snap_points = studio.evaluate(
        "() => window.studio.table.entries.map((e) => window.studio.table.nearest("
        "window.studio.table.cameraOf(e)).prompt === e.prompt)"
    )
    assert snap_points == [True] * len(all_poses())


def test_sphere_positions_round_trip_and_agree_with_reangle_pose(open_studio: StudioFactory) -> None:
    studio = open_studio().open()
    cameras = [
        {"horizontal": 90, "vertical": 30, "zoom": 8},
        {"horizontal": 225, "vertical": -20, "zoom": 1},
        {"horizontal": 315, "vertical": 70, "zoom": 4},
    ]
    found = studio.evaluate(
        """async ([module, cameras]) => {
            const camera = await import(module);
            return cameras.map((c) => {
                const back = camera.cameraAt(camera.positionOf(c));
                return { back, prompt: window.studio.table.nearest(back).prompt };
            });
        }""",
        [CAMERA_MODULE, cameras],
    )
    assert isinstance(found, list)
    for camera, result in zip(cameras, found, strict=True):
        for axis in ("horizontal", "vertical", "zoom"):
            assert math.isclose(result["back"][axis], camera[axis], abs_tol=1e-6), (camera, result)
        cli = reangle_pose(
            "--horizontal-angle",
            str(camera["horizontal"]),
            "--vertical-angle",
            str(camera["vertical"]),
            "--zoom",
            str(camera["zoom"]),
        )
        assert result["prompt"] == cli["prompt"]


def test_a_right_side_view_puts_the_camera_on_the_subjects_right(open_studio: StudioFactory) -> None:
    """The subject in the photo faces the front camera, so its right hand is on the image's left edge: the
    camera of `reangle pose --horizontal-angle 90` (right side view) must stand on that side of the card."""
    right = reangle_pose("--horizontal-angle", "90")
    left = reangle_pose("--horizontal-angle", "270")
    assert (right["azimuth"], left["azimuth"]) == ("right side view", "left side view")
    studio = open_studio().open()
    page = studio.page

    def camera_and_edges(horizontal: float) -> tuple[list[float], list[float], list[float]]:
        page.fill("#horizontal-angle-number", str(horizontal))
        scene = "window.studio.scene"
        found = studio.evaluate(
            f"() => [{scene}.cameraPosition(), {scene}.imageEdge('left'), {scene}.imageEdge('right')]"
        )
        assert isinstance(found, list)
        return found[0], found[1], found[2]

    front, image_left, image_right = camera_and_edges(0)
    assert front[2] > 0  # the front camera faces the picture
    assert abs(front[0]) < 1e-6
    assert image_left[0] < image_right[0]  # and sees it unmirrored: its left edge on the camera's left
    camera, image_left, image_right = camera_and_edges(right["azimuth_deg"])
    assert math.dist(camera, image_left) < math.dist(camera, image_right)
    expect(page.locator("#pose-phrase")).to_have_text(right["prompt"])
    camera, image_left, image_right = camera_and_edges(left["azimuth_deg"])
    assert math.dist(camera, image_right) < math.dist(camera, image_left)
    expect(page.locator("#pose-phrase")).to_have_text(left["prompt"])


def test_dragging_the_camera_shows_the_pose_live_and_snaps_the_sliders_to_it(
    open_studio: StudioFactory,
) -> None:
    studio = open_studio().open()
    page = studio.page
    expect(page.locator("#pose-phrase")).to_have_text("<sks> front view eye-level shot medium shot")
    start = studio.evaluate("() => window.studio.scene.cameraOnScreen()")
    target = studio.evaluate(
        "() => window.studio.scene.pointOnScreen({horizontal: 90, vertical: 30, zoom: 5})"
    )
    assert isinstance(start, dict)
    assert isinstance(target, dict)
    page.mouse.move(start["x"], start["y"])
    page.mouse.down()
    page.mouse.move(target["x"], target["y"], steps=30)
    # live, before the button is released
    expect(page.locator("#pose-phrase")).to_have_text("<sks> right side view elevated shot medium shot")
    page.mouse.up()
    expect(page.locator("#horizontal-angle-number")).to_have_value("90")
    expect(page.locator("#vertical-angle-number")).to_have_value("30")
    expect(page.locator("#horizontal-angle")).to_have_value("90")
    expect(page.locator("#vertical-angle")).to_have_value("30")
    # the camera model stands where the snap point is
    moved = studio.evaluate("() => window.studio.scene.cameraOnScreen()")
    assert isinstance(moved, dict)
    assert math.dist((moved["x"], moved["y"]), (target["x"], target["y"])) < 2


def test_wheel_moves_the_camera_nearer_without_jumps(open_studio: StudioFactory) -> None:
    studio = open_studio().open()
    page = studio.page
    box = page.locator("#scene-canvas").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + 20, box["y"] + box["height"] - 20)
    zooms = []
    for _ in range(4):
        before = float(page.locator("#zoom-number").input_value())
        page.mouse.wheel(0, -100)
        expect(page.locator("#zoom-number")).not_to_have_value(str(before))
        zooms.append(float(page.locator("#zoom-number").input_value()))
    steps = [b - a for a, b in itertools.pairwise([5.0, *zooms])]
    assert all(math.isclose(step, steps[0], abs_tol=0.011) for step in steps), zooms  # even steps
    assert zooms[-1] > 6
    expect(page.locator("#pose-phrase")).to_have_text("<sks> front view eye-level shot close-up")


def test_sliders_and_numbers_move_the_3d_camera_and_each_other(open_studio: StudioFactory) -> None:
    studio = open_studio().open()
    page = studio.page
    before = studio.evaluate("() => window.studio.scene.cameraOnScreen()")
    page.fill("#horizontal-angle-number", "270")
    page.fill("#vertical-angle-number", "-40")
    expect(page.locator("#horizontal-angle")).to_have_value("270")
    expect(page.locator("#vertical-angle")).to_have_value("-40")
    expect(page.locator("#pose-phrase")).to_have_text("<sks> left side view low-angle shot medium shot")
    position = studio.evaluate("() => window.studio.scene.cameraPosition()")
    expected = studio.evaluate(
        """async (module) => (await import(module)).positionOf({horizontal: 270, vertical: -40, zoom: 5})""",
        CAMERA_MODULE,
    )
    assert isinstance(position, list)
    assert isinstance(expected, list)
    assert all(math.isclose(a, b, abs_tol=1e-9) for a, b in zip(position, expected, strict=True))
    assert position[0] > 0  # the subject's left (its right hand is on -x)
    assert studio.evaluate("() => window.studio.scene.cameraOnScreen()") != before
    # the range input drives the number input
    page.focus("#zoom")
    page.keyboard.press("End")
    expect(page.locator("#zoom-number")).to_have_value("10")
    expect(page.locator("#pose-phrase")).to_have_text("<sks> left side view low-angle shot close-up")
    # and an out-of-range number is explained next to it rather than taken
    page.fill("#vertical-angle-number", "120")
    expect(page.locator("#vertical-angle-error")).to_contain_text("between -90 and 90")
    expect(page.locator("#vertical-angle")).to_have_value("-40")


def test_presets_set_the_camera(open_studio: StudioFactory) -> None:
    page = open_studio().open().page
    page.get_by_role("button", name="Back-left ¾").click()
    page.get_by_role("button", name="High angle").click()
    expect(page.locator("#pose-phrase")).to_have_text(
        "<sks> back-left quarter view high-angle shot medium shot"
    )
    expect(page.locator("#horizontal-angle-number")).to_have_value("225")


def test_keyboard_reaches_the_3d_view_and_rotates_the_camera(open_studio: StudioFactory) -> None:
    page = open_studio().open().page
    canvas = page.locator("#scene-canvas")
    for _ in range(40):  # Tab from the top of the page until the 3D view has the focus
        page.keyboard.press("Tab")
        if canvas.evaluate("(node) => node === document.activeElement"):
            break
    else:
        raise AssertionError("the 3D view cannot be reached with Tab")
    outline = canvas.evaluate("(node) => getComputedStyle(node).outlineStyle")
    assert outline != "none"  # a visible focus
    assert canvas.get_attribute("aria-label")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    expect(page.locator("#pose-phrase")).to_have_text("<sks> right side view eye-level shot medium shot")
    page.keyboard.press("ArrowUp")
    page.keyboard.press("+")
    page.keyboard.press("+")
    expect(page.locator("#pose-phrase")).to_have_text("<sks> right side view elevated shot close-up")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    expect(page.locator("#pose-phrase")).to_have_text("<sks> front-left quarter view elevated shot close-up")
    expect(page.locator("#horizontal-angle-number")).to_have_value("315")


def test_a_very_wide_image_stays_inside_the_camera_sphere(open_studio: StudioFactory) -> None:
    studio = open_studio().open()
    page = studio.page
    drop_file(page, "#drop-zone", "panorama.png", image_bytes(make_image(300, 20), "PNG"), "image/png")
    expect(page.locator("#input-status")).to_contain_text("panorama.png (300x20)")
    edge = "() => window.studio.scene.imageEdge('right')[0]"
    page.wait_for_function(f"() => ({edge})() !== 0.75")  # the square placeholder until the image is in
    closest = reangle_radius(page, 10)
    assert float(str(studio.evaluate(edge))) < 0.9 * closest


def reangle_radius(page: Page, zoom: float) -> float:
    """The camera's distance from the subject at `zoom`, as the 3D view places it."""
    page.fill("#zoom-number", str(zoom))
    position = page.evaluate("() => window.studio.scene.cameraPosition()")
    assert isinstance(position, list)
    return math.hypot(*position)


def drag_camera(page: Page, dx: float, dy: float) -> dict[str, float]:
    """Drag the camera model by (dx, dy) pixels; the camera just before the button is released."""
    start = page.evaluate("() => window.studio.scene.cameraOnScreen()")
    assert isinstance(start, dict)
    page.mouse.move(start["x"], start["y"])
    page.mouse.down()
    page.mouse.move(start["x"] + dx, start["y"] + dy, steps=20)
    camera = page.evaluate("() => ({ ...window.studio.controls.camera })")
    page.mouse.up()
    assert isinstance(camera, dict)
    return camera


def test_a_sideways_drag_keeps_the_elevation_and_a_drag_leaves_a_pole(open_studio: StudioFactory) -> None:
    page = open_studio().open().page
    page.get_by_role("button", name="High angle").click()
    expect(page.locator("#vertical-angle-number")).to_have_value("60")
    camera = drag_camera(page, 120, 0)
    assert camera["vertical"] == 60
    assert camera["horizontal"] not in (0, 360)
    expect(page.locator("#vertical-angle-number")).to_have_value("60")
    for pole in (90, -90):  # seen from above the front, a pole's camera comes down toward us
        page.fill("#vertical-angle-number", str(pole))
        page.keyboard.press("Tab")
        expect(page.locator("#vertical-angle")).to_have_value(str(pole))
        camera = drag_camera(page, 0, 100)
        assert abs(camera["vertical"]) < 80, camera


def test_the_lit_pose_is_that_of_the_values_sent(open_studio: StudioFactory) -> None:
    studio = open_studio().open()
    page = studio.page
    # many small wheel steps can leave a zoom a hair under a band's bound; what is sent is rounded to 6
    studio.evaluate("() => window.studio.controls.set({ zoom: 5.999999999999979 })")
    assert studio.evaluate("() => window.studio.controls.camera.zoom") == 6
    expect(page.locator("#pose-phrase")).to_have_text(pose_from_continuous(0, 0, 6).camera_phrase)
    page.fill("#horizontal-angle-number", "22.497")
    assert studio.evaluate("() => window.studio.controls.camera.horizontal") == 22.5
    expect(page.locator("#pose-phrase")).to_have_text(pose_from_continuous(22.5, 0, 6).camera_phrase)


def test_a_drag_off_a_pole_follows_the_pointer_and_a_straight_drag_keeps_the_azimuth(
    open_studio: StudioFactory,
) -> None:
    studio = open_studio().open()
    page = studio.page
    for dx, dy in ((150, 0), (-150, 0), (0, 150)):
        page.fill("#vertical-angle-number", "90")
        page.keyboard.press("Tab")
        expect(page.locator("#vertical-angle")).to_have_value("90")
        start = studio.evaluate("() => window.studio.scene.cameraOnScreen()")
        camera = drag_camera(page, dx, dy)
        moved = studio.evaluate(
            "(camera) => window.studio.scene.pointOnScreen(camera)", {**camera, "zoom": 5}
        )
        assert isinstance(start, dict)
        assert isinstance(moved, dict)
        # the camera went most of the way the pointer did, well off the pole
        assert math.dist((start["x"], start["y"]), (moved["x"], moved["y"])) > 100, (dx, dy, camera)
        assert camera["vertical"] < 60, (dx, dy, camera)
    page.get_by_role("button", name="Reset camera").click()
    camera = drag_camera(page, 0, -100)
    assert camera["vertical"] > 30, camera
    assert camera["horizontal"] in (0, 360), camera
    expect(page.locator("#horizontal-angle-number")).to_have_value("0")
