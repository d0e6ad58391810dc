"""The job store contract, on both stores: SQLite (the reference) and PostgreSQL.

Each store gives back what it was given: every field of a job and of an asset record, through each query
that reads them (rows are decoded by column position, so a column out of place would show). Runner writes are
fenced by attempt, terminal statuses never change, and two store instances on one database (two processes)
racing on an idempotency key, the queue limit or the next job never make two jobs, overfill or claim one job
twice.
"""

from __future__ import annotations

import base64
import sqlite3
import stat
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest

from reangle.core.jobs import (
    SOURCE_UNRECORDED,
    Job,
    JobError,
    JobKind,
    JobStatus,
    OutputAsset,
    StatusChange,
    TimeLimits,
    WebhookTarget,
)
from reangle.core.ports import AssetRecord, JobStore, NewJob, WorkerStatus
from reangle.errors import QueueFull
from reangle.store.schema import SCHEMA
from reangle.store.sqlite import SqliteStore
from tests.store.conftest import StoreOpener

T = TypeVar("T")

T0 = 1_700_000_000.125


def new_job(
    job_id: str,
    *,
    owner: str = "owner-1",
    batch_id: str | None = None,
    priority: int = 0,
    model: str = "qwen-edit-multiangle-2511",
) -> Job:
    return Job(
        id=job_id,
        owner=owner,
        model=model,
        kind=JobKind.ORBIT,
        input={"image": "asset_in", "poses": [{"horizontal_angle": 90}], "seed": 7, "note": "ü"},
        priority=priority,
        created_at=T0,
        history=(StatusChange(status=JobStatus.QUEUED, at=T0),),
        batch_id=batch_id,
    )


def at_once(*calls: Callable[[], T]) -> list[T]:
    """Run the calls in threads released together; their results in order."""
    start = threading.Barrier(len(calls), timeout=10)

    def run(call: Callable[[], T]) -> T:
        start.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return [future.result(timeout=30) for future in [pool.submit(run, call) for call in calls]]


def test_a_queued_job_reads_back_as_it_was_inserted(job_store: JobStore) -> None:
    job = replace(
        new_job("job_1", batch_id="batch_1", priority=5),
        source="runpod:ep-1",
        limits=TimeLimits(run_s=6.5, total_s=30.0),
    )
    assert job_store.insert_jobs([NewJob(job=job)]) == [(job, None)]
    assert job_store.get_job("job_1") == job
    assert job_store.batch_jobs("batch_1") == [job]
    assert job_store.get_job("job_missing") is None


def test_a_finished_job_reads_back_with_every_field(job_store: JobStore) -> None:
    job_store.insert_jobs([NewJob(job=new_job("job_1", priority=-3))])
    claimed = job_store.claim_next(T0 + 1)
    assert claimed is not None
    assert (claimed.status, claimed.started_at, claimed.attempt) == (JobStatus.PROCESSING, T0 + 1, 1)
    assert job_store.set_progress("job_1", 1, 0.5)
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
    done = job_store.finish("job_1", 1, JobStatus.SUCCEEDED, T0 + 2, outputs=outputs, timings=timings)
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
    assert job_store.get_job("job_1") == expected


def test_a_failed_job_keeps_its_error_and_a_cancel_request_its_flag(job_store: JobStore) -> None:
    job_store.insert_jobs([NewJob(job=new_job("job_1")), NewJob(job=new_job("job_2"))])
    job_store.claim_next(T0 + 1)
    error = JobError(code="engine_failed", message="out of memory", hint="try a smaller size")
    failed = job_store.finish("job_1", 1, JobStatus.FAILED, T0 + 2, error=error)
    assert failed is not None
    assert (failed.status, failed.error, failed.progress) == (JobStatus.FAILED, error, 0.0)
    assert job_store.get_job("job_1") == failed
    job_store.claim_next(T0 + 3)
    flagged = job_store.cancel("job_2", T0 + 4)
    assert flagged is not None
    assert (flagged.status, flagged.cancel_requested) == (JobStatus.PROCESSING, True)
    assert job_store.get_job("job_2") == flagged


def test_listing_pages_newest_first_by_owner_and_status(job_store: JobStore) -> None:
    jobs = [new_job(f"job_{n}") for n in range(5)]
    job_store.insert_jobs([NewJob(job=job) for job in jobs])
    job_store.insert_jobs([NewJob(job=new_job("job_other", owner="owner-2"))])
    first, cursor = job_store.list_jobs("owner-1", status=None, limit=3, before_seq=None)
    assert first == jobs[:1:-1]
    assert cursor is not None
    rest, last_cursor = job_store.list_jobs("owner-1", status=None, limit=3, before_seq=cursor)
    assert (rest, last_cursor) == (jobs[1::-1], None)
    assert job_store.list_jobs("owner-1", status=JobStatus.SUCCEEDED, limit=3, before_seq=None) == ([], None)


def test_the_operators_listing_takes_every_owner_newest_first_and_filters(job_store: JobStore) -> None:
    mine = [new_job(f"job_mine_{n}") for n in range(3)]
    theirs = new_job("job_theirs", owner="owner-2", model="qwen-image-2512")
    job_store.insert_jobs([NewJob(job=job) for job in mine])
    job_store.insert_jobs([NewJob(job=theirs)])
    claimed = job_store.claim_next(T0 + 1, models=["qwen-image-2512"])
    assert claimed is not None
    assert job_store.list_all_jobs(limit=10) == [claimed, *mine[::-1]]
    assert job_store.list_all_jobs(limit=2) == [claimed, mine[2]]
    assert job_store.list_all_jobs(owner="owner-1", limit=10) == mine[::-1]
    assert job_store.list_all_jobs(model="qwen-image-2512", limit=10) == [claimed]
    assert job_store.list_all_jobs(status=JobStatus.QUEUED, limit=10) == mine[::-1]
    assert job_store.list_all_jobs(status=JobStatus.PROCESSING, owner="owner-2", limit=10) == [claimed]
    assert job_store.list_all_jobs(status=JobStatus.PROCESSING, owner="owner-1", limit=10) == []
    assert job_store.list_all_jobs(model="qwen-image-2512", owner="owner-1", limit=10) == []


def test_an_idempotency_key_finds_the_job_and_its_request_hash(job_store: JobStore) -> None:
    job = new_job("job_1")
    job_store.insert_jobs([NewJob(job=job, idempotency_key="key-1", request_hash="hash-1")])
    assert job_store.job_by_idempotency_key("owner-1", "key-1") == (job, "hash-1")
    assert job_store.job_by_idempotency_key("owner-2", "key-1") is None
    repeat = NewJob(job=new_job("job_2"), idempotency_key="key-1", request_hash="hash-2")
    assert job_store.insert_jobs([repeat]) == [(job, "hash-1")]


def test_recovery_reads_the_jobs_it_requeues_and_ends(job_store: JobStore) -> None:
    job_store.insert_jobs([NewJob(job=new_job(f"job_{n}")) for n in (1, 2, 3)])
    for _ in range(3):
        job_store.claim_next(T0 + 1)
    job_store.finish("job_2", 1, JobStatus.SUCCEEDED, T0 + 2)
    job_store.cancel("job_3", T0 + 2)  # asked while it ran; the server stopped before it did
    requeued, ended = job_store.recover(T0 + 3, max_attempts=3)
    assert ended == [job_store.get_job("job_3")]
    assert (ended[0].status, ended[0].finished_at) == (JobStatus.CANCELED, T0 + 3)
    assert [job.id for job in requeued] == ["job_1"]
    assert requeued[0] == job_store.get_job("job_1")
    assert (requeued[0].status, requeued[0].attempt, requeued[0].started_at) == (JobStatus.QUEUED, 2, None)


@pytest.mark.parametrize(("job_id", "name"), [(None, "my photo (2).png"), ("job_1", None)])
def test_an_asset_record_reads_back_as_it_was_inserted(
    job_store: JobStore, job_id: str | None, name: str | None
) -> None:
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
        name=name,
    )
    job_store.insert_asset(record)
    assert job_store.get_asset("asset_1") == record
    assert job_store.get_asset("asset_missing") is None


def asset(asset_id: str, *, sha256: str, expires_at: float) -> AssetRecord:
    return AssetRecord(
        id=asset_id,
        owner="owner-1",
        sha256=sha256,
        mime_type="image/png",
        width=8,
        height=8,
        bytes=100,
        created_at=T0,
        expires_at=expires_at,
    )


def test_an_asset_inserted_if_absent_keeps_the_record_already_under_its_id(job_store: JobStore) -> None:
    first = asset("asset_1", sha256="ab" * 32, expires_at=T0 + 60)
    job_store.insert_asset(first, if_absent=True)
    job_store.insert_asset(asset("asset_1", sha256="cd" * 32, expires_at=T0 + 90), if_absent=True)
    assert job_store.get_asset("asset_1") == first
    with pytest.raises(Exception):  # noqa: B017,PT011  (each store's own integrity error)
        job_store.insert_asset(first)


def edit_job(job_id: str, images: list[str]) -> Job:
    return replace(new_job(job_id), kind=JobKind.EDIT, input={"images": images, "horizontal_angle": 90})


# fencing and terminal states -------------------------------------------------------------------------------


def test_a_stale_attempt_changes_nothing(job_store: JobStore) -> None:
    job_store.insert_jobs([NewJob(job=new_job("job_1"))])
    job_store.claim_next(T0 + 1)
    job_store.recover(T0 + 2, max_attempts=3)
    second = job_store.claim_next(T0 + 3)
    assert second is not None
    assert second.attempt == 2
    assert not job_store.set_progress("job_1", 1, 0.9)
    assert job_store.finish("job_1", 1, JobStatus.SUCCEEDED, T0 + 4) is None
    assert not job_store.release("job_1", 1, T0 + 4)
    assert job_store.get_job("job_1") == second
    assert job_store.set_progress("job_1", 2, 0.5)
    assert job_store.get_job("job_1") == replace(second, progress=0.5)


def test_terminal_statuses_never_change(job_store: JobStore) -> None:
    job_store.insert_jobs([NewJob(job=new_job("job_1"))])
    job_store.claim_next(T0 + 1)
    done = job_store.finish("job_1", 1, JobStatus.SUCCEEDED, T0 + 2)
    assert done is not None
    assert job_store.finish("job_1", 1, JobStatus.FAILED, T0 + 3) is None
    assert job_store.cancel("job_1", T0 + 3) == done
    assert not job_store.set_progress("job_1", 1, 0.5)
    assert not job_store.release("job_1", 1, T0 + 3)
    assert job_store.recover(T0 + 3, max_attempts=3) == ([], [])
    assert job_store.get_job("job_1") == done


# cancel ----------------------------------------------------------------------------------------------------


def test_a_queued_job_cancels_at_once_and_a_missing_one_is_none(job_store: JobStore) -> None:
    job_store.insert_jobs([NewJob(job=new_job("job_1"))])
    canceled = job_store.cancel("job_1", T0 + 1)
    assert canceled is not None
    assert (canceled.status, canceled.finished_at) == (JobStatus.CANCELED, T0 + 1)
    assert [change.status for change in canceled.history] == [JobStatus.QUEUED, JobStatus.CANCELED]
    assert job_store.claim_next(T0 + 2) is None
    assert job_store.cancel("job_missing", T0 + 2) is None


def test_a_cancel_accepted_while_running_wins_over_success_and_release(job_store: JobStore) -> None:
    job_store.insert_jobs([NewJob(job=new_job("job_1")), NewJob(job=new_job("job_2"))])
    job_store.claim_next(T0 + 1)
    job_store.claim_next(T0 + 1)
    job_store.cancel("job_1", T0 + 2)
    job_store.cancel("job_2", T0 + 2)
    output = OutputAsset(asset_id="asset_a", role="image", width=8, height=8, mime_type="image/png")
    ended = job_store.finish("job_1", 1, JobStatus.SUCCEEDED, T0 + 3, outputs=[output])
    assert ended is not None
    assert (ended.status, ended.outputs, ended.finished_at) == (JobStatus.CANCELED, (), T0 + 3)
    assert job_store.release("job_2", 1, T0 + 3)
    released = job_store.get_job("job_2")
    assert released is not None
    assert released.status == JobStatus.CANCELED


def test_a_clean_release_requeues_without_spending_an_attempt(job_store: JobStore) -> None:
    job_store.insert_jobs([NewJob(job=new_job("job_1"))])
    job_store.claim_next(T0 + 1)
    job_store.set_progress("job_1", 1, 0.5)
    assert job_store.release("job_1", 1, T0 + 2)
    job = job_store.get_job("job_1")
    assert job is not None
    assert (job.status, job.attempt, job.progress, job.started_at) == (JobStatus.QUEUED, 1, 0.0, None)


# a remote job's vendor task ---------------------------------------------------------------------------------


def test_a_vendor_task_is_recorded_by_its_running_attempt_and_outlives_a_stop(job_store: JobStore) -> None:
    job_store.insert_jobs([NewJob(job=new_job("job_1")), NewJob(job=new_job("job_2"))])
    assert not job_store.set_vendor_task("job_1", 1, "task-queued")  # no runner holds it yet
    claimed = job_store.claim_next(T0 + 1)
    assert claimed is not None
    assert claimed.vendor_task is None
    assert job_store.set_vendor_task("job_1", 1, "task-a")
    assert not job_store.set_vendor_task("job_1", 2, "task-stale")  # fenced
    assert not job_store.set_vendor_task("job_missing", 1, "task-x")
    recorded = job_store.get_job("job_1")
    assert recorded == replace(claimed, vendor_task="task-a")

    assert job_store.release("job_1", 1, T0 + 2)  # a graceful stop: the next run follows task-a
    again = job_store.claim_next(T0 + 3)
    assert again is not None
    assert (again.id, again.attempt, again.vendor_task) == ("job_1", 1, "task-a")
    [requeued], _ = job_store.recover(T0 + 4, max_attempts=3)  # a crash: the next attempt follows it too
    assert (requeued.attempt, requeued.vendor_task) == (2, "task-a")
    claimed_again = job_store.claim_job("job_1", T0 + 5, max_attempts=3)
    assert claimed_again is not None
    assert claimed_again.vendor_task == "task-a"
    assert job_store.set_vendor_task("job_1", 2, "task-b")  # the vendor's answer for a new task

    done = job_store.finish("job_1", 2, JobStatus.SUCCEEDED, T0 + 6)
    assert done is not None
    assert done.vendor_task == "task-b"
    assert not job_store.set_vendor_task("job_1", 2, "task-c")  # ended: never changes
    assert job_store.get_job("job_1") == done
    assert [
        job.vendor_task for job in job_store.list_jobs("owner-1", status=None, limit=5, before_seq=None)[0]
    ] == [
        None,
        "task-b",
    ]


def test_a_sqlite_database_made_before_the_added_columns_gets_them(tmp_path: Path) -> None:
    """The tables as reangle made them before the jobs' webhook, vendor_task, source and limits columns and
    the assets' job_id and name; and readable by others, as reangle made the file then."""
    old_schema = SCHEMA.replace(
        "    webhook TEXT,\n    vendor_task TEXT,\n    source TEXT,\n    limits TEXT,\n", ""
    ).replace(
        "    expires_at REAL NOT NULL,\n    job_id TEXT,\n    name TEXT\n", "    expires_at REAL NOT NULL\n"
    )
    assert "expires_at REAL NOT NULL\n);\nCREATE INDEX IF NOT EXISTS assets_expiry" in old_schema
    assert "limits TEXT" not in old_schema
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(old_schema)
        db.execute(
            "INSERT INTO jobs (id, owner, model, kind, input, status, created_at, history) VALUES "
            "('job_old', 'owner-1', 'wan-2.7-image', 'edit', '{}', 'queued', ?, '[]')",
            (T0,),
        )
    db.close()
    path.chmod(0o644)

    store = SqliteStore(path)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        record = replace(
            asset("asset_new", sha256="cd" * 32, expires_at=T0 + 60), job_id="job_old", name="new.png"
        )
        store.insert_asset(record)
        assert store.get_asset("asset_new") == record
        old = store.get_job("job_old")
        assert old is not None
        assert (old.status, old.webhook, old.vendor_task, old.source, old.limits) == (
            JobStatus.QUEUED,
            None,
            None,
            SOURCE_UNRECORDED,  # stored before sources were: any RunPod endpoint answers for it
            None,
        )
        assert store.claim_next(T0 + 1) is not None
        assert store.set_vendor_task("job_old", 1, "task-a")
        assert store.release("job_old", 1, T0 + 2)
    finally:
        store.close()
    reopened = SqliteStore(path)  # the column is added once; opening again changes nothing
    try:
        kept = reopened.get_job("job_old")
        assert kept is not None
        assert (kept.status, kept.vendor_task) == (JobStatus.QUEUED, "task-a")
    finally:
        reopened.close()


# recover ---------------------------------------------------------------------------------------------------


def test_recovery_fails_a_job_out_of_attempts_and_ends_a_canceled_one(job_store: JobStore) -> None:
    job_store.insert_jobs([NewJob(job=new_job(f"job_{n}")) for n in range(3)])
    for _ in range(3):
        job_store.claim_next(T0 + 1)
    job_store.cancel("job_2", T0 + 2)
    job_store.recover(T0 + 3, max_attempts=2)  # job_0 and job_1 go to attempt 2
    job_store.claim_next(T0 + 4)
    job_store.claim_next(T0 + 4)
    requeued, failed = job_store.recover(T0 + 5, max_attempts=2)
    assert requeued == []
    assert [job.id for job in failed] == ["job_0", "job_1"]
    assert failed[0] == job_store.get_job("job_0")
    assert failed[0].error is not None
    assert (failed[0].status, failed[0].error.code, failed[0].attempt) == (JobStatus.FAILED, "interrupted", 2)
    assert "2 times" in failed[0].error.message
    canceled = job_store.get_job("job_2")
    assert canceled is not None
    assert (canceled.status, canceled.finished_at) == (JobStatus.CANCELED, T0 + 3)


# claiming --------------------------------------------------------------------------------------------------


def test_claim_next_takes_priority_then_age_and_only_the_models_asked_for(job_store: JobStore) -> None:
    job_store.insert_jobs(
        [
            NewJob(job=new_job("job_a_old", model="model-a")),
            NewJob(job=new_job("job_b", model="model-b")),
            NewJob(job=new_job("job_a_urgent", model="model-a", priority=5)),
            NewJob(job=new_job("job_c", model="model-c")),
        ]
    )
    assert job_store.claim_next(T0, models=[]) is None
    claimed_b = job_store.claim_next(T0, models=["model-b"])
    assert claimed_b is not None
    assert (claimed_b.id, claimed_b.status) == ("job_b", JobStatus.PROCESSING)
    assert job_store.claim_next(T0, models={"model-b"}) is None
    order = [job_store.claim_next(T0, models=("model-a", "model-c")) for _ in range(3)]
    assert [job.id if job else None for job in order] == ["job_a_urgent", "job_a_old", "job_c"]
    assert job_store.claim_next(T0) is None


def test_claim_job_takes_a_queued_job_and_redelivers_a_silent_one(job_store: JobStore) -> None:
    job_store.insert_jobs([NewJob(job=new_job("job_1"))])
    first = job_store.claim_job("job_1", T0 + 1, max_attempts=2)
    assert first is not None
    assert (first.status, first.attempt, first.started_at) == (JobStatus.PROCESSING, 1, T0 + 1)
    again = job_store.claim_job("job_1", T0 + 2, max_attempts=2)
    assert again is not None
    assert (again.status, again.attempt, again.started_at) == (JobStatus.PROCESSING, 2, T0 + 2)
    assert job_store.finish("job_1", 1, JobStatus.SUCCEEDED, T0 + 3) is None  # the silent runner is fenced
    failed = job_store.claim_job("job_1", T0 + 4, max_attempts=2)
    assert failed is not None
    assert failed.error is not None
    assert (failed.status, failed.error.code) == (JobStatus.FAILED, "interrupted")
    assert job_store.claim_job("job_1", T0 + 5, max_attempts=2) is None
    assert job_store.claim_job("job_missing", T0 + 5, max_attempts=2) is None


# several instances on one database (several processes) ----------------------------------------------------


def test_two_instances_racing_on_one_idempotency_key_make_one_job(open_store: StoreOpener) -> None:
    first, second = open_store(), open_store()
    for n in range(5):
        key = f"key-{n}"

        def submit(store: JobStore, job_id: str, key: str = key) -> Job:
            [(job, _)] = store.insert_jobs(
                [NewJob(job=new_job(job_id), idempotency_key=key, request_hash="h")]
            )
            return job

        one, other = at_once(partial(submit, first, f"job_{n}_a"), partial(submit, second, f"job_{n}_b"))
        assert one == other
        assert first.job_by_idempotency_key("owner-1", key) == (one, "h")
    jobs, _ = first.list_jobs("owner-1", status=None, limit=100, before_seq=None)
    assert len(jobs) == 5


def test_concurrent_submits_from_two_instances_never_overfill_the_queue(open_store: StoreOpener) -> None:
    first, second = open_store(), open_store()

    def submit_many(store: JobStore, prefix: str) -> int:
        accepted = 0
        for n in range(8):
            try:
                store.insert_jobs([NewJob(job=new_job(f"job_{prefix}_{n}"))], max_queued=6)
                accepted += 1
            except QueueFull:
                pass
        return accepted

    accepted = at_once(lambda: submit_many(first, "a"), lambda: submit_many(second, "b"))
    assert sum(accepted) == 6
    assert first.count_by_status() == {"queued": 6}


def test_a_batch_over_the_queue_limit_inserts_nothing(job_store: JobStore) -> None:
    job_store.insert_jobs([NewJob(job=new_job("job_0"))])
    with pytest.raises(QueueFull, match="the queue holds 1 job; its limit is 3"):
        job_store.insert_jobs([NewJob(job=new_job(f"job_{n}")) for n in range(1, 4)], max_queued=3)
    assert job_store.count_by_status() == {"queued": 1}


def test_one_owner_cannot_queue_past_its_own_limit_and_others_still_can(job_store: JobStore) -> None:
    job_store.insert_jobs([NewJob(job=new_job("job_a1", owner="a"))], max_queued_per_owner=2)
    with pytest.raises(QueueFull, match="this API key has 1 queued job; each key may have 2"):
        job_store.insert_jobs(  # a batch of two, one too many: nothing of it is queued
            [NewJob(job=new_job(f"job_a{n}", owner="a")) for n in (2, 3)],
            max_queued=100,
            max_queued_per_owner=2,
        )
    job_store.insert_jobs([NewJob(job=new_job("job_a2", owner="a"))], max_queued_per_owner=2)
    job_store.insert_jobs([NewJob(job=new_job("job_b1", owner="b"))], max_queued_per_owner=2)
    assert job_store.claim_next(T0 + 1) is not None  # a's first job starts: room for one more of a's
    job_store.insert_jobs([NewJob(job=new_job("job_a3", owner="a"))], max_queued_per_owner=2)
    assert job_store.count_by_status() == {"queued": 3, "processing": 1}


def test_instances_claiming_at_once_never_take_one_job_twice(open_store: StoreOpener) -> None:
    stores = [open_store() for _ in range(3)]
    stores[0].insert_jobs([NewJob(job=new_job(f"job_{n:02}")) for n in range(60)])

    def claim_all(store: JobStore) -> list[str]:
        claimed = []
        while (job := store.claim_next(T0 + 1)) is not None:
            claimed.append(job.id)
        return claimed

    claims = at_once(*(partial(claim_all, store) for store in stores))
    assert sorted(job_id for claimed in claims for job_id in claimed) == [f"job_{n:02}" for n in range(60)]
    assert stores[0].count_by_status() == {"processing": 60}


# assets ----------------------------------------------------------------------------------------------------


def test_the_expiry_sweep_returns_only_the_contents_no_record_still_uses(job_store: JobStore) -> None:
    job_store.insert_asset(asset("asset_gone", sha256="aa" * 32, expires_at=T0))
    job_store.insert_asset(asset("asset_gone_shared", sha256="bb" * 32, expires_at=T0))
    job_store.insert_asset(asset("asset_alive_shared", sha256="bb" * 32, expires_at=T0 + 100))
    assert job_store.delete_expired_assets(T0 + 1) == {"aa" * 32}
    assert job_store.get_asset("asset_gone") is None
    assert job_store.get_asset("asset_gone_shared") is None
    assert job_store.get_asset("asset_alive_shared") is not None
    assert job_store.delete_expired_assets(T0 + 1) == set()


def test_the_hashes_no_asset_record_refers_to_are_found_in_a_batch(job_store: JobStore) -> None:
    """A page of the orphan walk (1000 hashes) and more, also on a SQLite that takes 999 parameters at most
    (before 3.32)."""
    if isinstance(job_store, SqliteStore):
        job_store._db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    job_store.insert_asset(asset("asset_1", sha256="aa" * 32, expires_at=T0))
    job_store.insert_asset(asset("asset_2", sha256="aa" * 32, expires_at=T0))
    job_store.insert_asset(asset("asset_3", sha256="bb" * 32, expires_at=T0))
    batch = [*(f"{n:064x}" for n in range(1200)), "aa" * 32, "bb" * 32]
    assert job_store.hashes_without_assets(batch) == set(batch[:-2])
    assert job_store.hashes_without_assets(["aa" * 32]) == set()
    assert job_store.hashes_without_assets([]) == set()


def test_a_job_reads_with_the_records_of_its_outputs_still_stored(job_store: JobStore) -> None:
    job_store.insert_jobs([NewJob(job=new_job("job_1"))])
    assert job_store.get_job_with_outputs("job_1") == (job_store.get_job("job_1"), [])
    assert job_store.claim_job("job_1", T0 + 1, max_attempts=3) is not None
    records = [
        replace(asset(f"out_{n}", sha256=f"{n}" * 64, expires_at=T0 + 100), job_id="job_1", name=f"{n}.png")
        for n in range(3)
    ]
    for record in records:
        job_store.insert_asset(record)
    outputs = [
        OutputAsset(asset_id=record.id, role="view", width=8, height=8, mime_type="image/png")
        for record in records
    ]
    outputs.append(replace(outputs[0], asset_id="out_swept"))  # listed, but its record is gone
    assert job_store.finish("job_1", 1, JobStatus.SUCCEEDED, T0 + 2, outputs=outputs) is not None

    found = job_store.get_job_with_outputs("job_1")
    assert found is not None
    job, stored = found
    assert job == job_store.get_job("job_1")
    assert sorted(stored, key=lambda record: record.id) == records
    assert sorted(job_store.get_assets(["out_2", "out_0", "missing"]), key=lambda r: r.id) == [
        records[0],
        records[2],
    ]
    assert job_store.get_assets([]) == []
    assert job_store.get_job_with_outputs("job_missing") is None


def test_the_sweep_deletes_the_outputs_an_ended_job_did_not_keep(job_store: JobStore) -> None:
    job_store.insert_jobs([NewJob(job=new_job("job_done")), NewJob(job=new_job("job_running"))])
    for job_id in ("job_done", "job_running"):
        assert job_store.claim_job(job_id, T0 + 1, max_attempts=3) is not None
    for name, job_id in (("kept", "job_done"), ("unkept", "job_done"), ("in_hand", "job_running")):
        # the unkept output's content is the kept one's: the content stays, the record goes
        sha = "cc" * 32 if name != "in_hand" else "dd" * 32
        job_store.insert_asset(replace(asset(name, sha256=sha, expires_at=T0 + 100), job_id=job_id))
    kept = OutputAsset(asset_id="kept", role="image", width=8, height=8, mime_type="image/png")
    assert job_store.finish("job_done", 1, JobStatus.SUCCEEDED, T0 + 2, outputs=[kept]) is not None
    converted = replace(asset("converted", sha256="ee" * 32, expires_at=T0 + 100), job_id="job_done")
    job_store.insert_asset(replace(converted, created_at=T0 + 2.5))  # made from an output, after the end

    assert job_store.delete_expired_assets(T0 + 3) == set()
    assert job_store.get_asset("unkept") is None
    assert job_store.get_asset("kept") is not None
    assert job_store.get_asset("converted") is not None
    assert job_store.get_asset("in_hand") is not None  # its job has not ended: its outputs may be kept


def test_the_inputs_of_unfinished_jobs_or_of_one_job_are_kept(job_store: JobStore) -> None:
    for name in ("in_1", "in_2", "in_orbit", "in_done", "unrelated"):
        job_store.insert_asset(asset(name, sha256=name * 4, expires_at=T0))
    job_store.insert_jobs(
        [
            NewJob(job=edit_job("job_edit", ["in_1", "in_2"])),
            NewJob(job=new_job("job_orbit")),  # an orbit of "asset_in": no such asset
            NewJob(job=replace(new_job("job_orbit_2"), input={"image": "in_orbit"})),
            NewJob(job=edit_job("job_done", ["in_done"])),
        ]
    )
    job_store.cancel("job_done", T0)
    job_store.extend_job_inputs(T0 + 50)
    expiry = {name: getattr(job_store.get_asset(name), "expires_at", None) for name in ("in_1", "in_2")}
    assert expiry == {"in_1": T0 + 50, "in_2": T0 + 50}
    for name, expected in (("in_orbit", T0 + 50), ("in_done", T0), ("unrelated", T0)):
        record = job_store.get_asset(name)
        assert record is not None
        assert record.expires_at == expected, name
    job_store.extend_job_inputs(T0 + 70, job_id="job_done")
    job_store.extend_job_inputs(T0 + 10, job_id="job_edit")  # never shortens
    assert [getattr(job_store.get_asset(n), "expires_at", None) for n in ("in_done", "in_1")] == [
        T0 + 70,
        T0 + 50,
    ]
    job_store.extend_asset("unrelated", T0 + 5)
    job_store.extend_asset("unrelated", T0 + 2)
    assert getattr(job_store.get_asset("unrelated"), "expires_at", None) == T0 + 5


def test_finished_jobs_are_deleted_after_their_retention(job_store: JobStore) -> None:
    job_store.insert_jobs([NewJob(job=new_job("job_old")), NewJob(job=new_job("job_waiting"))])
    job_store.cancel("job_old", T0 + 1)
    assert job_store.delete_finished_before(T0 + 1) == 0
    assert job_store.delete_finished_before(T0 + 2) == 1
    assert job_store.get_job("job_old") is None
    assert job_store.get_job("job_waiting") is not None


def test_a_deleted_jobs_outputs_expire_with_it_under_a_retention_shortened_since(job_store: JobStore) -> None:
    job_store.insert_asset(asset("asset_out", sha256="ab" * 32, expires_at=T0 + 86400))
    job_store.insert_asset(asset("asset_other", sha256="cd" * 32, expires_at=T0 + 86400))
    job_store.insert_jobs([NewJob(job=new_job("job_1"))])
    assert job_store.claim_next(T0 + 1) is not None
    output = OutputAsset(asset_id="asset_out", role="view", width=8, height=8, mime_type="image/png")
    job_store.finish("job_1", 1, JobStatus.SUCCEEDED, T0 + 2, outputs=(output,))
    assert job_store.delete_finished_before(T0 + 40) == 1  # as a sweep under a TTL shortened to 40 s
    assert getattr(job_store.get_asset("asset_out"), "expires_at", None) == T0 + 40
    assert getattr(job_store.get_asset("asset_other"), "expires_at", None) == T0 + 86400
    assert job_store.delete_expired_assets(T0 + 41) == {"ab" * 32}


# API keys and shared secrets -------------------------------------------------------------------------------


def test_api_keys_are_found_by_their_hash(job_store: JobStore) -> None:
    assert job_store.count_api_keys() == 0
    job_store.insert_api_key("key_1", "ci", "hash-1", T0)
    job_store.insert_api_key("key_2", "laptop", "hash-2", T0)
    assert job_store.count_api_keys() == 2
    assert (job_store.api_key_id("hash-2"), job_store.api_key_id("hash-x")) == ("key_2", None)


def test_a_shared_secret_is_made_once_and_the_same_for_every_instance(open_store: StoreOpener) -> None:
    first, second = open_store(), open_store()
    secret, same = at_once(
        lambda: first.shared_secret("url_signing"), lambda: second.shared_secret("url_signing")
    )
    assert secret == same
    assert len(secret) == 64
    int(secret, 16)
    assert second.shared_secret("url_signing") == secret
    assert first.shared_secret("other") != secret


def test_workers_report_themselves_and_are_listed_while_heard_from(job_store: JobStore) -> None:
    first = WorkerStatus(
        name="gpu-box:101",
        device="cuda:0",
        engine="qwen",
        models=("qwen-edit-multiangle-2511", "qwen-image-edit-2511"),
        started_at=T0,
        seen_at=T0 + 2,
    )
    second = replace(first, name="gpu-box:102", device="cuda:1", models=(), seen_at=T0 + 30)
    job_store.record_worker(first)
    job_store.record_worker(second)
    assert job_store.list_workers(seen_since=T0) == [first, second]

    beat = replace(first, seen_at=T0 + 40, job_id="job_1")  # a later heartbeat replaces the row
    job_store.record_worker(beat)
    assert job_store.list_workers(seen_since=T0 + 35) == [beat]

    job_store.forget_worker(beat.name)
    assert job_store.list_workers(seen_since=T0) == [second]


def test_the_queue_depth_by_model_counts_queued_jobs_only(job_store: JobStore) -> None:
    other = "qwen-image-edit-2511"
    job_store.insert_jobs(
        [
            NewJob(job=new_job("job_1")),
            NewJob(job=new_job("job_2")),
            NewJob(job=replace(new_job("job_3"), model=other)),
        ]
    )
    assert job_store.claim_next(T0 + 1) is not None  # job_1 runs
    assert job_store.queued_by_model() == {"qwen-edit-multiangle-2511": 1, other: 1}


# webhooks: the outbox --------------------------------------------------------------------------------------

HOOK = WebhookTarget(url="https://hooks.example.com/r", events=("completed",), base_url="https://api.test")


def hooked_job(job_id: str, events: tuple[str, ...] = ("completed",), **fields: Any) -> Job:
    return replace(new_job(job_id, **fields), webhook=replace(HOOK, events=events))


def types(store: JobStore, job_id: str) -> list[str]:
    return [delivery.type for delivery in store.webhook_deliveries(job_id)]


def test_a_job_keeps_its_webhook_and_its_terminal_status_writes_one_delivery(job_store: JobStore) -> None:
    job = hooked_job("job_1")
    job_store.insert_jobs([NewJob(job=job), NewJob(job=new_job("job_plain"))])
    assert job_store.get_job("job_1") == job
    assert job_store.claim_next(T0 + 1) is not None  # processing: not asked for
    assert job_store.webhook_deliveries("job_1") == []
    assert not job_store.set_progress("job_1", 2, 0.5, webhook_at=T0 + 1)  # fenced: no row either
    job_store.finish("job_1", 1, JobStatus.SUCCEEDED, T0 + 2)
    [delivery] = job_store.webhook_deliveries("job_1")
    assert delivery.id.startswith("evt_")
    assert (delivery.owner, delivery.url, delivery.type) == ("owner-1", HOOK.url, "job.succeeded")
    assert (delivery.attempts, delivery.next_attempt_at, delivery.payload) == (0, T0 + 2, None)
    assert job_store.finish("job_1", 1, JobStatus.FAILED, T0 + 3) is None  # a fenced write adds nothing
    assert len(job_store.webhook_deliveries("job_1")) == 1
    job_store.claim_next(T0 + 4)
    job_store.finish("job_plain", 1, JobStatus.SUCCEEDED, T0 + 5)
    assert job_store.webhook_deliveries("job_plain") == []


def test_progress_subscribers_hear_every_status_change_and_throttled_progress(job_store: JobStore) -> None:
    job_store.insert_jobs([NewJob(job=hooked_job("job_1", ("progress",)))])
    job_store.claim_next(T0 + 1)
    assert job_store.set_progress("job_1", 1, 0.3)  # no webhook_at: the service did not ask for an event
    assert job_store.set_progress("job_1", 1, 0.6, webhook_at=T0 + 6)
    job_store.recover(T0 + 7, max_attempts=3)  # back to the queue: no event
    job_store.claim_job("job_1", T0 + 8, max_attempts=3)
    job_store.cancel("job_1", T0 + 9)
    assert job_store.release("job_1", 2, T0 + 10)  # the requested cancel wins
    assert types(job_store, "job_1") == ["job.processing", "job.progress", "job.processing", "job.canceled"]


def test_a_queued_job_fails_straight_from_the_queue_with_its_events_and_a_started_one_stays(
    job_store: JobStore,
) -> None:
    model, other = "qwen-edit-multiangle-2511", "qwen-image-edit-2511"
    job_store.insert_jobs(
        [
            NewJob(job=hooked_job("job_1", ("progress",))),  # hears every status change
            NewJob(job=hooked_job("job_2")),
            NewJob(job=new_job("job_3")),
            NewJob(job=new_job("job_4", model=other)),
        ]
    )
    assert job_store.queued_job_ids(model, 10) == ["job_1", "job_2", "job_3"]
    assert job_store.queued_job_ids(model, 2) == ["job_1", "job_2"]
    error = JobError(code="model_unavailable", message="model gone", hint="submit it again")

    failed = job_store.fail_queued("job_1", error, T0 + 1)
    assert failed is not None
    assert (failed.status, failed.error, failed.finished_at, failed.started_at) == (
        JobStatus.FAILED,
        error,
        T0 + 1,
        None,
    )
    assert [change.status for change in failed.history] == [JobStatus.QUEUED, JobStatus.FAILED]
    assert (failed.outputs, failed.attempt) == ((), 1)
    assert job_store.get_job("job_1") == failed
    assert types(job_store, "job_1") == ["job.failed"]  # no job.processing: it never ran
    assert job_store.fail_queued("job_2", error, T0 + 1) is not None
    assert types(job_store, "job_2") == ["job.failed"]

    assert job_store.fail_queued("job_1", error, T0 + 2) is None  # ended: stays as it ended
    assert job_store.get_job("job_1") == failed
    running = job_store.claim_next(T0 + 2)
    assert running is not None
    assert running.id == "job_3"
    assert job_store.fail_queued("job_3", error, T0 + 3) is None  # started: its runner ends it
    assert job_store.get_job("job_3") == running
    assert job_store.fail_queued("job_missing", error, T0 + 3) is None
    assert job_store.queued_job_ids(model, 10) == []
    assert job_store.queued_job_ids(other, 10) == ["job_4"]


def test_a_queued_job_canceled_and_one_failed_at_recovery_write_their_events(job_store: JobStore) -> None:
    job_store.insert_jobs([NewJob(job=hooked_job("job_1")), NewJob(job=hooked_job("job_2"))])
    job_store.cancel("job_1", T0 + 1)
    job_store.claim_next(T0 + 2)
    job_store.recover(T0 + 3, max_attempts=1)
    assert types(job_store, "job_1") == ["job.canceled"]
    assert types(job_store, "job_2") == ["job.failed"]


def test_the_delivery_row_exists_if_and_only_if_the_status_change_committed(
    job_store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_module = sys.modules[type(job_store).__module__]
    job_store.insert_jobs([NewJob(job=hooked_job("job_1"))])
    running = job_store.claim_next(T0 + 1)
    with monkeypatch.context() as patch:  # the outbox insert fails: the status change must not stay
        patch.setattr(
            store_module,
            "INSERT_DELIVERY",
            "INSERT INTO no_such_table VALUES (" + ",".join(["{0}"] * 7) + ")",
        )
        with pytest.raises(Exception, match="no_such_table"):
            job_store.finish("job_1", 1, JobStatus.SUCCEEDED, T0 + 2)
    assert job_store.get_job("job_1") == running
    assert job_store.webhook_deliveries("job_1") == []
    done = job_store.finish("job_1", 1, JobStatus.SUCCEEDED, T0 + 3)
    assert done is not None
    assert done.status == JobStatus.SUCCEEDED
    assert types(job_store, "job_1") == ["job.succeeded"]


def test_a_runpod_batch_writes_one_terminal_delivery_whichever_item_ends_first(job_store: JobStore) -> None:
    target = replace(HOOK, flavor="runpod")
    jobs = [replace(new_job(f"job_{n}", batch_id="batch_1"), webhook=target) for n in (1, 2)]
    job_store.insert_jobs([NewJob(job=job) for job in jobs])
    job_store.claim_next(T0 + 1)
    job_store.claim_next(T0 + 1)
    job_store.finish("job_1", 1, JobStatus.SUCCEEDED, T0 + 2)
    job_store.finish("job_2", 1, JobStatus.SUCCEEDED, T0 + 3)
    assert types(job_store, "job_1") == ["job.succeeded"]
    assert job_store.webhook_deliveries("job_2") == []


def test_a_claim_leaves_out_the_deliveries_of_busy_keys_and_receivers(job_store: JobStore) -> None:
    """The sender's busy receivers are origins as URLs start: a longer port or host is another receiver."""
    hooks = {
        "job_1": ("owner-a", "http://hooks.test:81/r"),
        "job_2": ("owner-b", "http://hooks.test:81?x=1"),
        "job_3": ("owner-b", "http://hooks.test:810/r"),
        "job_4": ("owner-b", "http://hooks.test:81.evil.test/r"),
        "job_5": ("owner-c", "https://other.test/r"),
    }
    for number, (job_id, (owner, url)) in enumerate(hooks.items()):
        job = replace(new_job(job_id, owner=owner), webhook=replace(HOOK, url=url))
        job_store.insert_jobs([NewJob(job=job)])
        job_store.cancel(job_id, T0 + number)
    claimed = job_store.claim_webhook_deliveries(
        T0 + 10, 10, 60, skip_owners=["owner-c"], skip_origins=["http://hooks.test:81"]
    )
    assert [delivery.job_id for delivery in claimed] == ["job_3", "job_4"]
    rest = job_store.claim_webhook_deliveries(T0 + 10, 10, 60)
    assert [delivery.job_id for delivery in rest] == ["job_1", "job_2", "job_5"]  # left where they were


def test_deliveries_are_leased_retried_and_never_claimed_once_done(job_store: JobStore) -> None:
    job_store.insert_jobs([NewJob(job=hooked_job(f"job_{n}")) for n in (1, 2)])
    for n in (1, 2):
        job_store.cancel(f"job_{n}", T0 + n)
    first = job_store.claim_webhook_deliveries(T0 + 5, limit=1, lease_s=60)
    assert [d.job_id for d in first] == ["job_1"]
    assert [d.job_id for d in job_store.claim_webhook_deliveries(T0 + 5, limit=5, lease_s=60)] == ["job_2"]
    assert job_store.claim_webhook_deliveries(T0 + 6, limit=5, lease_s=60) == []  # both leased
    job_store.record_webhook_attempt(first[0].id, T0 + 7, payload="{}", error="HTTP 500", retry_at=T0 + 30)
    job_store.postpone_webhook_delivery(job_store.webhook_deliveries("job_2")[0].id, T0 + 100)
    assert job_store.claim_webhook_deliveries(T0 + 29, limit=5, lease_s=60) == []
    [again] = job_store.claim_webhook_deliveries(T0 + 30, limit=5, lease_s=60)
    assert (again.id, again.attempts, again.payload, again.last_error) == (first[0].id, 1, "{}", "HTTP 500")
    job_store.record_webhook_attempt(again.id, T0 + 31, payload="{}", error=None, retry_at=None)
    [done] = job_store.webhook_deliveries("job_1")
    assert (done.attempts, done.delivered_at, done.next_attempt_at) == (2, T0 + 31, None)
    assert done.last_error is None
    [gone] = job_store.claim_webhook_deliveries(T0 + 200, limit=5, lease_s=60)  # only job_2's, due again
    job_store.record_webhook_attempt(gone.id, T0 + 201, payload="{}", error="HTTP 410 Gone", retry_at=None)
    [given_up] = job_store.webhook_deliveries("job_2")
    assert (given_up.given_up_at, given_up.delivered_at, given_up.next_attempt_at) == (T0 + 201, None, None)
    assert job_store.claim_webhook_deliveries(T0 + 10_000, limit=5, lease_s=60) == []


def test_instances_claiming_deliveries_at_once_never_take_one_twice(open_store: StoreOpener) -> None:
    stores = [open_store() for _ in range(3)]
    stores[0].insert_jobs([NewJob(job=hooked_job(f"job_{n:02}")) for n in range(40)])
    for n in range(40):
        stores[0].cancel(f"job_{n:02}", T0 + 1)

    def claim_all(store: JobStore) -> list[str]:
        claimed: list[str] = []
        while batch := store.claim_webhook_deliveries(T0 + 2, limit=3, lease_s=60):
            claimed += [delivery.job_id for delivery in batch]
        return claimed

    claims = at_once(*(partial(claim_all, store) for store in stores))
    assert sorted(job_id for claimed in claims for job_id in claimed) == [f"job_{n:02}" for n in range(40)]


def test_a_webhook_secret_is_made_once_and_a_rotated_one_signs_for_the_overlap(
    open_store: StoreOpener,
) -> None:
    first, second = open_store(), open_store()
    [secret] = first.webhook_secrets("key_1", T0)
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert second.webhook_secrets("key_1", T0 + 1) == [secret]
    assert first.webhook_secrets("key_2", T0) != [secret]
    new = second.rotate_webhook_secret("key_1", T0 + 2, overlap_s=100)
    assert first.webhook_secrets("key_1", T0 + 3) == [new, secret]
    assert first.webhook_secrets("key_1", T0 + 102) == [new]


def test_queued_jobs_with_time_limits_are_found_oldest_first(job_store: JobStore) -> None:
    limits = TimeLimits(total_s=60)
    jobs = [
        replace(new_job("job_1"), limits=limits),
        new_job("job_2"),
        replace(new_job("job_3"), limits=TimeLimits(run_s=5)),
        replace(new_job("job_4"), limits=limits),
    ]
    job_store.insert_jobs([NewJob(job=job) for job in jobs])
    job_store.cancel("job_4", T0 + 1)  # ended: no longer queued
    found = job_store.queued_with_time_limits(limit=10)
    assert [(job.id, job.limits) for job in found] == [("job_1", limits), ("job_3", TimeLimits(run_s=5))]
    assert [job.id for job in job_store.queued_with_time_limits(limit=1)] == ["job_1"]
