"""An API replica whose PostgreSQL takes connections and bytes but never answers (a hung server, a frozen
proxy): `/healthz` and the API answer 503 `unavailable` within a bound instead of hanging, so a load balancer
takes the replica out; once the database answers again, so does the replica, by itself."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from reangle.api.app import create_app
from reangle.settings import Settings
from reangle.store.postgres import ANSWER_WAIT_S
from tests.api.conftest import KEY_A, assert_error
from tests.freezable_proxy import FreezableProxy, answer_within

#: Far above what a replica takes (ANSWER_WAIT_S, then the 0.5 s check), for a loaded machine; far below
#: the forever of an unbounded wait.
WEDGED_ANSWER_S = ANSWER_WAIT_S * 4
BACK_WITHIN_S = 60.0


@pytest.fixture
def replica(pg_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, FreezableProxy]]:
    """An API replica (role api) in process, on the database through a proxy."""
    with FreezableProxy(pg_url) as proxy:
        settings = Settings(
            engine="fake",
            role="api",
            database_url=proxy.url(),
            data_dir=tmp_path,
            cache_dir=tmp_path,
            api_keys=KEY_A,
        )
        app = create_app(settings)
        with TestClient(
            app, base_url="http://127.0.0.1", headers={"Authorization": f"Bearer {KEY_A}"}
        ) as http:
            yield http, proxy


def test_a_database_that_never_answers_makes_healthz_and_the_api_503_within_a_bound_then_200(
    replica: tuple[TestClient, FreezableProxy],
) -> None:
    http, proxy = replica
    assert http.get("/healthz").status_code == 200
    assert http.get("/v1/jobs").status_code == 200

    with proxy.frozen():
        for path in ("/healthz", "/v1/jobs", "/healthz"):
            response: httpx.Response = answer_within(WEDGED_ANSWER_S, lambda path=path: http.get(path))
            assert_error(response, 503, "unavailable", "database", f"127.0.0.1:{proxy.port}")
            assert int(response.headers["Retry-After"]) > 0

    deadline = time.monotonic() + BACK_WITHIN_S
    while (response := answer_within(WEDGED_ANSWER_S, lambda: http.get("/healthz"))).status_code == 503:
        assert time.monotonic() < deadline, response.text
        time.sleep(0.1)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ok"
    assert http.get("/v1/jobs").json()["data"] == []
