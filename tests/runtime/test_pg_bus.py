"""The PostgreSQL event bus between processes: each bus here stands for one process (an API replica, a
worker); they share only the database, as processes do."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg
import pytest

from reangle.core.jobs import Job, JobEvent, JobKind, JobStatus, StatusChange
from reangle.core.ports import NewJob
from reangle.core.read_cache import ReadCache
from reangle.runtime.pg_bus import PgEventBus
from reangle.store.sqlite import SqliteStore

T0 = 1_700_000_000.0
DEADLINE_S = 10.0


def queued(job_id: str) -> Job:
    return Job(
        id=job_id,
        owner="owner-1",
        model="qwen-edit-multiangle-2511",
        kind=JobKind.EDIT,
        input={"images": ["asset_in"]},
        created_at=T0,
        history=(StatusChange(status=JobStatus.QUEUED, at=T0),),
    )


@pytest.fixture
def jobs(tmp_path: Path) -> Iterator[SqliteStore]:
    """The store the buses read jobs from (any JobStore does: the bus only reads jobs by id)."""
    store = SqliteStore(tmp_path / "jobs.sqlite3")
    store.insert_jobs([NewJob(job=queued("job_1"))])
    yield store
    store.close()


@asynccontextmanager
async def running(bus: PgEventBus) -> AsyncIterator[PgEventBus]:
    task = asyncio.create_task(bus.listen())
    try:
        async with asyncio.timeout(DEADLINE_S):
            await bus.listening.wait()
        yield bus
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        bus.close()


async def next_event(queue: asyncio.Queue[JobEvent]) -> JobEvent:
    async with asyncio.timeout(DEADLINE_S):
        return await queue.get()


def test_events_of_one_process_reach_the_subscribers_of_another_once(pg_url: str, jobs: SqliteStore) -> None:
    async def scenario() -> None:
        async with running(PgEventBus(pg_url, jobs)) as api, running(PgEventBus(pg_url, jobs)) as worker:
            with api.subscribe("job_1") as remote, worker.subscribe("job_1") as local:
                progress = {"progress": 0.5, "step": 2, "steps": 4}
                worker.publish(JobEvent(job_id="job_1", kind="progress", progress=progress))
                expected = JobEvent(job_id="job_1", kind="progress", progress=progress)
                assert await next_event(remote) == expected

                claimed = jobs.claim_next(T0 + 1)
                assert claimed is not None
                worker.publish(JobEvent(job_id="job_1", kind="status", job=claimed))
                status = await next_event(remote)
                assert status.job == jobs.get_job("job_1")  # read back from the store
                assert status.job is not None
                assert status.job.status == JobStatus.PROCESSING

                # the publishing process heard each of its own events once, not again as an echo
                heard = [(await next_event(local)).kind, (await next_event(local)).kind]
                assert heard == ["progress", "status"]
                await asyncio.sleep(0.3)
                assert local.empty()
                assert remote.empty()

    asyncio.run(scenario())


def test_a_stop_reaches_the_process_running_the_job(pg_url: str, jobs: SqliteStore) -> None:
    async def scenario() -> None:
        async with running(PgEventBus(pg_url, jobs)) as api, running(PgEventBus(pg_url, jobs)) as worker:
            flag = worker.stop_flag("job_1")
            api.request_stop("job_1")
            async with asyncio.timeout(DEADLINE_S):
                while not flag.is_set():
                    await asyncio.sleep(0.01)
            assert not api.stop_flag("job_other").is_set()

    asyncio.run(scenario())


def test_after_losing_its_connection_a_bus_reconnects_and_catches_up_on_missed_statuses(
    pg_url: str, jobs: SqliteStore
) -> None:
    async def scenario() -> None:
        async with running(PgEventBus(pg_url, jobs)) as api, running(PgEventBus(pg_url, jobs)) as worker:
            with api.subscribe("job_1") as events:
                with psycopg.connect(pg_url, autocommit=True) as admin:
                    api.listening.clear()
                    admin.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE query = 'LISTEN reangle_events' AND pid <> pg_backend_pid()"
                    )
                claimed = jobs.claim_next(T0 + 1)  # meanwhile, the job moved on
                assert claimed is not None
                async with asyncio.timeout(DEADLINE_S):
                    await api.listening.wait()
                caught_up = await next_event(events)
                assert caught_up.kind == "status"
                assert caught_up.job == jobs.get_job("job_1")
                # and it listens again
                worker.publish(JobEvent(job_id="job_1", kind="progress", progress={"progress": 0.25}))
                assert (await next_event(events)).progress == {"progress": 0.25}

    asyncio.run(scenario())


def test_publishing_without_a_database_neither_raises_nor_waits(jobs: SqliteStore) -> None:
    bus = PgEventBus("postgresql://nobody@127.0.0.1:9/none?connect_timeout=1", jobs)
    started = time.monotonic()
    for step in range(20):
        bus.publish(JobEvent(job_id="job_1", kind="progress", progress={"progress": step / 20}))
    bus.request_stop("job_1")
    assert time.monotonic() - started < 0.5
    bus.close()


def test_a_watching_cache_hears_other_processes_events_and_is_off_while_it_cannot(
    pg_url: str, jobs: SqliteStore
) -> None:
    async def until(condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(DEADLINE_S):
            while not condition():
                await asyncio.sleep(0.01)

    async def scenario() -> None:
        reads: ReadCache[str] = ReadCache(ttl_s=60)
        api = PgEventBus(pg_url, jobs)
        api.watch(reads)
        assert not reads.enabled  # nothing is heard yet
        async with running(api), running(PgEventBus(pg_url, jobs)) as worker:
            assert reads.enabled
            for kind in ("progress", "status"):
                reads.put("job_1", "before", reads.ticket())
                reads.put("job_2", "untouched", reads.ticket())
                worker.publish(JobEvent(job_id="job_1", kind=kind, progress={"progress": 0.5}))
                await until(lambda: reads.get("job_1") is None)
                assert reads.get("job_2") == "untouched"

            with psycopg.connect(pg_url, autocommit=True) as admin:
                api.listening.clear()
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE query = 'LISTEN reangle_events' AND pid <> pg_backend_pid()"
                )
            async with asyncio.timeout(DEADLINE_S):
                await api.listening.wait()
            assert reads.enabled
            assert reads.get("job_2") is None  # kept from before the gap: dropped

    asyncio.run(scenario())
