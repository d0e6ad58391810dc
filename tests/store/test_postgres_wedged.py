"""PostgreSQL that takes connections and bytes but never answers (a hung server, a frozen proxy): store calls
fail as Unavailable within a bound instead of hanging, and work again by themselves once it answers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from reangle.core.ports import NewJob
from reangle.errors import Unavailable
from reangle.store import postgres
from reangle.store.postgres import ANSWER_WAIT_S, PostgresStore
from tests.freezable_proxy import FreezableProxy, answer_within
from tests.store.test_job_stores import T0, asset, new_job

#: Far above what the store takes (ANSWER_WAIT_S, then the 0.5 s check), for a loaded machine; far below
#: the forever of an unbounded wait.
WEDGED_ANSWER_S = ANSWER_WAIT_S * 4
BACK_WITHIN_S = 60.0


@pytest.fixture
def proxy(pg_url: str) -> Iterator[FreezableProxy]:
    with FreezableProxy(pg_url) as proxy:
        yield proxy


def test_a_database_that_never_answers_is_unavailable_within_a_bound_then_works_again(
    proxy: FreezableProxy,
) -> None:
    # one connection: were the abandoned one kept checked out, no call could work again
    store = PostgresStore(proxy.url(), max_connections=1, connect_timeout_s=2)
    try:
        store.insert_jobs([NewJob(job=new_job("job_1"))])
        with proxy.frozen():
            for call in (
                lambda: store.insert_jobs([NewJob(job=new_job("job_2"))]),  # on the pooled connection
                lambda: store.get_job("job_1"),  # then each call checks whether the database is back
                lambda: store.list_workers(seen_since=0),
            ):
                with pytest.raises(
                    Unavailable, match=f"database at 127.0.0.1:{proxy.port} cannot be reached"
                ):
                    answer_within(WEDGED_ANSWER_S, call)

        deadline = time.monotonic() + BACK_WITHIN_S
        while True:
            try:
                job = answer_within(WEDGED_ANSWER_S, lambda: store.get_job("job_1"))
                break
            except Unavailable:
                assert time.monotonic() < deadline, "the store did not come back"
                time.sleep(0.1)
        assert job is not None
        assert job.id == "job_1"
        assert store.count_by_status() == {"queued": 1}  # job_2 was refused (503), not half-stored
        store.insert_jobs([NewJob(job=new_job("job_2"))])
        assert store.count_by_status() == {"queued": 2}
    finally:
        store.close()


def test_the_retention_sweep_waits_longer_for_its_answer_than_a_request_does(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A statement held up past the bound on a live server (here by a row lock): a request's fails, the
    sweep's (off the request path, where a large backlog takes a while) gets its answer."""
    monkeypatch.setattr(postgres, "ANSWER_WAIT_S", 0.3)
    monkeypatch.setattr(postgres.BoundedConnection, "answer_wait_s", 0.3)
    store = PostgresStore(pg_url, connect_timeout_s=2)
    try:
        store.insert_asset(asset("asset_1", sha256="aa" * 32, expires_at=T0))
        with psycopg.connect(pg_url) as locker:
            locker.execute("SELECT id FROM assets WHERE id = 'asset_1' FOR UPDATE")
            with pytest.raises(Unavailable, match=r"did not answer within 0\.3 s"):
                store.extend_asset("asset_1", T0 + 60)  # a request's write waits for the lock
            releaser = threading.Timer(1.0, locker.rollback)
            releaser.start()
            try:
                assert store.delete_expired_assets(T0 + 1) == {"aa" * 32}  # waits the second out
            finally:
                releaser.join()
        assert store.get_asset("asset_1") is None
    finally:
        store.close()
