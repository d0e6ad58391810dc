"""A server whose SQLite database turns read-only while it runs (its file system remounted read-only)
answers the writes 503 `unavailable` with Retry-After, as for a full disk, never 500."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from reangle.api.app import create_app
from reangle.settings import Settings
from tests.api.conftest import KEY_A, assert_error
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
