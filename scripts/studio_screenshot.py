"""Make docs/studio.png: the studio in use, on a throwaway `reangle serve --engine fake` (auth off), shot by
Debian's Chromium. Run from the repository: `.venv/bin/python scripts/studio_screenshot.py`."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image, ImageDraw
from playwright.sync_api import expect, sync_playwright

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "docs" / "studio.png"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def sample_photo() -> bytes:
    """A stand-in subject: a figure on a plain ground, so the card in the 3D view shows something."""
    image = Image.new("RGB", (480, 320), (70, 110, 160))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 230, 480, 320), fill=(90, 140, 80))
    draw.ellipse((205, 60, 275, 130), fill=(240, 200, 160))
    draw.rectangle((200, 130, 280, 250), fill=(200, 60, 60))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def main() -> int:
    with tempfile.TemporaryDirectory() as folder:
        port = free_port()
        env = {"REANGLE_AUTH": "off", "REANGLE_FAKE_STEP_SECONDS": "0.05", "PATH": "/usr/bin:/bin"}
        command = [sys.executable, "-m", "reangle", "serve", "--engine", "fake", "--port", str(port)]
        server = subprocess.Popen([*command, "--data-dir", f"{folder}/data"], cwd=REPO, env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url)
            photo = Path(folder) / "photo.png"
            photo.write_bytes(sample_photo())
            shoot(url, photo)
        finally:
            server.terminate()
            server.wait(20)
    print(OUTPUT)
    return 0


def wait_healthy(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("the server did not start")


def shoot(url: str, photo: Path) -> None:
    with sync_playwright() as driver:
        chromium = driver.chromium
        browser = chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(url)
        expect(page.locator("body")).to_have_attribute("data-ready", "true")
        page.set_input_files("#file-input", str(photo))
        expect(page.locator("#input-status")).to_contain_text("Input:")
        page.fill("#horizontal-angle-number", "45")
        page.fill("#vertical-angle-number", "30")
        page.fill("#prompt", "golden hour light")
        page.click("#generate")
        expect(page.locator("#progress-text")).to_have_text("Done", timeout=30_000)
        page.fill("#horizontal-angle-number", "100")  # the camera mid-move: the nearest pose lit up
        page.screenshot(path=str(OUTPUT), full_page=True)
        browser.close()


if __name__ == "__main__":
    sys.exit(main())
