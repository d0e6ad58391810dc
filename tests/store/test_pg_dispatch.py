"""The check for orphaned jobs: queued or processing in the store, but with no Procrastinate job left to run
them (a worker's task ended while the database was away and the job's end went unrecorded)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg
import pytest

from reangle.core.jobs import JobStatus
from reangle.core.ports import NewJob, WorkerStatus
from reangle.store.pg_dispatch import (
    ORPHAN_CHECK_LOCK,
    defer_orphaned_jobs,
    drop_run,
    jobs_held_by_live_workers,
)
from reangle.store.postgres import PostgresStore
from tests.store.test_job_stores import T0, new_job


@pytest.fixture
def store(pg_url: str) -> Iterator[PostgresStore]:
    opened = PostgresStore(pg_url)
    yield opened
    opened.close()


def runs(url: str) -> list[tuple[str, str]]:
    """(job id, Procrastinate status) of every run, oldest first."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT args->>'job_id', status::text FROM procrastinate_jobs ORDER BY id")
        return [(str(job_id), str(status)) for job_id, status in rows.fetchall()]


def end_runs(url: str, status: str) -> None:
    """As Procrastinate does when a task returns (succeeded) or raises (failed)."""
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE procrastinate_jobs SET status = %s::procrastinate_job_status", (status,))


def check(url: str, seen_since: float = T0) -> list[str]:
    async def once() -> list[str]:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            return await defer_orphaned_jobs(conn, seen_since)

    return asyncio.run(once())


def test_jobs_whose_runs_ended_without_recording_their_end_get_a_run_again(
    store: PostgresStore, pg_url: str
) -> None:
    for job_id in ("job_queued", "job_processing", "job_done"):
        store.insert_jobs([NewJob(job=new_job(job_id))])
    assert store.claim_job("job_processing", T0 + 1, max_attempts=3) is not None
    assert store.claim_job("job_done", T0 + 1, max_attempts=3) is not None
    assert store.finish("job_done", 1, JobStatus.SUCCEEDED, T0 + 2) is not None
    end_runs(pg_url, "failed")

    assert sorted(check(pg_url)) == ["job_processing", "job_queued"]
    assert runs(pg_url)[3:] == [("job_queued", "todo"), ("job_processing", "todo")]
    # the processing one becomes its next attempt when a worker claims it
    again = store.claim_job("job_processing", T0 + 3, max_attempts=3)
    assert again is not None
    assert again.attempt == 2
    assert check(pg_url) == []  # each has a run now: nothing more is deferred


def test_jobs_with_a_run_waiting_or_in_hand_are_left_alone(store: PostgresStore, pg_url: str) -> None:
    store.insert_jobs([NewJob(job=new_job("job_waiting")), NewJob(job=new_job("job_running"))])
    assert store.claim_job("job_running", T0 + 1, max_attempts=3) is not None
    with psycopg.connect(pg_url) as conn:
        conn.execute("UPDATE procrastinate_jobs SET status = 'doing' WHERE args->>'job_id' = 'job_running'")

    assert check(pg_url) == []
    assert len(runs(pg_url)) == 2


def record_worker(store: PostgresStore, name: str, job_id: str | None, seen_at: float) -> None:
    status = WorkerStatus(
        name=name,
        device="cpu",
        engine="fake",
        models=("m",),
        started_at=T0,
        seen_at=seen_at,
        job_id=job_id,
    )
    store.record_worker(status)


def test_a_job_without_a_run_that_a_live_worker_names_is_in_hand_not_orphaned(
    store: PostgresStore, pg_url: str
) -> None:
    """A job carried through a database outage: its run was recorded aborted, and its worker renders on."""
    store.insert_jobs([NewJob(job=new_job("job_carried"))])
    assert store.claim_job("job_carried", T0 + 1, max_attempts=3) is not None
    end_runs(pg_url, "aborted")
    record_worker(store, "carrier", "job_carried", seen_at=T0 + 10)

    assert check(pg_url, seen_since=T0 + 5) == []
    assert check(pg_url, seen_since=T0 + 15) == ["job_carried"]  # its worker went silent


def test_dropping_a_run_deletes_it_only_while_it_is_in_hand(store: PostgresStore, pg_url: str) -> None:
    store.insert_jobs([NewJob(job=new_job("job_1")), NewJob(job=new_job("job_2"))])
    with psycopg.connect(pg_url) as conn:
        conn.execute("UPDATE procrastinate_jobs SET status = 'doing' WHERE args->>'job_id' = 'job_1'")
        rows = conn.execute("SELECT args->>'job_id', id FROM procrastinate_jobs").fetchall()
    run_ids = {str(job_id): int(run_id) for job_id, run_id in rows}

    async def drop(run_id: int) -> None:
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            await drop_run(conn, run_id)

    for run_id in run_ids.values():
        asyncio.run(drop(run_id))
    assert runs(pg_url) == [("job_2", "todo")]  # a run waiting for a worker is not dropped


def test_one_worker_checks_at_a_time(store: PostgresStore, pg_url: str) -> None:
    store.insert_jobs([NewJob(job=new_job("job_1"))])
    end_runs(pg_url, "succeeded")
    with psycopg.connect(pg_url) as other, other.transaction():
        other.execute("SELECT pg_advisory_xact_lock(%s)", (ORPHAN_CHECK_LOCK,))
        assert check(pg_url) == []
    assert check(pg_url) == ["job_1"]


def held(url: str, job_ids: list[str], seen_since: float) -> set[str]:
    async def once() -> set[str]:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            return await jobs_held_by_live_workers(conn, job_ids, seen_since)

    return asyncio.run(once())


def test_a_job_is_held_while_a_worker_heard_from_lately_names_it(store: PostgresStore, pg_url: str) -> None:
    for name, job_id, seen_at in [
        ("alive", "job_1", T0 + 10),
        ("silent", "job_2", T0),
        ("idle", None, T0 + 10),
    ]:
        record_worker(store, name, job_id, seen_at)

    assert held(pg_url, ["job_1", "job_2", "job_3"], seen_since=T0 + 5) == {"job_1"}
    assert held(pg_url, ["job_1", "job_2"], seen_since=T0) == {"job_1", "job_2"}
    assert held(pg_url, [], seen_since=T0) == set()
