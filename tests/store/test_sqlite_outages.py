"""The embedded store in states that pass: another process holding the file's write lock, a full database.
Each call answers Unavailable (retry later: the API's 503, the runner's retries), never SQLite's own error,
and the store works again once the state has passed."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reangle.core.ports import NewJob, client_waiting
from reangle.errors import Unavailable
from reangle.store import sqlite as sqlite_store
from reangle.store.sqlite import SqliteStore
from tests.store.test_job_stores import new_job


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SqliteStore]:
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_S", 0.2)
    opened = SqliteStore(tmp_path / "reangle.sqlite3")
    yield opened
    opened.close()


def test_a_write_lock_held_by_another_process_is_unavailable_after_the_busy_timeout(
    store: SqliteStore,
) -> None:
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # as the sqlite3 shell or a backup holds it
    started = time.monotonic()
    with pytest.raises(Unavailable, match="database is locked"):
        store.insert_jobs([NewJob(job=new_job("job_1"))])
    assert time.monotonic() - started < 5
    other.execute("ROLLBACK")
    other.close()

    store.insert_jobs([NewJob(job=new_job("job_1"))])
    assert store.get_job("job_1") is not None


def test_a_call_waiting_behind_this_processs_other_calls_is_unavailable_after_the_busy_timeout(
    store: SqliteStore,
) -> None:
    """While another process holds the file's lock, this process's background writers (heartbeat, progress,
    webhooks) take turns waiting on it, each holding the connection meanwhile: a request's call must not
    wait behind them for as long as that lock holds. Here one call holds the connection for 3 s."""
    holding, let_go = threading.Event(), threading.Event()

    def long_call() -> None:
        with store._lock:
            holding.set()
            let_go.wait(10)

    holder = threading.Thread(target=long_call)
    holder.start()
    try:
        assert holding.wait(5)
        started = time.monotonic()
        with pytest.raises(Unavailable, match="the job database is busy"):
            store.insert_jobs([NewJob(job=new_job("job_1"))])
        assert time.monotonic() - started < 2  # BUSY_TIMEOUT_S is 0.2 s here
    finally:
        let_go.set()
        holder.join()
    store.insert_jobs([NewJob(job=new_job("job_1"))])
    assert store.get_job("job_1") is not None


def test_on_the_event_loop_a_call_waits_for_the_lock_only_briefly(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a call on the event loop waits, the server answers nothing else: it gives up sooner."""
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_S", 30.0)
    monkeypatch.setattr(sqlite_store, "LOOP_BUSY_TIMEOUT_S", 0.2)
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")

    async def insert_on_the_loop() -> float:
        started = time.monotonic()
        with pytest.raises(Unavailable, match="database is locked"):
            store.insert_jobs([NewJob(job=new_job("job_1"))])
        return time.monotonic() - started

    try:
        assert asyncio.run(insert_on_the_loop()) < 10
    finally:
        other.execute("ROLLBACK")
        other.close()
    store.insert_jobs([NewJob(job=new_job("job_1"))])  # off the loop, and nothing holds the lock now
    assert store.get_job("job_1") is not None


def test_for_a_waiting_client_a_call_in_a_worker_thread_waits_for_the_lock_only_briefly(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As an upload stores its image from a worker thread: the thread copies the request's context."""
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_S", 30.0)
    monkeypatch.setattr(sqlite_store, "LOOP_BUSY_TIMEOUT_S", 0.2)
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")

    def insert() -> float:
        started = time.monotonic()
        with pytest.raises(Unavailable, match="database is locked"):
            store.insert_jobs([NewJob(job=new_job("job_1"))])
        return time.monotonic() - started

    async def insert_for_a_client() -> float:
        client_waiting.set(True)
        return await asyncio.to_thread(insert)

    try:
        assert asyncio.run(insert_for_a_client()) < 10
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_a_full_database_is_unavailable_and_the_failed_write_leaves_nothing_behind(
    store: SqliteStore,
) -> None:
    store.insert_jobs([NewJob(job=new_job("job_0"))])
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")  # full, as a full disk is for SQLite
    big = [NewJob(job=new_job(f"job_{i}")) for i in range(1, 200)]
    with pytest.raises(Unavailable, match="database or disk is full"):
        store.insert_jobs(big)
    assert store.get_job("job_1") is None  # all or none
    assert store.get_job("job_0") is not None

    store._db.execute("PRAGMA max_page_count = 1000000")  # room again
    store.insert_jobs(big)
    assert store.get_job("job_199") is not None


def test_an_error_that_is_a_bug_stays_itself(store: SqliteStore) -> None:
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        store._db.execute("SELECT * FROM no_such_table")
