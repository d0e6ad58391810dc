"""PostgreSQL that takes connections and bytes but never answers (a hung server, a frozen proxy): store calls
fail as Unavailable within a bound instead of hanging, and work again by themselves once it answers."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from reangle.core.ports import NewJob
from reangle.errors import Unavailable
from reangle.store.postgres import ANSWER_WAIT_S, PostgresStore
from tests.freezable_proxy import FreezableProxy, answer_within
from tests.store.test_job_stores import new_job

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
