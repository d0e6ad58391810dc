"""The studio's browser tests: Debian's Chromium (/usr/bin/chromium, headless) driven by Playwright against a
real `reangle serve --engine fake`. One browser and one server for the whole package (each test has keys of
its own, and the jobs it leaves unfinished are canceled after it), a fresh browser context (storage, cache)
per test. Every page is checked for requests to any other host and for script errors; a failed test leaves a
screenshot in test-artifacts/studio/.
"""

from __future__ import annotations

import base64
import contextlib
import re
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, Route, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.api.conftest import REPO, ServerProcess, server_env
from tests.conftest import image_bytes, make_image

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--use-angle=swiftshader",  # WebGL on the CPU, the same on every machine
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
ARTIFACTS = REPO / "test-artifacts" / "studio"
#: Longest wait for anything the page shows; generous because the machine may be busy with other suites.
WAIT_MS = 30_000
#: The fake engine's time per step in the studio's servers: a 100-step job runs ~5 s, long enough to cancel.
STEP_S = 0.05


expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="package")
def starting_servers(
    tmp_path_factory: pytest.TempPathFactory, cache_dir: Path
) -> Iterator[dict[str, Future[ServerProcess]]]:
    """The package's two servers (`studio_server`, `open_server`), started side by side while the browser
    starts: a start is mostly a wait."""
    servers = {
        "studio": new_server(tmp_path_factory, cache_dir, fake_step_seconds=STEP_S),
        "open": new_server(
            tmp_path_factory, cache_dir, auth="off", max_upload_bytes=2000, fake_step_seconds=STEP_S
        ),
    }
    with ThreadPoolExecutor(max_workers=len(servers)) as pool:
        starting = {name: pool.submit(server.start) for name, server in servers.items()}
        yield starting
    for server in servers.values():
        if server.process is not None:
            server.stop()
    for server in servers.values():
        server.assert_no_server_errors()


# Package scope: Playwright's sync API runs an event loop in this thread while it is open, which would stop
# other suites' asyncio.run(); it closes after the last studio test.
@pytest.fixture(scope="package")
def playwright(starting_servers: dict[str, Future[ServerProcess]]) -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("Chromium is missing: apt-get install -y chromium (scripts/test does it)", pytrace=False)
    launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
    yield launched
    launched.close()


@pytest.fixture(scope="package")
def studio_server(starting_servers: dict[str, Future[ServerProcess]]) -> ServerProcess:
    """A fake-engine server with auth on, shared by the package's tests (each uses keys of its own)."""
    return starting_servers["studio"].result()


@pytest.fixture(scope="package")
def open_server(starting_servers: dict[str, Future[ServerProcess]]) -> ServerProcess:
    """A server without auth and with an upload limit of 2,000 bytes, for the tests of those two; and the one
    the restart test stops and starts again (it starts with the studio's step time)."""
    return starting_servers["open"].result()


def new_server(
    tmp_path_factory: pytest.TempPathFactory, cache_dir: Path, **settings: str | float | int
) -> ServerProcess:
    data_dir = tmp_path_factory.mktemp("studio") / "data"
    return ServerProcess(data_dir=data_dir, env=server_env(cache_dir, **settings))


@dataclass
class Studio:
    """One page of the studio and what it did: the requests it made and the script errors it raised."""

    page: Page
    server: ServerProcess
    key: str | None
    requests: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    #: the keys it used (its own and any made later), whose unfinished jobs are canceled after the test
    keys: list[str] = field(default_factory=list)

    @property
    def server_url(self) -> str:
        return self.server.url

    def new_key(self) -> str:
        key = self.server.new_key()
        self.keys.append(key)
        return key

    def cancel_unfinished_jobs(self) -> None:
        """Cancel what the test left queued or running: the next test's jobs would wait behind it."""
        if self.server.process is None:
            return
        for key in self.keys:
            with httpx.Client(base_url=self.server_url, headers={"Authorization": f"Bearer {key}"}) as client:
                listed = client.get("/v1/jobs", params={"limit": 100}).raise_for_status()
                for job in listed.json()["data"]:
                    if job["status"] in ("queued", "processing"):
                        client.post(f"/v1/jobs/{job['id']}/cancel")  # 409 if it has ended meanwhile

    def open(self) -> Studio:
        self.page.goto(f"{self.server_url}/")
        expect(self.page.locator("body")).to_have_attribute("data-ready", "true", timeout=WAIT_MS)
        return self

    def foreign_requests(self) -> list[str]:
        own = urlsplit(self.server_url).netloc
        return [
            url for url in self.requests if urlsplit(url).scheme != "blob" and urlsplit(url).netloc != own
        ]

    # the page's own lookups, for tests that check where things are

    def evaluate(self, script: str, argument: object = None) -> object:
        return self.page.evaluate(script, argument)

    def phrase(self) -> str:
        return str(self.page.locator("#pose-phrase").text_content())

    def upload(self, path: Path) -> None:
        self.page.set_input_files("#file-input", str(path))
        expect(self.page.locator("#input-status")).to_contain_text("Input:", timeout=WAIT_MS)

    def open_advanced(self) -> None:
        details = self.page.locator("#advanced")
        if details.get_attribute("open") is None:
            self.page.locator("#advanced summary").click()

    def wait_done(self, text: str = "Done") -> None:
        """Wait for the progress text, asked every 50 ms (expect() slows to asking once a second, which adds
        up over the package's many job waits); a text that never comes is reported by expect()."""
        with contextlib.suppress(PlaywrightTimeoutError):
            self.page.wait_for_function(
                "(text) => document.getElementById('progress-text').textContent === text",
                arg=text,
                polling=50,
                timeout=WAIT_MS,
            )
        expect(self.page.locator("#progress-text")).to_have_text(text, timeout=1)


StudioFactory = Callable[..., Studio]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def open_studio(
    request: pytest.FixtureRequest, browser: Browser, studio_server: ServerProcess
) -> Iterator[StudioFactory]:
    """`open_studio()` opens the page in a fresh context with a new key of its own already entered;
    `open_studio(key=None)` without one, `open_studio(server=...)` on another server."""
    opened: list[tuple[BrowserContext, Studio]] = []

    def start(
        *, key: str | bool | None = True, server: ServerProcess | None = None, **context_options: object
    ) -> Studio:
        server = server or studio_server
        api_key = server.new_key() if key is True else (key or None)
        options: dict[str, object] = {"viewport": {"width": 1280, "height": 800}} | context_options
        context = browser.new_context(**options)  # type: ignore[arg-type]
        context.set_default_timeout(WAIT_MS)
        if api_key:
            context.add_init_script(f"localStorage.setItem('reangle.apiKey', {api_key!r})")
        page = context.new_page()
        studio = Studio(page=page, server=server, key=api_key, keys=[api_key] if api_key else [])
        own = urlsplit(server.url).netloc

        def guard(route: Route) -> None:
            studio.requests.append(route.request.url)
            if urlsplit(route.request.url).netloc == own:
                route.continue_()
            else:
                route.abort()

        context.route("**/*", guard)
        page.on("pageerror", lambda error: studio.page_errors.append(str(error)))
        opened.append((context, studio))
        return studio

    yield start
    failed = getattr(request.node, "report_call", None)
    for index, (context, studio) in enumerate(opened):
        if failed is not None and failed.failed:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            name = re.sub(r"[^\w.-]", "_", request.node.name)
            studio.page.screenshot(path=str(ARTIFACTS / f"{name}-{index}.png"), full_page=True)
        context.close()
    for _, studio in opened:
        studio.cancel_unfinished_jobs()
    for _, studio in opened:
        assert studio.foreign_requests() == [], studio.foreign_requests()
        assert studio.page_errors == [], studio.page_errors


@pytest.fixture(scope="session")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small 3:2 PNG, as a person would upload."""
    path = tmp_path_factory.mktemp("images") / "photo.png"
    path.write_bytes(image_bytes(make_image(96, 64), "PNG"))
    return path


def drop_file(page: Page, selector: str, name: str, data: bytes, mime: str) -> None:
    """Drop a file onto an element as a person dragging it from the desktop would: a real DataTransfer."""
    transfer = page.evaluate_handle(
        """([name, b64, mime]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: mime }));
            return transfer;
        }""",
        [name, base64.b64encode(data).decode(), mime],
    )
    page.dispatch_event(selector, "dragenter", {"dataTransfer": transfer})
    page.dispatch_event(selector, "dragover", {"dataTransfer": transfer})
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})
