"""The HTTP integration suite's fixtures: real `reangle serve` processes on 127.0.0.1, talked to over HTTP.

Most tests share one session server (fake engine, keys key-a and key-b) and isolate themselves with a fresh
API key each (`api`), made in its data directory the way `reangle keys create` makes one. Tests that need
other settings, or that stop, kill or restart the server, start their own with `serve`.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from reangle.api.auth import create_key
from reangle.core.models import CAMERA_EDIT
from reangle.core.ports import JobStore
from reangle.store.postgres import PostgresStore
from reangle.store.sqlite import SqliteStore
from tests.conftest import backend_settings, image_bytes, make_image

KEY_A, KEY_B = "key-a", "key-b"
STEP_S = 0.02  # per-step delay of the fake engine in every test server
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
JOB_TIMEOUT_S = 30.0
POLL_S = 0.02
TERMINAL = frozenset({"succeeded", "failed", "canceled"})
REPO = Path(__file__).resolve().parents[2]

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    """One `python -m reangle serve` process; restartable on the same port and data directory."""

    data_dir: Path
    env: dict[str, str]
    engine: str = "fake"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}-server.log"

    def start(self, timeout: float = START_TIMEOUT_S) -> ServerProcess:
        assert self.process is None, "already running"
        command = [sys.executable, "-m", "reangle", "serve", "--engine", self.engine]
        command += ["--port", str(self.port), "--data-dir", str(self.data_dir)]
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                command, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        self._wait_healthy(timeout)
        return self

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                self.process = None
                raise AssertionError(f"the server exited during start-up:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"the server did not answer /healthz in {timeout} s:\n{self.log()}")

    def stop(self, timeout: float = STOP_TIMEOUT_S, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop the way an operator does (SIGTERM, or SIGINT: Ctrl+C): the server must shut down cleanly and
        soon."""
        process = self._take()
        process.send_signal(sig)
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(
                f"the server did not stop within {timeout} s of SIGTERM:\n{self.log()}"
            ) from None
        # uvicorn shuts down, then re-raises the signal it caught: dying of SIGTERM is its clean exit
        assert code in (0, -signal.SIGTERM), f"exit code {code}:\n{self.log()}"
        assert self.log().rstrip().endswith(f"Finished server process [{process.pid}]"), self.log()

    def kill(self) -> None:
        """kill -9: no shutdown code runs, as when the machine loses power or the OOM killer strikes."""
        process = self._take()
        process.kill()
        process.wait()

    def restart(self) -> ServerProcess:
        if self.process is not None:
            self.stop()
        return self.start()

    def _take(self) -> subprocess.Popen[bytes]:
        assert self.process is not None, "not running"
        process, self.process = self.process, None
        return process

    def log(self, since: int = 0) -> str:
        """The server's output from byte `since` on (the last 6000 characters of it: for messages)."""
        return self.full_log(since)[-6000:]

    def full_log(self, since: int = 0) -> str:
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            log.seek(since)
            return log.read().decode(errors="replace")

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def assert_no_server_errors(self, since: int = 0) -> None:
        """Nothing the server was sent made it fail: no 500 answered, no traceback logged."""
        text = self.full_log(since)
        assert '" 500 ' not in text, text[-6000:]
        assert "Traceback" not in text, text[-6000:]

    def client(self, key: str | None = KEY_A) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=JOB_TIMEOUT_S)

    def new_key(self, name: str = "test") -> str:
        """A stored API key, made in the data directory while the server runs (as `reangle keys create`)."""
        database_url = self.env.get("REANGLE_DATABASE_URL")
        store: JobStore = (
            PostgresStore(database_url) if database_url else SqliteStore(self.data_dir / "reangle.sqlite3")
        )
        try:
            return create_key(store, name)[1]
        finally:
            store.close()


def server_env(cache_dir: Path, **settings: str | float | int) -> dict[str, str]:
    """The server's whole environment: no REANGLE_ variable leaks in from the caller's shell."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("REANGLE_")}
    env |= {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "REANGLE_CACHE_DIR": str(cache_dir),
        "REANGLE_FAKE_STEP_SECONDS": str(STEP_S),
        "REANGLE_API_KEYS": f"{KEY_A},{KEY_B}",
    }
    env |= {f"REANGLE_{name.upper()}": str(value) for name, value in settings.items()}
    return env


ServerFactory = Callable[..., ServerProcess]


@pytest.fixture
def serve(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[ServerFactory]:
    """Start a dedicated server: `serve(max_queue=2, engine="fake")`; every one is stopped afterwards."""
    servers: list[ServerProcess] = []

    def start(engine: str = "fake", **settings: str | float | int) -> ServerProcess:
        data_dir = tmp_path_factory.mktemp("server") / "data"
        server = ServerProcess(data_dir=data_dir, env=server_env(cache_dir, **settings), engine=engine)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        if server.process is not None:
            server.kill()
    for server in servers:
        server.assert_no_server_errors()


@pytest.fixture(scope="session")
def shared_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, cache_dir: Path, backend: str
) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("shared") / "data"
    env = server_env(cache_dir, **backend_settings(request, backend))
    server = ServerProcess(data_dir=data_dir, env=env)
    server.start()
    yield server
    if server.process is not None:
        server.stop()
    server.assert_no_server_errors()


@pytest.fixture
def api(shared_server: ServerProcess) -> Iterator[httpx.Client]:
    """A client of the shared server with a key of its own, so no other test's jobs show up. Whatever the test
    sent, the server must not have failed on it."""
    start = shared_server.log_size()
    with shared_server.client(shared_server.new_key()) as client:
        yield client
    shared_server.assert_no_server_errors(since=start)


# requests ----------------------------------------------------------------------------------------------


def png(width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    return image_bytes(make_image(width, height, color=color), "PNG")


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def upload(client: httpx.Client, data: bytes | None = None) -> dict[str, Any]:
    response = client.post("/v1/assets", files={"file": ("input.png", data or png(), "image/png")})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def edit_input(image: str, **fields: Any) -> dict[str, Any]:
    """A small, fast camera edit of one image (4 Lightning steps, 64x64)."""
    return {"images": [image], "horizontal_angle": 90, "width": 64, "height": 64, "seed": 7} | fields


def slow_input(image: str, steps: int = 100, **fields: Any) -> dict[str, Any]:
    return edit_input(image, num_inference_steps=steps, **fields)


def hold_input(image: str) -> dict[str, Any]:
    """An orbit of 16 views x 100 steps (about 30 s on the fake engine): holds the runner until canceled."""
    return {
        "image": image,
        "poses": [{"azimuth": 45 * (i % 8)} for i in range(16)],  # a path may pass a view twice
        "num_inference_steps": 100,
        "width": 16,
        "height": 16,
    }


def submit(
    client: httpx.Client,
    input: dict[str, Any],
    *,
    kind: str = "edit",
    model: str = CAMERA_EDIT,
    expect: int = 202,
    **options: Any,
) -> dict[str, Any]:
    response = client.post("/v1/jobs", json={"model": model, "kind": kind, "input": input, **options})
    assert response.status_code == expect, response.text
    body: dict[str, Any] = response.json()
    return body


def poll(probe: Callable[[], T | None], *, timeout: float = JOB_TIMEOUT_S, what: str = "condition") -> T:
    """Call `probe` until it returns something other than None, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(POLL_S)


def get_job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_job(
    client: httpx.Client,
    job_id: str,
    until: Callable[[dict[str, Any]], bool] = lambda job: job["status"] in TERMINAL,
    *,
    timeout: float = JOB_TIMEOUT_S,
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        job = get_job(client, job_id)
        return job if until(job) else None

    return poll(probe, timeout=timeout, what=f"job {job_id}")


def running(job: dict[str, Any]) -> bool:
    """The job is processing and has done at least one step (so it really runs)."""
    if job["status"] in TERMINAL:
        raise AssertionError(f"job {job['id']} ended ({job['status']}) before it was seen running")
    return bool(job["status"] == "processing" and job["progress"] > 0)


def succeeded(client: httpx.Client, job_id: str, timeout: float = JOB_TIMEOUT_S) -> dict[str, Any]:
    job = wait_job(client, job_id, timeout=timeout)
    assert job["status"] == "succeeded", json.dumps(job, indent=1)
    return job


def cancel(client: httpx.Client, job_id: str) -> dict[str, Any]:
    response = client.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def download(url: str) -> httpx.Response:
    """Fetch a signed link the way a browser would: no API key."""
    return httpx.get(url, timeout=JOB_TIMEOUT_S)


def assert_error(response: httpx.Response, status: int, code: str, *mentions: str) -> dict[str, Any]:
    """The native error shape with this status and code; its message must hold `mentions` (a field name)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str), error
    for word in mentions:
        assert word in error["message"], f"{word!r} not in {error['message']!r}"
    return error
