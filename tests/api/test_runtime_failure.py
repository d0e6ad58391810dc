"""The server's job runtime at start: a store unavailable a while (another process's lock on the SQLite file)
delays the recovery of interrupted jobs, and /healthz says so meanwhile; a failure that does not pass (a
malformed database) answers /healthz 503 with the failure and asks the server to stop: it must not answer "ok"
with no runner. Later, a store that refuses the server's writes makes /healthz 503 "degraded" until it takes
them again."""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from reangle.api.app import create_app
from reangle.core.service import JobService
from reangle.runtime import heartbeat
from reangle.settings import Settings
from reangle.store import sqlite as sqlite_store
from reangle.store.sqlite import SqliteStore
from tests.api.conftest import edit_input, submit, succeeded, upload


def settings(data_dir: Path) -> Settings:
    return Settings(engine="fake", data_dir=data_dir, auth="off", cache_dir=data_dir)


def test_a_lock_held_at_start_delays_the_recovery_and_jobs_run_once_it_is_let_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_S", 0.2)
    SqliteStore(tmp_path / "reangle.sqlite3").close()
    other = sqlite3.connect(tmp_path / "reangle.sqlite3", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # as the sqlite3 shell or a backup holds it
    app = create_app(settings(tmp_path))
    with (
        caplog.at_level(logging.WARNING, "reangle.server"),
        TestClient(app, base_url="http://127.0.0.1") as http,
    ):
        deadline = time.monotonic() + 10
        while "could not recover the interrupted jobs" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "database is locked); again in 1 s" in caplog.text
        # no job runs yet: /healthz says so, never "ok" (its next try is 1 s after the first refusal)
        for answer in (http.get("/healthz"), http.head("/healthz")):
            assert answer.status_code == 503
        problem = http.get("/healthz").json()
        assert problem["status"] == "degraded"
        assert problem["problem"].startswith(
            "no job runs until the interrupted jobs of the last run are recovered"
        )
        assert "database is locked" in problem["problem"]
        other.execute("ROLLBACK")
        other.close()
        succeeded(http, submit(http, edit_input(upload(http)["id"]))["id"])
        assert http.get("/healthz").json()["status"] == "ok"
    assert app.state.reangle.failure is None


def test_healthz_answers_503_naming_the_failure_and_the_server_is_asked_to_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def malformed(self: JobService) -> None:
        raise sqlite3.DatabaseError("database disk image is malformed")

    monkeypatch.setattr(JobService, "recover", malformed)
    app = create_app(settings(tmp_path))
    stop_requests: list[str] = []
    app.state.reangle.on_failure = lambda: stop_requests.append("stop")
    with TestClient(app, base_url="http://127.0.0.1") as http:
        deadline = time.monotonic() + 10
        while (health := http.get("/healthz")).json()["status"] != "failed" and time.monotonic() < deadline:
            time.sleep(0.02)
    assert health.status_code == 503
    assert health.json() == {
        "status": "failed",
        "failure": "the runtime task failed: DatabaseError: database disk image is malformed",
        "role": "all",
    }
    assert stop_requests == ["stop"]


def test_healthz_is_degraded_while_the_store_refuses_writes_and_ok_once_it_takes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_S", 0.2)
    monkeypatch.setattr(heartbeat, "REFUSED_FOR_S", 0.5)
    with TestClient(create_app(settings(tmp_path)), base_url="http://127.0.0.1") as http:
        deadline = time.monotonic() + 10  # 503 until the recovery at start has run
        while (health := http.get("/healthz")).status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert health.json()["status"] == "ok"
        other = sqlite3.connect(tmp_path / "reangle.sqlite3", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        # before the refusals have lasted REFUSED_FOR_S, a read waiting for the connection may answer 503 too
        deadline = time.monotonic() + 10
        while (body := http.get("/healthz").json()).get(
            "status"
        ) != "degraded" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert body["status"] == "degraded"
        assert body["role"] == "all"
        assert http.get("/healthz").status_code == 503
        # the store's own words: "is busy" while its wait lasts, "cannot be used now" once SQLite gives up
        refused = (
            r"the store has refused this process's writes for \d+ s: the job database (is busy|cannot be)"
        )
        assert re.match(refused, body["problem"])
        other.execute("ROLLBACK")
        other.close()
        deadline = time.monotonic() + 10
        while (health := http.get("/healthz")).status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
