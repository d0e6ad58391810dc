"""A job's time limits (RunPod's `policy`) on the embedded runner: a job past its execution timeout or its ttl
is stopped and ends failed as `timed_out`; a cancel stays a cancel; a finished render is stored whatever the
time. Runs the real runner and JobService on SQLite with the fake engine (see test_local_runner)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from reangle.core.jobs import TIMED_OUT_CODE, Job, JobStatus, TimeLimits
from reangle.core.models import CAMERA_EDIT
from reangle.core.service import SubmitRequest
from reangle.store.sqlite import SqliteStore
from tests.runtime.test_local_runner import OWNER, FakeRecordingEngine, Rig, ended, happens, rig_on, run

#: a fake step of 0.05 s: a 40-step job runs about 2 s, well past a 0.3 s limit
STEP_S = 0.05


def slow_rig(tmp_path: Path, store: SqliteStore) -> Rig:
    return rig_on(tmp_path, store, FakeRecordingEngine(step_seconds=STEP_S))


async def submit(rig: Rig, seed: int, limits: TimeLimits | None, **fields: Any) -> Job:
    data = {"images": [rig.image_id], "width": 32, "height": 32, "seed": seed} | fields
    request = SubmitRequest(model=CAMERA_EDIT, input=data, limits=limits)
    return await rig.service.submit(OWNER, request)


def test_a_job_past_its_execution_timeout_is_stopped_and_times_out(
    tmp_path: Path, store: SqliteStore
) -> None:
    rig = slow_rig(tmp_path, store)

    async def scenario() -> None:
        limited = await submit(rig, 1, TimeLimits(run_s=0.3), num_inference_steps=40)
        after = await submit(rig, 2, None, num_inference_steps=2)
        async with rig.runner():
            timed_out, succeeded = await ended(rig, limited), await ended(rig, after)

        assert timed_out.status == JobStatus.FAILED
        assert timed_out.error is not None
        assert timed_out.error.code == TIMED_OUT_CODE
        assert timed_out.error.message == "the job ran longer than its run time limit (0.3 s)"
        assert timed_out.outputs == ()
        assert 1 not in rig.engine.images  # stopped at a step, not run to its end (40 steps, 2 s)
        assert succeeded.status == JobStatus.SUCCEEDED  # the runner goes on

    run(scenario())


def test_a_job_still_queued_when_its_ttl_passes_times_out_without_running(
    tmp_path: Path, store: SqliteStore
) -> None:
    rig = rig_on(tmp_path, store, FakeRecordingEngine())

    async def scenario() -> None:
        job = await submit(rig, 1, TimeLimits(total_s=5.0))
        rig.service.clock = lambda: time.time() + 10  # as if it had waited in the queue for 10 s
        async with rig.runner():
            timed_out = await ended(rig, job)

        assert timed_out.status == JobStatus.FAILED
        assert timed_out.error is not None
        assert timed_out.error.code == TIMED_OUT_CODE
        assert "total time limit (5 s from its submission)" in timed_out.error.message
        assert not rig.engine.render_started(1).is_set()

    run(scenario())


def test_a_cancel_of_a_limited_job_is_a_cancel(tmp_path: Path, store: SqliteStore) -> None:
    rig = slow_rig(tmp_path, store)

    async def scenario() -> None:
        job = await submit(rig, 1, TimeLimits(run_s=60, total_s=600), num_inference_steps=40)
        async with rig.runner():
            assert await happens(rig.engine.render_started(1))
            rig.service.cancel(OWNER, job.id)
            canceled = await ended(rig, job)

        assert (canceled.status, canceled.error) == (JobStatus.CANCELED, None)

    run(scenario())


def test_a_render_done_within_its_limit_is_stored_even_past_it(tmp_path: Path, store: SqliteStore) -> None:
    rig = rig_on(tmp_path, store, FakeRecordingEngine())

    async def scenario() -> None:
        job = await submit(rig, 1, TimeLimits(run_s=0.5))
        rig.assets.gated.add(job.id)
        async with rig.runner():
            assert await happens(rig.assets.storing)  # rendered; its output waits at the gate
            rig.service.clock = lambda: time.time() + 60
            rig.assets.open_gate()
            done = await ended(rig, job)

        assert done.status == JobStatus.SUCCEEDED
        assert len(done.outputs) == 1

    run(scenario())


def test_a_queued_job_past_its_ttl_ends_when_read_with_no_runner_to_take_it(
    tmp_path: Path, store: SqliteStore
) -> None:
    rig = rig_on(tmp_path, store, FakeRecordingEngine())

    async def scenario() -> None:
        read_first, unlimited = await submit(rig, 1, TimeLimits(total_s=5.0)), await submit(rig, 2, None)
        polled = await submit(rig, 3, TimeLimits(total_s=5.0))
        listed = await submit(rig, 4, TimeLimits(total_s=5.0))
        assert rig.service.get(OWNER, read_first.id).status == JobStatus.QUEUED  # within its ttl
        ended_jobs: list[Job] = []
        rig.service.finished_hooks.append(ended_jobs.append)
        rig.service.clock = lambda: time.time() + 10  # no runner: it would wait in the queue for ever

        read = rig.service.get(OWNER, read_first.id)
        (shown, _) = rig.service.get_with_outputs(OWNER, polled.id)
        (in_list,) = [job for job in rig.service.list_jobs(OWNER)[0] if job.id == listed.id]

        for job in (read, shown, in_list):
            assert job.status == JobStatus.FAILED
            assert job.error is not None
            assert job.error.code == TIMED_OUT_CODE
            assert "total time limit (5 s from its submission)" in job.error.message
        assert [job.id for job in ended_jobs] == [read_first.id, polled.id, listed.id]  # each ended once
        assert rig.service.get(OWNER, read_first.id).status == JobStatus.FAILED
        stored = store.get_job(polled.id)
        assert stored is not None
        assert stored.status == JobStatus.FAILED
        assert rig.service.get(OWNER, unlimited.id).status == JobStatus.QUEUED  # no limit: waits

    run(scenario())


def test_the_sweep_ends_queued_jobs_past_their_ttl_without_any_read(
    tmp_path: Path, store: SqliteStore
) -> None:
    rig = rig_on(tmp_path, store, FakeRecordingEngine())

    async def scenario() -> None:
        limited, unlimited = await submit(rig, 1, TimeLimits(total_s=5.0)), await submit(rig, 2, None)
        within = await submit(rig, 3, TimeLimits(total_s=600.0))
        ended_jobs: list[Job] = []
        rig.service.finished_hooks.append(ended_jobs.append)  # its webhook is written, its streams told
        rig.service.clock = lambda: time.time() + 10
        rig.service.sweep()

        assert [job.id for job in ended_jobs] == [limited.id]
        statuses = {
            job.id: stored.status for job in (limited, unlimited, within) if (stored := store.get_job(job.id))
        }
        assert statuses == {
            limited.id: JobStatus.FAILED,
            unlimited.id: JobStatus.QUEUED,
            within.id: JobStatus.QUEUED,
        }

    run(scenario())
