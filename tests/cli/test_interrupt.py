"""Ctrl-C pressed again while the command cancels its job on the server (a double press): the cancel is
still sent, and when the user insists on stopping first, the message says how to cancel the job later. The
signals are real: SIGINT sent to this process as the cancel request goes out (the FakeServer of the SDK
tests)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from reangle.cli.main import main
from tests.cli.conftest import answer_with
from tests.client.fakes import API, API_KEY, FakeServer

SERVER = ("--server", API, "--api-key", API_KEY)


def interrupted_fake(monkeypatch: pytest.MonkeyPatch, presses: int) -> FakeServer:
    """A FakeServer where Ctrl-C arrives while the job's events are read, and `presses` more as the cancel
    request goes out."""
    fake = FakeServer()
    fake.stream_mode = "interrupt"

    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/cancel"):
            for _ in range(presses):
                os.kill(os.getpid(), signal.SIGINT)
        return fake.handle(request)

    answer_with(monkeypatch, handle)
    return fake


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("reangle:")]


def test_a_second_ctrl_c_while_canceling_does_not_stop_the_cancel(
    monkeypatch: pytest.MonkeyPatch, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = interrupted_fake(monkeypatch, presses=1)
    assert main(["edit", str(photo), *SERVER, "-o", str(tmp_path / "out.png")]) == 130
    ((job_id, job),) = fake.jobs.items()
    assert job["status"] == "canceled"
    assert error_lines(capsys.readouterr().err) == [
        f"reangle: canceling job {job_id} on the server; press Ctrl-C again to stop waiting for that",
        f"reangle: job {job_id} canceled on the server",
        "reangle: canceled",
    ]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_pressed_on_while_canceling_says_how_to_cancel_later(
    monkeypatch: pytest.MonkeyPatch, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = interrupted_fake(monkeypatch, presses=2)
    assert main(["edit", str(photo), *SERVER, "-o", str(tmp_path / "out.png")]) == 130
    ((job_id, job),) = fake.jobs.items()
    assert job["status"] != "canceled"
    lines = error_lines(capsys.readouterr().err)
    assert lines[1:] == [
        f"reangle: stopped waiting for the cancel; job {job_id} may still be running on the "
        f"server: cancel it with `reangle jobs cancel {job_id}`",
        "reangle: canceled",
    ]
