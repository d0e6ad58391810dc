"""The check for orphaned jobs: queued or processing in the store, but with no Procrastinate job left to run
them (a worker's task ended while the database was away and the job's end went unrecorded)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg
import pytest

from reangle.core.jobs import JobStatus
from reangle.core.ports import NewJob, WorkerStatus
from reangle.store.pg_dispatch import ORPHAN_CHECK_LOCK, defer_orphaned_jobs, jobs_held_by_live_workers
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


def check(url: str) -> list[str]:
    async def once() -> list[str]:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            return await defer_orphaned_jobs(conn)

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

    assert held(pg_url, ["job_1", "job_2", "job_3"], seen_since=T0 + 5) == {"job_1"}
    assert held(pg_url, ["job_1", "job_2"], seen_since=T0) == {"job_1", "job_2"}
    assert held(pg_url, [], seen_since=T0) == set()
