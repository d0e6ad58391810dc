"""The PostgreSQL event bus between processes: each bus here stands for one process (an API replica, a
worker); they share only the database, as processes do."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg
import pytest

from reangle.core.jobs import Job, JobEvent, JobKind, JobStatus, StatusChange
from reangle.core.ports import NewJob
from reangle.core.read_cache import ReadCache
from reangle.runtime import pg_bus
from reangle.runtime.pg_bus import NoticeOutbox, PgEventBus
from reangle.store.sqlite import SqliteStore
from tests.pg_cluster import tcp_options

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
    pg_url: str, jobs: SqliteStore, caplog: pytest.LogCaptureFixture
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

    with caplog.at_level(logging.WARNING, "reangle.events"):
        asyncio.run(scenario())
    lost = [record.getMessage() for record in caplog.records if "lost the database" in record.getMessage()]
    assert lost
    assert all("\n" not in line for line in lost)  # one line, as log shippers read them (psycopg's has three)


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


def test_a_status_whose_notice_was_lost_reaches_the_subscribers_at_the_next_recheck_once(
    pg_url: str, jobs: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_bus, "RECHECK_S", 0.1)

    async def scenario() -> None:
        async with running(PgEventBus(pg_url, jobs)) as api:
            with api.subscribe("job_1") as events:
                # changes no notice told of: the store is written directly, nothing is published
                claimed = jobs.claim_next(T0 + 1)
                assert claimed is not None
                await asyncio.sleep(0.5)  # rechecks: the subscriber read the job itself when it subscribed
                assert events.empty()  # (and awaits its end)
                assert jobs.finish("job_1", 1, JobStatus.SUCCEEDED, T0 + 2) is not None

                ended = await next_event(events)
                assert ended.kind == "status"
                assert ended.job is not None
                assert ended.job.status == JobStatus.SUCCEEDED
                await asyncio.sleep(0.5)
                assert events.empty()  # passed on once, not at every recheck

    asyncio.run(scenario())


def test_a_recheck_passes_on_a_change_later_than_the_status_last_heard(
    pg_url: str, jobs: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_bus, "RECHECK_S", 0.1)

    async def scenario() -> None:
        async with running(PgEventBus(pg_url, jobs)) as api, running(PgEventBus(pg_url, jobs)) as worker:
            with api.subscribe("job_1") as events:
                claimed = jobs.claim_next(T0 + 1)
                assert claimed is not None
                worker.publish(JobEvent(job_id="job_1", kind="status", job=claimed))
                heard = await next_event(events)
                assert heard.job is not None
                assert heard.job.status == JobStatus.PROCESSING
                await asyncio.sleep(0.5)
                assert events.empty()

                assert jobs.release("job_1", 1, T0 + 2)  # back in the queue: its notice is lost
                requeued = await next_event(events)
                assert requeued.job is not None
                assert requeued.job.status == JobStatus.QUEUED

    asyncio.run(scenario())


def test_the_listening_connection_has_tcp_keepalives(pg_url: str, jobs: SqliteStore) -> None:
    async def scenario() -> None:
        bus = PgEventBus(pg_url, jobs)
        connection = await bus.open_listening_connection()
        try:
            options = tcp_options(connection)
        finally:
            await connection.close()
        assert options == {"keepalive": 1, "idle": 5, "interval": 2, "count": 3, "user_timeout_ms": 10_000}

    asyncio.run(scenario())


def test_keepalive_settings_of_the_database_url_win() -> None:
    named = psycopg.conninfo.conninfo_to_dict(
        pg_bus.with_connection_options("postgresql://u@db.example/reangle?keepalives_idle=30")
    )
    assert named["keepalives_idle"] == "30"
    assert named["keepalives"] == "1"
    assert named["tcp_user_timeout"] == "10000"


def progress(job_id: str, value: float) -> str:
    return json.dumps({"job_id": job_id, "kind": "progress", "progress": {"progress": value}})


def status(job_id: str) -> str:
    return json.dumps({"job_id": job_id, "kind": "status"})


def drain(outbox: NoticeOutbox) -> list[str]:
    outbox.close()
    taken = []
    while (payload := outbox.take()) is not None:
        taken.append(payload)
    return taken


def test_the_outbox_keeps_the_latest_progress_of_each_job_and_sends_statuses_first() -> None:
    outbox = NoticeOutbox()
    for step in range(10_000):
        for job_id in ("job_a", "job_b", "job_c"):
            outbox.put(job_id, "progress", progress(job_id, step / 10_000))
    assert len(outbox) == 3
    outbox.put("job_b", "status", status("job_b"))
    outbox.put("job_d", "stop", json.dumps({"job_id": "job_d", "kind": "stop"}))

    assert drain(outbox) == [
        progress("job_b", 0.9999),  # a job's progress goes just before its status: never after its end
        status("job_b"),
        json.dumps({"job_id": "job_d", "kind": "stop"}),
        progress("job_a", 0.9999),
        progress("job_c", 0.9999),
    ]


def test_the_outbox_holds_a_status_notice_once_while_it_waits() -> None:
    outbox = NoticeOutbox()
    for _ in range(1000):
        outbox.put("job_a", "status", status("job_a"))
    assert len(outbox) == 1
    assert outbox.take() == status("job_a")
    outbox.put("job_a", "status", status("job_a"))  # sent already: this one goes too
    assert drain(outbox) == [status("job_a")]


def test_the_outbox_holds_nothing_of_the_jobs_it_sent_once_drained() -> None:
    outbox = NoticeOutbox()
    for index in range(50):
        job_id = f"job_{index}"
        outbox.put(job_id, "progress", progress(job_id, 0.5))
        outbox.put(job_id, "status", status(job_id))
    assert len(drain(outbox)) == 100
    assert not outbox._urgent_pending  # no bookkeeping left behind per ended job: memory stays flat


def test_the_outbox_drops_the_oldest_progress_beyond_its_bound() -> None:
    outbox = NoticeOutbox(max_pending_progress=2)
    for job_id in ("job_a", "job_b", "job_c"):
        outbox.put(job_id, "progress", progress(job_id, 0.5))
    assert outbox.dropped == 1
    assert drain(outbox) == [progress("job_b", 0.5), progress("job_c", 0.5)]


def test_a_burst_of_progress_without_a_database_stays_bounded(jobs: SqliteStore) -> None:
    bus = PgEventBus("postgresql://nobody@127.0.0.1:9/none?connect_timeout=1", jobs)
    try:
        for step in range(20_000):
            job_id = f"job_{step % 4}"
            bus.publish(JobEvent(job_id=job_id, kind="progress", progress={"progress": step / 20_000}))
        assert bus.pending_notices() <= 4
    finally:
        bus.close()
