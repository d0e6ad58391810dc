"""A server whose SQLite database turns read-only while it runs (its file system remounted read-only)
answers the writes 503 `unavailable` with Retry-After, as for a full disk, never 500; so does one whose
database another process holds locked, as soon as a request gives up waiting."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from reangle.api.app import create_app
from reangle.settings import Settings
from reangle.store import sqlite as sqlite_store
from tests.api.conftest import KEY_A, assert_error, png
from tests.store.test_read_only_database import turn_read_only


def test_a_database_turned_read_only_answers_writes_503(tmp_path: Path) -> None:
    settings = Settings(engine="fake", data_dir=tmp_path, cache_dir=tmp_path, api_keys=KEY_A)
    app = create_app(settings)
    with TestClient(app, base_url="http://127.0.0.1", headers={"Authorization": f"Bearer {KEY_A}"}) as http:
        writable = turn_read_only(app.state.reangle.store)
        try:
            response = http.get("/v1/webhook-secret")  # made on first use: a write
            assert_error(response, 503, "unavailable", "readonly database")
            assert int(response.headers["Retry-After"]) > 0
            assert http.get("/v1/jobs").status_code == 200  # reads go on
        finally:
            writable.close()


def test_an_upload_while_another_process_holds_the_lock_is_refused_as_soon_as_a_request_gives_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upload stores its image from a worker thread, which would wait BUSY_TIMEOUT_S (here 30 s) per
    statement, and for the files lock as long as the retention sweep at start holds it (its own statement
    waiting out the lock); for a waiting client each wait is as short as a request's."""
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_S", 30.0)
    settings = Settings(engine="fake", data_dir=tmp_path, cache_dir=tmp_path, api_keys=KEY_A)
    with TestClient(
        create_app(settings), base_url="http://127.0.0.1", headers={"Authorization": f"Bearer {KEY_A}"}
    ) as http:
        other = sqlite3.connect(tmp_path / "reangle.sqlite3", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # as the sqlite3 shell or a backup holds it
        try:
            started = time.monotonic()
            response = http.post("/v1/assets", files={"file": ("in.png", png(), "image/png")})
            assert_error(response, 503, "unavailable")  # whichever of the waits gave up first
            assert time.monotonic() - started < 20
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert http.post("/v1/assets", files={"file": ("in.png", png(), "image/png")}).status_code == 201
