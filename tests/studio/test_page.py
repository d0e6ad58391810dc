"""The studio page itself: served from the package with caching and security headers, nothing loaded from
any other host, the demo notice, a server without auth, and a phone's screen and touch."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import httpx
from playwright.sync_api import expect

from reangle.api.studio import FILES
from tests.api.conftest import ServerProcess
from tests.studio.conftest import REPO, StudioFactory


def test_the_page_and_its_files_have_caching_and_a_policy_against_remote_scripts(
    studio_server: ServerProcess,
) -> None:
    page = httpx.get(f"{studio_server.url}/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache"
    policy = dict(part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";"))
    assert policy["script-src"] == "'self'"
    assert policy["connect-src"] == "'self'"
    assert policy["default-src"] == "'self'"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert httpx.head(f"{studio_server.url}/").status_code == 200
    for revalidation in (
        {"If-None-Match": page.headers["etag"]},
        {"If-Modified-Since": page.headers["last-modified"]},
    ):
        unchanged = httpx.get(f"{studio_server.url}/", headers=revalidation)
        assert unchanged.status_code == 304, revalidation
        assert unchanged.headers["cache-control"] == "no-cache"

    module = httpx.get(f"{studio_server.url}/studio/js/main.js")
    assert module.headers["content-type"].startswith("text/javascript")
    assert module.headers["cache-control"] == "no-cache"
    assert "script-src 'self'" in module.headers["content-security-policy"]
    again = httpx.get(
        f"{studio_server.url}/studio/js/main.js", headers={"If-None-Match": module.headers["etag"]}
    )
    assert again.status_code == 304

    three = httpx.get(f"{studio_server.url}/studio/vendor/three-0.180.0/three.module.min.js")
    assert three.status_code == 200
    assert three.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert httpx.get(f"{studio_server.url}/studio/nothing-here.js").status_code == 404


def test_every_file_the_page_loads_is_in_the_package_data() -> None:
    """An installed reangle (not only this checkout) serves the page: pyproject's package-data holds every
    studio file, and every module the page imports exists, with three.js's licence beside it."""
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "reangle.api"
    ]
    package = FILES.parent.parent
    files = [path for path in FILES.rglob("*") if path.is_file()]
    assert files
    for path in files:
        relative = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatchcase(relative, pattern) for pattern in patterns), relative
    for script in FILES.rglob("js/*.js"):
        for imported in re.findall(r'from "(\.[^"]+)"', script.read_text()):
            assert (script.parent / imported).resolve().is_file(), (script, imported)
    assert (FILES / "vendor" / "three-0.180.0" / "LICENSE").read_text().startswith("The MIT License")
    html = (FILES / "index.html").read_text()
    assert not re.search(r'(src|href)="(https?:)?//', html)


def test_the_page_preloads_every_module_it_imports_and_nothing_else() -> None:
    """Without a preload, a module is asked for only once its importer has arrived: one round trip per
    level of imports (main.js, scene.js, three.module, three.core) before the page can start."""
    html = (FILES / "index.html").read_text()
    preloaded = {
        FILES / href.removeprefix("/studio/")
        for href in re.findall(r'rel="modulepreload" href="([^"]+)"', html)
    }
    imported: set[Path] = set()
    waiting = [FILES / "js" / "main.js"]
    while waiting:
        script = waiting.pop()
        for name in re.findall(r'(?:from ?|import ?)"(\.[^"]+)"', script.read_text()):
            module = (script.parent / name).resolve()
            if module not in imported:
                imported.add(module)
                waiting.append(module)
    assert FILES / "vendor" / "three-0.180.0" / "three.core.min.js" in imported  # three's own import is seen
    assert preloaded == imported


def test_the_page_asks_no_other_host_for_anything(open_studio: StudioFactory, photo: Path) -> None:
    studio = open_studio().open()
    studio.upload(photo)
    studio.page.click("#generate")
    studio.wait_done()
    assert studio.requests, "the guard saw no request at all"
    assert any("/studio/vendor/three-0.180.0/three.module.min.js" in url for url in studio.requests)
    assert studio.foreign_requests() == []


def test_the_demo_engine_says_its_images_are_meaningless(open_studio: StudioFactory) -> None:
    page = open_studio().open().page
    expect(page.locator("#demo-notice")).to_be_visible()
    expect(page.locator("#demo-notice")).to_contain_text(
        "Demo engine (fake): the images it makes are meaningless"
    )


def test_a_page_opened_with_a_key_sends_no_request_refused_for_want_of_one(
    open_studio: StudioFactory,
) -> None:
    """Whether the server needs a key comes from /healthz, not from a keyless request answered 401 (an
    error in the browser's console and a line in the server's log at every load)."""
    studio = open_studio()
    refused: list[str] = []
    studio.page.on(
        "response", lambda response: refused.append(response.url) if response.status == 401 else None
    )
    studio.open()
    expect(studio.page.locator("#key-status")).to_have_text("Key accepted.")
    assert refused == []


def test_without_auth_no_key_is_asked_for(open_studio: StudioFactory, open_server: ServerProcess) -> None:
    studio = open_studio(key=None, server=open_server).open()
    expect(studio.page.locator("#key-status")).to_have_text("No key needed: this server runs without auth.")
    expect(studio.page.locator("#api-key")).to_be_hidden()
    expect(studio.page.locator("#pose-phrase")).to_have_text("<sks> front view eye-level shot medium shot")


def test_without_auth_a_key_kept_from_before_is_not_said_to_be_accepted(
    open_studio: StudioFactory, open_server: ServerProcess
) -> None:
    studio = open_studio(key="a-key-from-another-server", server=open_server).open()
    expect(studio.page.locator("#key-status")).to_have_text("No key needed: this server runs without auth.")
    expect(studio.page.locator("#api-key")).to_be_hidden()


def test_on_a_phone_everything_fits_and_the_view_takes_touch_drags(open_studio: StudioFactory) -> None:
    studio = open_studio(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True).open()
    page = studio.page
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    for control in ("#scene-canvas", "#horizontal-angle", "#generate", "#choose-file", "#history"):
        box = page.locator(control).bounding_box()
        assert box is not None, control
        assert 0 <= box["x"] <= box["x"] + box["width"] <= 390, (control, box)
    page.locator("#scene-canvas").scroll_into_view_if_needed()  # under the image panel, which comes first
    scrolled = page.evaluate("() => window.scrollY")
    start = page.evaluate("() => window.studio.scene.cameraOnScreen()")
    target = page.evaluate("() => window.studio.scene.pointOnScreen({horizontal: 90, vertical: 30, zoom: 5})")
    session = page.context.new_cdp_session(page)

    def touch(kind: str, x: float, y: float) -> None:
        points = [] if kind == "touchEnd" else [{"x": x, "y": y}]
        session.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": points})

    touch("touchStart", start["x"], start["y"])
    for k in range(1, 21):
        touch(
            "touchMove",
            start["x"] + (target["x"] - start["x"]) * k / 20,
            start["y"] + (target["y"] - start["y"]) * k / 20,
        )
    touch("touchEnd", target["x"], target["y"])
    expect(page.locator("#pose-phrase")).to_have_text("<sks> right side view elevated shot medium shot")
    expect(page.locator("#horizontal-angle-number")).to_have_value("90")
    assert page.evaluate("() => window.scrollY") == scrolled  # the drag moved the camera, not the page
