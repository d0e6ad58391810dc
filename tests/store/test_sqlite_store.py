"""The SQLite store gives back what it was given: every field of a job and of an asset record, through
each query that reads them (rows are decoded by column position, so a column out of place would show)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from reangle.core.jobs import Job, JobError, JobKind, JobStatus, OutputAsset, StatusChange
from reangle.core.ports import AssetRecord, NewJob
from reangle.store.sqlite import SqliteStore

T0 = 1_700_000_000.125


def new_job(job_id: str, *, owner: str = "owner-1", batch_id: str | None = None, priority: int = 0) -> Job:
    return Job(
        id=job_id,
        owner=owner,
        model="qwen-edit-multiangle-2511",
        kind=JobKind.ORBIT,
        input={"image": "asset_in", "poses": [{"horizontal_angle": 90}], "seed": 7, "note": "ü"},
        priority=priority,
        created_at=T0,
        history=(StatusChange(status=JobStatus.QUEUED, at=T0),),
        batch_id=batch_id,
    )


def test_a_queued_job_reads_back_as_it_was_inserted(store: SqliteStore) -> None:
    job = new_job("job_1", batch_id="batch_1", priority=5)
    assert store.insert_jobs([NewJob(job=job)]) == [(job, None)]
    assert store.get_job("job_1") == job
    assert store.batch_jobs("batch_1") == [job]
    assert store.get_job("job_missing") is None


def test_a_finished_job_reads_back_with_every_field(store: SqliteStore) -> None:
    store.insert_jobs([NewJob(job=new_job("job_1", priority=-3))])
    claimed = store.claim_next(T0 + 1)
    assert claimed is not None
    assert (claimed.status, claimed.started_at, claimed.attempt) == (JobStatus.PROCESSING, T0 + 1, 1)
    assert store.set_progress("job_1", 1, 0.5)
    outputs = (
        OutputAsset(asset_id="asset_a", role="view", width=64, height=48, mime_type="image/png", seed=7),
        OutputAsset(
            asset_id="asset_b",
            role="turntable",
            width=64,
            height=48,
            mime_type="image/webp",
            pose={"horizontal_angle": 90, "label": "right"},
        ),
    )
    timings = {"queue_s": 1.0, "inference_s": 0.25}
    done = store.finish("job_1", 1, JobStatus.SUCCEEDED, T0 + 2, outputs=outputs, timings=timings)
    expected = replace(
        new_job("job_1", priority=-3),
        status=JobStatus.SUCCEEDED,
        progress=1.0,
        started_at=T0 + 1,
        finished_at=T0 + 2,
        history=(
            StatusChange(status=JobStatus.QUEUED, at=T0),
            StatusChange(status=JobStatus.PROCESSING, at=T0 + 1),
            StatusChange(status=JobStatus.SUCCEEDED, at=T0 + 2),
        ),
        outputs=outputs,
        timings=timings,
    )
    assert done == expected
    assert store.get_job("job_1") == expected


def test_a_failed_job_keeps_its_error_and_a_cancel_request_its_flag(store: SqliteStore) -> None:
    store.insert_jobs([NewJob(job=new_job("job_1")), NewJob(job=new_job("job_2"))])
    store.claim_next(T0 + 1)
    error = JobError(code="engine_failed", message="out of memory", hint="try a smaller size")
    failed = store.finish("job_1", 1, JobStatus.FAILED, T0 + 2, error=error)
    assert failed is not None
    assert (failed.status, failed.error, failed.progress) == (JobStatus.FAILED, error, 0.0)
    assert store.get_job("job_1") == failed
    store.claim_next(T0 + 3)
    flagged = store.cancel("job_2", T0 + 4)
    assert flagged is not None
    assert (flagged.status, flagged.cancel_requested) == (JobStatus.PROCESSING, True)
    assert store.get_job("job_2") == flagged


def test_listing_pages_newest_first_by_owner_and_status(store: SqliteStore) -> None:
    jobs = [new_job(f"job_{n}") for n in range(5)]
    store.insert_jobs([NewJob(job=job) for job in jobs])
    store.insert_jobs([NewJob(job=new_job("job_other", owner="owner-2"))])
    first, cursor = store.list_jobs("owner-1", status=None, limit=3, before_seq=None)
    assert first == jobs[:1:-1]
    assert cursor is not None
    rest, last_cursor = store.list_jobs("owner-1", status=None, limit=3, before_seq=cursor)
    assert (rest, last_cursor) == (jobs[1::-1], None)
    assert store.list_jobs("owner-1", status=JobStatus.SUCCEEDED, limit=3, before_seq=None) == ([], None)


def test_an_idempotency_key_finds_the_job_and_its_request_hash(store: SqliteStore) -> None:
    job = new_job("job_1")
    store.insert_jobs([NewJob(job=job, idempotency_key="key-1", request_hash="hash-1")])
    assert store.job_by_idempotency_key("owner-1", "key-1") == (job, "hash-1")
    assert store.job_by_idempotency_key("owner-2", "key-1") is None
    repeat = NewJob(job=new_job("job_2"), idempotency_key="key-1", request_hash="hash-2")
    assert store.insert_jobs([repeat]) == [(job, "hash-1")]


def test_recovery_reads_the_jobs_it_requeues_and_fails(store: SqliteStore) -> None:
    store.insert_jobs([NewJob(job=new_job("job_1")), NewJob(job=new_job("job_2"))])
    store.claim_next(T0 + 1)
    store.claim_next(T0 + 1)
    store.finish("job_2", 1, JobStatus.SUCCEEDED, T0 + 2)
    requeued, failed = store.recover(T0 + 3, max_attempts=3)
    assert failed == []
    assert [job.id for job in requeued] == ["job_1"]
    assert requeued[0] == store.get_job("job_1")
    assert (requeued[0].status, requeued[0].attempt, requeued[0].started_at) == (JobStatus.QUEUED, 2, None)


@pytest.mark.parametrize("job_id", [None, "job_1"])
def test_an_asset_record_reads_back_as_it_was_inserted(store: SqliteStore, job_id: str | None) -> None:
    record = AssetRecord(
        id="asset_1",
        owner="owner-1",
        sha256="ab" * 32,
        mime_type="image/png",
        width=640,
        height=480,
        bytes=12345,
        created_at=T0,
        expires_at=T0 + 3600,
        job_id=job_id,
    )
    store.insert_asset(record)
    assert store.get_asset("asset_1") == record
    assert store.get_asset("asset_missing") is None
