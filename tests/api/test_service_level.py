"""Below HTTP: attempt fencing (once recovery re-queues a job as attempt 2, nothing attempt 1 writes lands),
a cancel that wins over a late result, and a runner that outlives an error of its store."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path

import pytest

from reangle.core.assets import AssetService
from reangle.core.edit import SizeLimits
from reangle.core.jobs import Job, JobError, JobKind, JobStatus, OutputAsset, StatusChange
from reangle.core.models import CAMERA_EDIT
from reangle.core.ports import NewJob
from reangle.core.service import JobEvent, JobService, ServiceLimits, SubmitRequest
from reangle.engine.fake import FakeEngine
from reangle.errors import Unavailable
from reangle.runtime import local
from reangle.runtime.local import LocalRunner
from reangle.runtime.local_bus import LocalEventBus
from reangle.settings import Settings
from reangle.store.files import FileBlobStore
from reangle.store.sqlite import SqliteStore
from tests.api.conftest import png

OWNER = "owner-1"
T0 = 1_000_000.0


def queued_job(store: SqliteStore, job_id: str = "job_1") -> Job:
    job = Job(
        id=job_id,
        owner=OWNER,
        model=CAMERA_EDIT,
        kind=JobKind.EDIT,
        input={"images": ["asset_x"], "width": 64, "height": 64},
        created_at=T0,
        history=(StatusChange(status=JobStatus.QUEUED, at=T0),),
    )
    [(stored, _)] = store.insert_jobs([NewJob(job=job)])
    return stored


def output(asset_id: str) -> OutputAsset:
    return OutputAsset(asset_id=asset_id, role="image", width=64, height=64, mime_type="image/png", seed=1)


async def fake_fetch_refused(url: str, field: str) -> bytes:
    raise AssertionError("no URL is fetched here")


def service_on(store: SqliteStore, tmp_path: Path, limits: ServiceLimits) -> JobService:
    assets = AssetService(
        store,
        FileBlobStore(tmp_path / "assets"),
        max_bytes=1 << 20,
        max_pixels=1 << 20,
        upload_ttl_s=60,
        result_ttl_s=60,
    )
    return JobService(store, assets, fake_fetch_refused, limits, events=LocalEventBus())


def test_the_store_ignores_every_write_of_a_lost_attempt(store: SqliteStore) -> None:
    queued_job(store)
    first = store.claim_next(T0 + 1)
    assert first is not None
    assert first.attempt == 1
    assert store.set_progress(first.id, 1, 0.5)

    requeued, failed = store.recover(T0 + 2, max_attempts=3)
    assert ([job.id for job in requeued], failed) == ([first.id], [])
    assert (requeued[0].attempt, requeued[0].status, requeued[0].progress) == (2, JobStatus.QUEUED, 0)

    assert not store.set_progress(first.id, 1, 0.9)
    assert store.finish(first.id, 1, JobStatus.SUCCEEDED, T0 + 3, outputs=[output("asset_stale")]) is None
    assert store.get_job(first.id) == requeued[0]

    second = store.claim_next(T0 + 4)
    assert second is not None
    assert (second.id, second.attempt) == (first.id, 2)
    assert not store.set_progress(first.id, 1, 0.9)
    stale_error = JobError(code="x", message="stale")
    assert store.finish(first.id, 1, JobStatus.FAILED, T0 + 5, error=stale_error) is None
    assert store.finish(first.id, 1, JobStatus.CANCELED, T0 + 5) is None
    assert store.get_job(first.id) == second

    assert store.set_progress(first.id, 2, 0.5)
    done = store.finish(first.id, 2, JobStatus.SUCCEEDED, T0 + 6, outputs=[output("asset_new")])
    assert done is not None
    assert (done.status, done.attempt, done.progress) == (JobStatus.SUCCEEDED, 2, 1.0)
    assert [o.asset_id for o in done.outputs] == ["asset_new"]
    # and a terminal job stays as it is, whichever attempt writes
    assert store.finish(first.id, 2, JobStatus.FAILED, T0 + 7) is None
    assert store.get_job(first.id) == done


def test_the_service_publishes_nothing_for_a_lost_attempt(store: SqliteStore, tmp_path: Path) -> None:
    service = service_on(store, tmp_path, ServiceLimits(max_attempts=3))
    finished: list[Job] = []
    service.finished_hooks.append(finished.append)
    queued_job(store)

    async def scenario() -> tuple[Job, list[JobEvent]]:
        stale = await service.next_job(poll_s=0)
        assert stale is not None
        assert stale.attempt == 1
        service.recover()  # as at the start of a new process
        current = await service.next_job(poll_s=0)
        assert current is not None
        assert current.attempt == 2
        seen: list[JobEvent] = []
        async with service.subscribe(OWNER, stale.id) as events:
            service.report_progress(stale, 3, 4)
            assert service.complete(stale, [output("asset_stale")], {"run_s": 1.0}) is None
            assert service.fail(stale, JobError(code="engine_error", message="stale")) is None
            assert service.mark_canceled(stale) is None
            service.report_progress(current, 1, 4)
            assert service.complete(current, [output("asset_new")], {"run_s": 1.0}) is not None
            seen = [event async for event in events]
        return stale, seen

    stale, events = asyncio.run(scenario())
    assert [(e.kind, e.job.status if e.job else e.progress) for e in events] == [
        ("status", JobStatus.PROCESSING),
        ("progress", {"progress": 0.25, "step": 1, "steps": 4}),
        ("status", JobStatus.SUCCEEDED),
    ]
    job = store.get_job(stale.id)
    assert job is not None
    assert (job.status, job.attempt, [o.asset_id for o in job.outputs]) == (
        JobStatus.SUCCEEDED,
        2,
        ["asset_new"],
    )
    assert [(j.attempt, j.status) for j in finished] == [(2, JobStatus.SUCCEEDED)]


def test_a_cancel_accepted_during_the_last_step_wins_over_the_result(
    store: SqliteStore, tmp_path: Path
) -> None:
    service = service_on(store, tmp_path, ServiceLimits())
    queued_job(store)

    async def scenario() -> tuple[Job, Job | None]:
        job = await service.next_job(poll_s=0)
        assert job is not None
        accepted = service.cancel(OWNER, job.id)  # the engine has just returned; encoding is under way
        return accepted, service.complete(job, [output("asset_late")], {"run_s": 1.0})

    accepted, ended = asyncio.run(scenario())
    assert (accepted.status, accepted.cancel_requested) == (JobStatus.PROCESSING, True)
    assert ended is not None
    assert (ended.status, ended.outputs) == (JobStatus.CANCELED, ())
    assert store.get_job(ended.id) == ended


@pytest.mark.parametrize(
    ("error", "logged"),
    [
        (sqlite3.OperationalError("database is locked"), "the runner failed"),  # a bug's error: logged whole
        (Unavailable("the job database cannot be used now"), "the runner cannot take a job"),
    ],
)
def test_the_runner_outlives_an_error_of_its_store(
    store: SqliteStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
    logged: str,
) -> None:
    monkeypatch.setattr(local, "UNAVAILABLE_RETRY_S", 0.01)
    service = service_on(store, tmp_path, ServiceLimits(sizes=SizeLimits(min_side=16)))
    engine = FakeEngine(Settings(fake_step_seconds=0))
    asset = service.assets.ingest(OWNER, png())
    claim, failures = store.claim_next, list[float]()

    def fake_claim_failing_once(now: float, *, models: Collection[str] | None = None) -> Job | None:
        if not failures:
            failures.append(now)
            raise error
        return claim(now, models=models)

    monkeypatch.setattr(store, "claim_next", fake_claim_failing_once)

    async def scenario() -> Job:
        request = SubmitRequest(model=CAMERA_EDIT, input={"images": [asset.id], "width": 32, "height": 32})
        job = await service.submit(OWNER, request)
        runner = asyncio.create_task(LocalRunner(service, engine).run_forever(retry_s=0.01))
        try:
            return await service.wait(OWNER, job.id, timeout=20)
        finally:
            runner.cancel()

    with caplog.at_level(logging.WARNING, logger="reangle.runner"):
        done = asyncio.run(scenario())
    assert len(failures) == 1
    assert done.status == JobStatus.SUCCEEDED
    assert [record.getMessage().split(";")[0].split(" (")[0] for record in caplog.records] == [logged]


def test_progress_is_stored_and_published_at_most_every_interval_besides_the_first_and_last_step(
    store: SqliteStore, tmp_path: Path
) -> None:
    service = service_on(store, tmp_path, ServiceLimits())
    now = [1000.0]
    service.clock = lambda: now[0]
    queued_job(store)
    writes: list[float] = []
    set_progress = store.set_progress

    def counting(job_id: str, attempt: int, progress: float, *, webhook_at: float | None = None) -> bool:
        writes.append(progress)
        return set_progress(job_id, attempt, progress, webhook_at=webhook_at)

    store.set_progress = counting  # type: ignore[method-assign]

    async def scenario() -> list[JobEvent]:
        job = await service.next_job(poll_s=0)
        assert job is not None
        async with service.subscribe(OWNER, job.id) as events:
            for step in range(1, 41):  # 40 steps, 0.1 s apart
                service.report_progress(job, step, 40)
                now[0] += 0.1
            assert service.complete(job, [output("asset_done")], {}) is not None
            return [event async for event in events if event.kind == "progress"]

    published = asyncio.run(scenario())
    # the first step, then every third step (0.3 s >= 0.25 s), and the last one
    expected = [step / 40 for step in [1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31, 34, 37, 40]]
    assert writes == expected
    assert [event.progress["progress"] for event in published if event.progress] == expected


def test_a_cancel_reaches_a_job_claimed_a_moment_before_it(store: SqliteStore, tmp_path: Path) -> None:
    """The runner has the job (its stop flag exists from the claim on, before any render), and the cancel
    read the job as queued just before: the store's answer decides, and the stop reaches the runner."""
    service = service_on(store, tmp_path, ServiceLimits())
    queued_job(store)
    stale_read = service.get

    async def scenario() -> Job:
        claimed = await service.next_job(poll_s=0)
        assert claimed is not None
        service.get = lambda owner, job_id: replace(stale_read(owner, job_id), status=JobStatus.QUEUED)  # type: ignore[method-assign]
        canceled = service.cancel(OWNER, claimed.id)
        assert (canceled.status, canceled.cancel_requested) == (JobStatus.PROCESSING, True)
        return claimed

    claimed = asyncio.run(scenario())
    assert service.stop_flag(claimed).is_set()
