"""/healthz at start: until the interrupted jobs of the last run are recovered (delayed while another process
holds the SQLite file's lock) no job runs, so GET and HEAD answer 503 "degraded" naming why, never "ok"."""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from reangle.api.app import create_app
from reangle.settings import Settings
from reangle.store import sqlite as sqlite_store
from reangle.store.sqlite import SqliteStore

#: How long the answers are watched while the recovery waits (its next try is 1 s after the first refusal).
WATCHED_S = 0.6


def test_healthz_is_503_until_the_recovery_at_start_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_S", 0.2)
    SqliteStore(tmp_path / "reangle.sqlite3").close()
    other = sqlite3.connect(tmp_path / "reangle.sqlite3", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # as the sqlite3 shell or a backup holds it
    settings = Settings(engine="fake", data_dir=tmp_path, auth="off", cache_dir=tmp_path)
    try:
        with (
            caplog.at_level(logging.WARNING, "reangle.server"),
            TestClient(create_app(settings), base_url="http://127.0.0.1") as http,
        ):
            deadline = time.monotonic() + 10
            while "could not recover the interrupted jobs" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.02)
            watched_until = time.monotonic() + WATCHED_S
            while time.monotonic() < watched_until:
                health = http.get("/healthz")
                assert health.status_code == 503, health.text
                assert health.json()["status"] == "degraded"
                assert health.json()["problem"].startswith(
                    "no job runs until the interrupted jobs of the last run are recovered: "
                )
                assert "database is locked" in health.json()["problem"]
                assert http.head("/healthz").status_code == 503
                time.sleep(0.05)
            other.execute("ROLLBACK")
            deadline = time.monotonic() + 20
            while (health := http.get("/healthz")).status_code == 503 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert health.status_code == 200, health.text
            assert health.json()["status"] == "ok"
    finally:
        other.close()
