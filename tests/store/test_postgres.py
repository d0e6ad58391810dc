"""PostgreSQL only: schema migrations (in order, once, keeping rows) and an unreachable database (Unavailable,
fast; and working again once it is back, without a new store)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from functools import partial

import psycopg
import pytest

from reangle.core.jobs import SOURCE_UNRECORDED
from reangle.core.ports import NewJob
from reangle.errors import Unavailable
from reangle.store import postgres
from reangle.store.newer_schema import NewerSchema
from reangle.store.pg_schema import MIGRATIONS, Migration, schema_version, upgrade
from reangle.store.postgres import PostgresStore
from tests.pg_cluster import PgCluster
from tests.store.test_job_stores import T0, at_once, new_job

V1_JOB_ROW = (
    "INSERT INTO jobs (id, owner, model, kind, input, status, created_at, history) VALUES "
    "('job_v1', 'owner-1', 'qwen-edit-multiangle-2511', 'orbit', "
    """'{"image": "asset_in"}', 'queued', 1700000000.5, '[{"status": "queued", "at": 1700000000.5}]')"""
)


def versions(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT version FROM reangle_schema_version ORDER BY version").fetchall()
    return [row[0] for row in rows]


def test_an_empty_database_gets_every_migration_once(pg_url: str) -> None:
    assert [m.version for m in upgrade(pg_url)] == [m.version for m in MIGRATIONS]
    assert upgrade(pg_url) == []
    assert versions(pg_url) == [m.version for m in MIGRATIONS]


def test_a_version_1_database_upgrades_without_losing_rows(pg_url: str) -> None:
    assert upgrade(pg_url, MIGRATIONS[:1]) == [MIGRATIONS[0]]
    with psycopg.connect(pg_url) as conn:
        conn.execute(V1_JOB_ROW)
        conn.execute(
            "INSERT INTO assets VALUES ('asset_in', 'owner-1', 'ab', 'image/png', 8, 8, 100, 1.0, 2.0, NULL)"
        )
        conn.execute("INSERT INTO api_keys VALUES ('key_1', 'ci', 'hash-1', 1.0)")
        assert schema_version(conn) == 1

    assert upgrade(pg_url) == list(MIGRATIONS[1:])
    assert versions(pg_url) == [m.version for m in MIGRATIONS]
    with psycopg.connect(pg_url) as conn:  # the job queued before dispatch existed gets its run
        runs = conn.execute("SELECT args->>'job_id', queue_name FROM procrastinate_jobs").fetchall()
    assert runs == [("job_v1", "reangle.jobs.qwen-edit-multiangle-2511")]
    store = PostgresStore(pg_url)
    try:
        job = store.get_job("job_v1")
        assert job is not None
        assert (job.input, job.created_at, job.status) == ({"image": "asset_in"}, 1700000000.5, "queued")
        assert store.get_asset("asset_in") is not None
        assert store.api_key_id("hash-1") == "key_1"
        assert store.claim_next(T0, models=["qwen-edit-multiangle-2511"]) == store.get_job("job_v1")
        assert job.vendor_task is None  # migration 6's column, empty on the jobs it found
        assert job.source == SOURCE_UNRECORDED  # migration 7's, marking them as from before it
        assert store.set_vendor_task("job_v1", 1, "task-a")
        claimed = store.get_job("job_v1")
        assert claimed is not None
        assert claimed.vendor_task == "task-a"
        assert len(store.shared_secret("url_signing")) == 64  # migration 2's table
    finally:
        store.close()


def test_a_database_a_newer_reangle_upgraded_is_refused_untouched(pg_url: str) -> None:
    upgrade(pg_url)
    older = MIGRATIONS[:-1]
    with pytest.raises(NewerSchema) as refused:
        upgrade(pg_url, older)
    assert refused.value.message == (
        f"the PostgreSQL database has schema version {len(MIGRATIONS)}, from a newer reangle; this one knows "
        f"versions up to {len(older)}"
    )
    assert versions(pg_url) == [m.version for m in MIGRATIONS]


def test_processes_starting_at_once_apply_each_migration_exactly_once(pg_url: str) -> None:
    last = len(MIGRATIONS) + 1
    slow = Migration(last, "slow, to widen the race", "SELECT pg_sleep(0.2); CREATE TABLE once_only (x INT)")
    applied = at_once(*(partial(upgrade, pg_url, (*MIGRATIONS, slow)) for _ in range(6)))
    assert sorted(m.version for run in applied for m in run) == list(range(1, last + 1))
    assert versions(pg_url) == list(range(1, last + 1))


@pytest.fixture
def own_cluster() -> Iterator[PgCluster]:
    """A cluster of the test's own, which it may stop."""
    cluster = PgCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


def test_an_unreachable_database_is_unavailable_fast_and_works_again_when_back(
    own_cluster: PgCluster,
) -> None:
    url = own_cluster.create_database().replace("postgres@", "postgres:s3cret-pw@")
    store = PostgresStore(url, timeout_s=2)
    try:
        store.insert_jobs([NewJob(job=new_job("job_1"))])
        own_cluster.stop()
        for call in (
            lambda: store.get_job("job_1"),
            lambda: store.insert_jobs([NewJob(job=new_job("job_2"))], max_queued=10),
            lambda: store.claim_next(T0),
            lambda: store.get_job("job_1"),
        ):
            started = time.monotonic()
            with pytest.raises(Unavailable) as caught:
                call()
            assert time.monotonic() - started < 3
            assert f"the database at 127.0.0.1:{own_cluster.port} cannot be reached" in caught.value.message
            assert "s3cret" not in caught.value.message
            assert caught.value.retry_after_s > 0
        with pytest.raises(Unavailable, match="cannot be reached"):
            PostgresStore(url)

        own_cluster.start()
        job = store.get_job("job_1")
        assert job is not None
        assert job.id == "job_1"
        store.insert_jobs([NewJob(job=new_job("job_2"))])
        assert store.count_by_status() == {"queued": 2}
    finally:
        store.close()


def test_a_database_restarted_while_the_store_was_idle_answers_the_next_call(
    own_cluster: PgCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres, "IDLE_CHECK_S", 0.2)
    store = PostgresStore(own_cluster.create_database())
    try:
        store.insert_jobs([NewJob(job=new_job("job_1"))])
        own_cluster.stop()  # ends every pooled connection
        own_cluster.start()
        time.sleep(0.3)

        job = store.get_job("job_1")  # not the 503 of a pooled connection that broke while idle
        assert job is not None
        store.insert_jobs([NewJob(job=new_job("job_2"))])
        assert store.count_by_status() == {"queued": 2}
    finally:
        store.close()


def test_a_database_that_stops_answering_makes_calls_unavailable_at_once_not_slow(
    own_cluster: PgCluster,
) -> None:
    store = PostgresStore(own_cluster.create_database(), connect_timeout_s=2)
    try:
        store.insert_jobs([NewJob(job=new_job("job_1"))])
        own_cluster.stop()
        # in its place, a server that takes connections and never answers: a connect waits its whole timeout
        with socket.create_server(("127.0.0.1", own_cluster.port), reuse_port=False) as silent:
            for _ in range(4):
                started = time.monotonic()
                with pytest.raises(Unavailable, match="cannot be reached"):
                    store.get_job("job_1")
                assert time.monotonic() - started < 1.0
            silent.close()
            own_cluster.start()

            deadline = time.monotonic() + 15  # the probe that hung gives up after connect_timeout_s
            while True:
                try:
                    assert store.get_job("job_1") is not None
                    break
                except Unavailable:
                    assert time.monotonic() < deadline, "the store did not come back"
                    time.sleep(0.1)
    finally:
        store.close()
