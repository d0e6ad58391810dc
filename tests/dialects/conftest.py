"""Fixtures for the dialect suites: real `reangle serve` processes on 127.0.0.1 that the providers' own
clients talk to over HTTP. One fake-engine server per session; a tiny-engine one only for tests that ask."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import backend_settings, image_bytes, make_image

API_KEY = "test-key-1"
OTHER_KEY = "test-key-2"


@dataclass(frozen=True)
class RunningServer:
    url: str  #: http://127.0.0.1:PORT, no trailing slash
    data_dir: Path
    process: subprocess.Popen[bytes]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(data_dir: Path, *, engine: str = "fake", env: dict[str, str] | None = None) -> RunningServer:
    port = _free_port()
    settings = {
        "REANGLE_API_KEYS": f"{API_KEY},{OTHER_KEY}",
        "REANGLE_FAKE_STEP_SECONDS": "0.02",
        "HF_HUB_OFFLINE": "1",
        **(env or {}),
    }
    log = (data_dir / "server.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reangle",
            "serve",
            "--engine",
            engine,
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ],
        env={**os.environ, **settings},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {(data_dir / 'server.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return RunningServer(url=url, data_dir=data_dir, process=process)
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not answer /healthz within 120 s")


def stop_server(server: RunningServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="session")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, backend: str
) -> Iterator[RunningServer]:
    """A fake-engine server (0.02 s per step) accepting API_KEY and OTHER_KEY, on each job store in turn."""
    settings = backend_settings(request, backend)
    env = {f"REANGLE_{name.upper()}": value for name, value in settings.items()}
    running = start_server(tmp_path_factory.mktemp("dialect-server"), env=env)
    yield running
    stop_server(running)


@pytest.fixture(scope="session")
def tiny_server(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[RunningServer]:
    """A tiny-engine server: the real diffusers path with random weights (meaningless pixels)."""
    running = start_server(
        tmp_path_factory.mktemp("dialect-tiny-server"),
        engine="tiny",
        env={"REANGLE_CACHE_DIR": str(cache_dir)},
    )
    yield running
    stop_server(running)


def png(width: int = 96, height: int = 64) -> bytes:
    return image_bytes(make_image(width, height))


def png_base64(width: int = 96, height: int = 64) -> str:
    return base64.b64encode(png(width, height)).decode()


@contextmanager
def served_catalog(text: str, folder: Path) -> Iterator[Path]:
    """A catalog file of `text` in `folder`, served by this process inside the block (as `reangle serve`
    installs it); the shipped catalog again after."""
    from reangle.catalog import load_catalog
    from reangle.core.models import TASK_INPUTS, install_catalog

    path = folder / "models.toml"
    path.write_text(text)
    install_catalog(load_catalog(path, inputs=TASK_INPUTS), {})
    try:
        yield path
    finally:
        install_catalog(load_catalog(inputs=TASK_INPUTS), {})
