"""A scale-out worker (WorkerRuntime) in this process, on real PostgreSQL with its Procrastinate queue: what
it does when stopped with SIGTERM mid-job, how a cancel reaches its job without any NOTIFY, and which stalled
jobs it hands to another worker.

The worker runs the fake engine; its asset service is the runner tests' fake that holds output writes at a
gate, so a test decides when a job's outputs are stored."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest

from reangle.cli.serve import _until_stopped
from reangle.core.edit import SizeLimits
from reangle.core.jobs import Job, JobStatus
from reangle.core.models import CAMERA_EDIT
from reangle.core.ports import WorkerStatus
from reangle.core.service import JobService, ServiceLimits, SubmitRequest
from reangle.runtime import worker
from reangle.runtime.local import LocalRunner
from reangle.runtime.pg_bus import PgEventBus
from reangle.runtime.worker import WorkerRuntime
from reangle.settings import Settings
from reangle.store.postgres import PostgresStore
from tests.conftest import image_bytes, make_image
from tests.runtime.test_local_runner import FakeGatedAssets, FakeRecordingEngine

OWNER = "owner-1"
WAIT_S = 20.0  # only reached when a test is about to fail
GRACE_S = 0.3


@dataclass
class Rig:
    store: PostgresStore
    assets: FakeGatedAssets
    service: JobService
    runtime: WorkerRuntime
    image_id: str
    url: str

    async def submit(self, seed: int, **fields: Any) -> Job:
        data = {"images": [self.image_id], "width": 32, "height": 32, "seed": seed} | fields
        return await self.service.submit(OWNER, SubmitRequest(model=CAMERA_EDIT, input=data))

    def job(self, job_id: str) -> Job:
        return self.service.get(OWNER, job_id)

    async def until_status(self, job_id: str, status: JobStatus) -> Job:
        async with asyncio.timeout(WAIT_S):
            while (job := self.job(job_id)).status != status:
                await asyncio.sleep(0.02)
        return job

    def runs(self) -> dict[str, str]:
        """Procrastinate status of each job's latest run."""
        with psycopg.connect(self.url) as conn:
            rows = conn.execute("SELECT args->>'job_id', status::text FROM procrastinate_jobs ORDER BY id")
            return {str(job_id): str(status) for job_id, status in rows.fetchall()}


def make_rig(url: str, tmp_path: Path, settings: Settings, step_seconds: float) -> Rig:
    store = PostgresStore(url)
    assets = FakeGatedAssets(store, tmp_path / "assets")  # type: ignore[arg-type]

    async def fake_fetch_refused(url: str, field: str) -> bytes:
        raise AssertionError("no URL is fetched here")

    limits = ServiceLimits(sizes=SizeLimits(min_side=16))
    # the bus is never started listening here: no NOTIFY reaches this process
    service = JobService(store, assets, fake_fetch_refused, limits, events=PgEventBus(url, store))
    engine = FakeRecordingEngine(step_seconds)
    runtime = WorkerRuntime(
        url, service, engine, settings, runner=LocalRunner(service, engine), models=[CAMERA_EDIT]
    )
    image = assets.ingest(OWNER, image_bytes(make_image(48, 48), "PNG"))
    return Rig(store=store, assets=assets, service=service, runtime=runtime, image_id=image.id, url=url)


@pytest.fixture
def rig(pg_url: str, tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    monkeypatch.setattr(worker, "STOP_GRACE_S", GRACE_S)
    made = make_rig(pg_url, tmp_path, settings, step_seconds=0.2)
    try:
        yield made
    finally:
        made.assets.open_gate()
        made.service.events.close()
        made.store.close()


@asynccontextmanager
async def working(rig: Rig) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(rig.runtime.run())
    try:
        yield task
    finally:
        task.cancel()
        rig.assets.open_gate()
        await asyncio.gather(task, return_exceptions=True)


async def happens(condition: Any) -> None:
    async with asyncio.timeout(WAIT_S):
        while not condition():
            await asyncio.sleep(0.02)


def run(scenario: Any) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(4 * WAIT_S):
            await scenario

    asyncio.run(bounded())


@pytest.mark.parametrize("signals", [1, 2])
def test_sigterm_while_a_job_stores_its_outputs_lets_it_complete_before_the_store_closes(
    rig: Rig, caplog: pytest.LogCaptureFixture, signals: int
) -> None:
    caplog.set_level(logging.INFO, logger="procrastinate")

    async def scenario() -> None:
        job = await rig.submit(seed=1, num_inference_steps=2)
        rig.assets.gated.add(job.id)
        # the worker process's own loop: SIGTERM cancels it, then the event bus and the store are closed
        process = asyncio.create_task(_until_stopped(rig.service, rig.runtime))
        await asyncio.to_thread(rig.assets.storing.wait, WAIT_S)
        assert rig.assets.storing.is_set(), "the job's outputs were never stored"

        os.kill(os.getpid(), signal.SIGTERM)
        if signals == 1:
            # Procrastinate's grace (GRACE_S) ends and it cancels the job's task, its outputs still held
            await happens(lambda: "Aborting them" in caplog.text)
        else:
            # a second SIGTERM within the grace cuts Procrastinate's graceful stop short
            await asyncio.sleep(GRACE_S / 3)
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(GRACE_S)
        await asyncio.sleep(0.5)
        assert not process.done(), "the worker stopped (and closed the store) under the job's finish"
        assert rig.assets.stored == []

        rig.assets.open_gate()
        async with asyncio.timeout(WAIT_S):
            await process

    run(scenario())
    reopened = PostgresStore(rig.url)  # the worker closed its store
    try:
        [job] = reopened.list_jobs(OWNER, status=None, limit=10, before_seq=None)[0]
    finally:
        reopened.close()
    assert job.status == JobStatus.SUCCEEDED
    assert job.attempt == 1
    assert len(job.outputs) == 1
    assert [change.status for change in job.history] == [
        JobStatus.QUEUED,
        JobStatus.PROCESSING,
        JobStatus.SUCCEEDED,
    ]


def test_a_job_still_rendering_when_the_grace_ends_goes_back_to_the_queue_before_the_worker_returns(
    rig: Rig,
) -> None:
    async def scenario() -> None:
        job = await rig.submit(seed=1, num_inference_steps=100)  # 20 s of steps
        async with working(rig) as task:
            await rig.until_status(job.id, JobStatus.PROCESSING)
            await happens(lambda: rig.job(job.id).progress > 0)
            stopped = time.monotonic()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            assert time.monotonic() - stopped < GRACE_S + 5

        back = rig.job(job.id)
        assert back.status == JobStatus.QUEUED
        assert back.attempt == 1  # handed back cleanly: no attempt spent
        assert rig.runs()[job.id] == "todo"  # with a run for the next worker
        assert rig.store.list_workers(0) == []  # the worker's heartbeat row is gone

    run(scenario())


@contextmanager
def database_away(url: str) -> Iterator[None]:
    """This test's database refuses connections, and every open one is cut (the other tests' databases on the
    cluster stay up), until the block ends."""
    database = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        others = "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
        conn.execute(f"SELECT pg_terminate_backend(pid) FROM ({others}) AS other", (database,))
        try:
            yield
        finally:
            conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')


def test_a_job_in_hand_goes_on_through_a_database_outage_and_is_recorded_once_it_is_back(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="procrastinate")

    async def scenario() -> None:
        job = await rig.submit(seed=1, num_inference_steps=5)  # 1 s of steps
        # its outputs wait at the gate until the database is back: the job is in hand all through the outage
        rig.assets.gated.add(job.id)
        async with working(rig):
            await happens(lambda: rig.job(job.id).progress > 0)
            with database_away(rig.url):
                # Procrastinate stops by itself, and cancels the job's task once its grace (GRACE_S) is over
                await happens(lambda: "Aborting them" in caplog.text)
                await asyncio.sleep(1.0)
            assert "the job queue lost the database; the job goes on" in caplog.text
            rig.assets.open_gate()
            ended = await rig.until_status(job.id, JobStatus.SUCCEEDED)
            assert rig.job(job.id).attempt == 1
            # the worker takes jobs again, once the one it carried has ended
            after = await rig.submit(seed=2, num_inference_steps=1)
            await rig.until_status(after.id, JobStatus.SUCCEEDED)

        assert [change.status for change in ended.history] == [
            JobStatus.QUEUED,
            JobStatus.PROCESSING,
            JobStatus.SUCCEEDED,
        ]  # not handed back, nor rendered again
        assert len(ended.outputs) == 1
        assert rig.runs().get(job.id) != "doing"  # no run left for the stalled-job check to hand on

    run(scenario())


def test_a_stop_while_a_job_is_carried_through_an_outage_gives_it_the_grace_then_hands_it_back(
    rig: Rig, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    grace_s = 1.0
    monkeypatch.setattr(worker, "STOP_GRACE_S", grace_s)

    async def scenario() -> None:
        job = await rig.submit(seed=1, num_inference_steps=100)  # 20 s of steps
        async with working(rig) as task:
            await happens(lambda: rig.job(job.id).progress > 0)
            with database_away(rig.url):
                await happens(lambda: "the job goes on" in caplog.text)
            stopped = time.monotonic()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            assert grace_s <= time.monotonic() - stopped < grace_s + 5

        back = rig.job(job.id)
        assert back.status == JobStatus.QUEUED
        assert back.attempt == 1
        assert rig.store.list_workers(0) == []

    run(scenario())


def test_a_cancel_written_to_the_store_reaches_the_running_job_without_any_notice(rig: Rig) -> None:
    async def scenario() -> None:
        job = await rig.submit(seed=1, num_inference_steps=100)  # 20 s of steps
        async with working(rig):
            await happens(lambda: rig.job(job.id).progress > 0)
            # as a replica whose NOTIFY is lost: only the stored flag tells the worker
            flagged = rig.store.cancel(job.id, time.time())
            assert flagged is not None
            assert flagged.cancel_requested
            asked = time.monotonic()
            ended = await rig.until_status(job.id, JobStatus.CANCELED)
            stopped_after = time.monotonic() - asked

        assert stopped_after < 2 * worker.HEARTBEAT_S + 2, stopped_after
        assert ended.outputs == ()
        assert ended.progress < 1

    run(scenario())


def test_stalled_jobs_go_back_to_the_queue_unless_a_live_heartbeat_names_them(rig: Rig) -> None:
    async def scenario() -> None:
        held, abandoned, idle = [await rig.submit(seed=seed) for seed in (1, 2, 3)]
        for job in (held, abandoned, idle):
            assert rig.service.claim(job.id) is not None
        with psycopg.connect(rig.url) as conn:  # runs in hand with no Procrastinate worker beating
            conn.execute("UPDATE procrastinate_jobs SET status = 'doing'")
        now = time.time()
        for name, job_id, seen_at in [
            ("draining", held.id, now),  # alive: its Procrastinate heartbeat stopped while it drains
            ("killed", abandoned.id, now - 2 * worker.STALLED_S),  # silent
        ]:
            status = WorkerStatus(
                name=name,
                device="cpu",
                engine="fake",
                models=(CAMERA_EDIT,),
                started_at=now - 60,
                seen_at=seen_at,
                job_id=job_id,
            )
            rig.store.record_worker(status)

        async with rig.runtime.app.open_async():
            retried = await rig.runtime.retry_stalled_jobs()

        assert sorted(retried) == sorted([abandoned.id, idle.id])  # idle: no heartbeat names it at all
        assert rig.runs() == {held.id: "doing", abandoned.id: "todo", idle.id: "todo"}

    run(scenario())


def test_no_job_is_called_stalled_until_heartbeats_had_time_to_resume_after_a_database_outage(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks: list[float] = []

    async def fake_retry() -> list[str]:  # the check itself is tested above, on the real queue
        checks.append(time.time())
        if len(checks) == 2:
            raise psycopg.OperationalError("the database is away")
        return []

    monkeypatch.setattr(rig.runtime, "retry_stalled_jobs", fake_retry)

    async def scenario() -> None:
        rig.runtime._stalled_checks_from = time.time() + 60  # as just after the database came back
        await rig.runtime._check_stalled()
        assert checks == []
        rig.runtime._stalled_checks_from = 0.0
        await rig.runtime._check_stalled()
        with pytest.raises(psycopg.OperationalError):
            await rig.runtime._check_stalled()
        assert rig.runtime._stalled_checks_from >= checks[-1] + worker.STALLED_S  # the outage is waited out
        await rig.runtime._check_stalled()
        assert len(checks) == 2

    run(scenario())


def test_a_stalled_job_query_that_waited_for_the_database_hands_nothing_back(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "SLOW_CHECK_S", 0.05)
    handed_back: list[object] = []

    stale_run = SimpleNamespace(task_kwargs={"job_id": "job_of_a_live_worker"})

    async def fake_slow_stalled_jobs(**kwargs: object) -> list[object]:
        await asyncio.sleep(0.2)  # as a query waiting in the pool while the database is away
        return [stale_run]  # its worker's heartbeat is stale, as every heartbeat is just after an outage

    async def fake_retry(run: object) -> None:
        handed_back.append(run)

    async def fake_nothing(*args: object, **kwargs: object) -> set[str]:
        return set()

    manager = rig.runtime.app.job_manager
    monkeypatch.setattr(manager, "get_stalled_jobs", fake_slow_stalled_jobs)
    monkeypatch.setattr(manager, "retry_job", fake_retry)
    monkeypatch.setattr(manager, "prune_stalled_workers", fake_nothing)
    monkeypatch.setattr(rig.runtime, "_held_by_live_workers", fake_nothing)

    async def scenario() -> None:
        assert await rig.runtime.retry_stalled_jobs() == []
        assert handed_back == []
        assert rig.runtime._stalled_checks_from > time.time() + worker.STALLED_S - 1  # and none for a while

    run(scenario())
