"""SIGTERM (a CI timeout, `timeout(1)`) while a command waits for its job on a server cancels the job there
first, as Ctrl-C does, and exits 143. The signal is real: sent to this process while the command reads the
job's events (the FakeServer of the SDK tests)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

import httpx
import pytest

from reangle.cli.main import main
from tests.cli.conftest import answer_with
from tests.client.fakes import API, API_KEY, FakeServer

SERVER = ("--server", API, "--api-key", API_KEY)


class UnhandledSigterm(Exception):
    """What SIGTERM raises when the command left it to the test's own handler."""


@pytest.fixture
def own_handler() -> Iterator[Callable[[int, FrameType | None], None]]:
    """A handler of the test's own while it runs: a command that does not take SIGTERM over fails the test
    rather than ending pytest."""

    def unhandled(_signum: int, _frame: FrameType | None) -> None:
        raise UnhandledSigterm

    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        yield unhandled
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    """A FakeServer, with SIGTERM sent to this process as the command asks for its job's events."""
    fake = FakeServer()

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            os.kill(os.getpid(), signal.SIGTERM)
        return fake.handle(request)

    answer_with(monkeypatch, handle)
    return fake


@pytest.mark.parametrize(
    "command",
    [
        ["edit", "{photo}", "-o", "{dir}/out.png"],
        ["generate", "a cat", "-o", "{dir}/out.png"],
        ["orbit", "{photo}", "-o", "{dir}/views"],
    ],
    ids=["edit", "generate", "orbit"],
)
def test_sigterm_while_waiting_cancels_the_job_and_exits_143(
    fake: FakeServer,
    own_handler: Callable[[int, FrameType | None], None],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n" + b"pretend pixels")
    argv = [part.format(photo=photo, dir=tmp_path) for part in command]
    assert main([*argv, *SERVER]) == 143
    (job_id,) = [job_id for job_id, job in fake.jobs.items() if job["status"] == "canceled"]
    assert len(fake.requests_to("POST", f"/v1/jobs/{job_id}/cancel")) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("reangle:")]
    assert lines == [f"reangle: job {job_id} canceled on the server", "reangle: terminated"]
    assert signal.getsignal(signal.SIGTERM) is own_handler  # the handler before the command is back
