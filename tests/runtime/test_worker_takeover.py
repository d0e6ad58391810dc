"""A scale-out worker whose job was taken over by another worker while this one was silent (its database
connection frozen, say: its heartbeats stopped, and after STALLED_S another worker ran the job again): once
its attempt ends, Procrastinate finds the run gone. That is one WARNING line, not an ERROR with a traceback.
Its Procrastinate registration was dropped meanwhile, so it registers again (one line, saying so) and takes
the next job."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from reangle.core.jobs import JobStatus
from reangle.settings import Settings
from tests.runtime.test_worker_runtime import Rig, happens, make_rig, run, working


@pytest.fixture
def rig(pg_url: str, tmp_path: Path, settings: Settings) -> Iterator[Rig]:
    made = make_rig(pg_url, tmp_path, settings, step_seconds=0.2)
    try:
        yield made
    finally:
        made.service.events.close()
        made.store.close()


def took_over_elsewhere(rig: Rig, job_id: str) -> None:
    """What the other workers do while this one is silent: the stalled check prunes its Procrastinate
    registration and hands the run on; another worker claims the job as attempt 2 (which fences this attempt
    out), completes it, and deletes its run (a successful run's row is deleted)."""
    with psycopg.connect(rig.url) as conn:
        conn.execute("DELETE FROM procrastinate_workers")
        conn.execute("DELETE FROM procrastinate_jobs WHERE args->>'job_id' = %s", (job_id,))
    again = rig.service.claim(job_id)
    assert again is not None
    assert again.attempt == 2
    assert rig.service.complete(again, (), {}) is not None


def test_the_end_of_a_job_another_worker_took_over_meanwhile_is_one_warning_line(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    job_id = ""

    async def scenario() -> None:
        nonlocal job_id
        job = await rig.submit(seed=1, num_inference_steps=5)  # 1 s of steps
        job_id = job.id
        rig.assets.gated.add(job.id)  # its outputs wait at the gate: its attempt ends after the takeover
        async with working(rig):
            await happens(lambda: rig.job(job.id).progress > 0)
            took_over_elsewhere(rig, job.id)
            rig.assets.open_gate()
            after = await rig.submit(seed=2, num_inference_steps=1)  # taken once the first attempt has ended
            await rig.until_status(after.id, JobStatus.SUCCEEDED)
            gc.collect()  # asyncio logs a task's exception nobody retrieved when the task is collected

    run(scenario())
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR] == []
    [taken_over] = [record for record in caplog.records if "took it over" in record.getMessage()]
    assert taken_over.levelno == logging.WARNING
    assert taken_over.getMessage() == (
        f"job {job_id}: another worker took it over while this one was silent; nothing this attempt wrote "
        "after that landed"
    )
    restarts = [record.getMessage() for record in caplog.records if "worker stopped" in record.getMessage()]
    assert restarts == [
        "worker stopped (its registration was dropped while it was silent: it registers again); starting "
        "again in 0.5 s"
    ]
    assert all(record.exc_info is None for record in caplog.records if record.name == "reangle.worker")
