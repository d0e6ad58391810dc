"""The server on PostgreSQL (REANGLE_DATABASE_URL): the main workflow, a restart, replicas sharing the
URL-signing secret, and the database going away (503 with Retry-After, fast; 200 again once it is back)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from reangle.core.models import CAMERA_EDIT
from tests.api.conftest import (
    ServerFactory,
    ServerProcess,
    assert_error,
    cancel,
    download,
    edit_input,
    get_job,
    hold_input,
    running,
    server_env,
    submit,
    succeeded,
    upload,
    wait_job,
)
from tests.pg_cluster import PgCluster

OUTAGE_ANSWER_S = 5.0  # a request while the database is down answers within this, never hangs


def test_the_workflow_on_postgresql(serve: ServerFactory, pg_url: str) -> None:
    server = serve(database_url=pg_url)
    with server.client() as api:
        asset = upload(api)
        body = {"model": CAMERA_EDIT, "kind": "edit", "input": edit_input(asset["id"])}
        first = api.post("/v1/jobs", json=body, headers={"Idempotency-Key": "once"})
        repeat = api.post("/v1/jobs", json=body, headers={"Idempotency-Key": "once"})
        assert first.status_code == 202, first.text
        assert repeat.status_code in (200, 202), repeat.text
        assert repeat.json()["id"] == first.json()["id"]
        job = succeeded(api, first.json()["id"])
        [output] = job["output"]["assets"]
        assert download(output["url"]).content.startswith(b"\x89PNG")

        others = [submit(api, edit_input(asset["id"], seed=n))["id"] for n in range(2)]
        for job_id in others:
            succeeded(api, job_id)
        listed = list_all(api, limit=2)
        assert listed == [*others[::-1], job["id"]]

        held = submit(api, hold_input(asset["id"]), kind="orbit")
        wait_job(api, held["id"], running)
        cancel(api, held["id"])
        assert wait_job(api, held["id"])["status"] == "canceled"

    server.restart()
    with server.client() as api:
        assert get_job(api, job["id"])["status"] == "succeeded"
        assert download(output["url"]).status_code == 200
        assert len(list_all(api, limit=10)) == 4


def test_replicas_share_the_url_signing_secret(
    serve: ServerFactory, pg_url: str, tmp_path: Path, cache_dir: Path
) -> None:
    first = serve(database_url=pg_url)
    # another data directory (no signing key file in common) that sees the same asset files, as S3 would
    data_dir = tmp_path / "replica"
    (data_dir).mkdir()
    (data_dir / "assets").symlink_to(first.data_dir / "assets", target_is_directory=True)
    second = ServerProcess(data_dir=data_dir, env=server_env(cache_dir, database_url=pg_url, role="api"))
    try:
        second.start()
        with first.client() as api:
            asset = upload(api)
        path = httpx.URL(asset["url"]).raw_path.decode()
        assert download(f"{second.url}{path}").status_code == 200
        assert download(f"{second.url}{path[:-4]}0000").status_code == 403
    finally:
        if second.process is not None:
            second.kill()


def list_all(api: httpx.Client, *, limit: int) -> list[str]:
    ids: list[str] = []
    cursor = None
    for _ in range(20):
        params: dict[str, Any] = {"limit": limit} | ({"cursor": cursor} if cursor else {})
        page = api.get("/v1/jobs", params=params).json()
        ids += [job["id"] for job in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids
    raise AssertionError("the listing did not end")


@pytest.fixture
def outage_server(tmp_path: Path, cache_dir: Path) -> Iterator[tuple[ServerProcess, PgCluster]]:
    """A server on a cluster of its own, which the test stops and starts."""
    cluster = PgCluster()
    server: ServerProcess | None = None
    try:
        cluster.start()
        env = server_env(cache_dir, database_url=cluster.create_database())
        server = ServerProcess(data_dir=tmp_path / "data", env=env)
        yield server.start(), cluster
    finally:
        if server is not None and server.process is not None:
            server.kill()
        cluster.destroy()


def test_a_stopped_database_is_503_with_retry_after_then_200_again(
    outage_server: tuple[ServerProcess, PgCluster],
) -> None:
    server, cluster = outage_server
    with server.client() as api:
        image = upload(api)["id"]
        job = submit(api, edit_input(image))
        cluster.stop()
        body = {"model": CAMERA_EDIT, "kind": "edit", "input": edit_input(image, seed=2)}
        for request in (
            lambda: api.get(f"/v1/jobs/{job['id']}", timeout=OUTAGE_ANSWER_S * 2),
            lambda: api.post("/v1/jobs", json=body, timeout=OUTAGE_ANSWER_S * 2),
        ):
            started = time.monotonic()
            response = request()
            assert time.monotonic() - started < OUTAGE_ANSWER_S
            error = assert_error(response, 503, "unavailable", "database", f"127.0.0.1:{cluster.port}")
            assert "retry" in error["hint"]
            assert int(response.headers["Retry-After"]) > 0

        cluster.start()
        # the first request after the restart checks that the database is back; on a loaded machine that
        # check may outlast its wait, and the answer is one more 503 to retry
        deadline = time.monotonic() + 30
        while (
            response := api.get(f"/v1/jobs/{job['id']}")
        ).status_code == 503 and time.monotonic() < deadline:
            assert_error(response, 503, "unavailable", "database")
            time.sleep(int(response.headers["Retry-After"]) / 5)
        assert response.status_code == 200, response.text
        assert get_job(api, job["id"])["id"] == job["id"]
        assert submit(api, edit_input(image, seed=3))["status"] == "queued"
    assert '" 500 ' not in server.full_log()
