"""The heartbeat's check of cancels another process stored (`reangle admin cancel`, another API replica): each
beat reads the jobs the process holds, the remote ones it follows too, and stops those with a cancel."""

from __future__ import annotations

import asyncio

from reangle.core.jobs import Job, JobKind, JobStatus
from reangle.core.ports import WorkerStatus
from reangle.engine.fake import FakeEngine
from reangle.runtime.heartbeat import Heartbeat, JobStops
from reangle.runtime.local_bus import LocalEventBus
from reangle.settings import Settings


class FakeJobRows:
    """A fake of the two store calls a beat makes (the stores themselves are tested in tests/store)."""

    def __init__(self, jobs: list[Job]) -> None:
        self.jobs = {job.id: job for job in jobs}
        self.recorded: list[WorkerStatus] = []

    def record_worker(self, worker: WorkerStatus) -> None:
        self.recorded.append(worker)

    def get_job(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)


def processing(job_id: str, *, cancel_requested: bool) -> Job:
    return Job(
        id=job_id,
        owner="key_a",
        model="m",
        kind=JobKind.EDIT,
        input={},
        created_at=1.0,
        status=JobStatus.PROCESSING,
        cancel_requested=cancel_requested,
    )


def test_a_beat_stops_every_job_held_whose_cancel_is_stored_the_remote_ones_too() -> None:
    rows = FakeJobRows(
        [
            processing("job_rendered", cancel_requested=False),
            processing("job_remote", cancel_requested=True),
            processing("job_other_remote", cancel_requested=False),
        ]
    )
    held = ["job_rendered", "job_remote", "job_other_remote"]
    events = LocalEventBus()
    flags = {job_id: events.stop_flag(job_id) for job_id in held}  # made by the runner as it took each job
    heartbeat = Heartbeat(
        rows,  # type: ignore[arg-type]
        FakeEngine(Settings()),
        [],
        lambda: "job_rendered",
        stops=JobStops(events, lambda: list(held)),
    )
    asyncio.run(heartbeat.beat())
    assert [job_id for job_id, flag in flags.items() if flag.is_set()] == ["job_remote"]
    assert rows.recorded[0].job_id == "job_rendered"  # the workers table still names the job rendered

    rows.jobs["job_rendered"] = processing("job_rendered", cancel_requested=True)
    asyncio.run(heartbeat.beat())
    assert [job_id for job_id, flag in flags.items() if flag.is_set()] == ["job_rendered", "job_remote"]


def test_a_job_that_ended_before_its_stop_leaves_no_flag_behind() -> None:
    rows = FakeJobRows([processing("job_ended", cancel_requested=True)])
    events = LocalEventBus()
    heartbeat = Heartbeat(
        rows,  # type: ignore[arg-type]
        FakeEngine(Settings()),
        [],
        lambda: None,
        stops=JobStops(events, lambda: []),  # the runner let go of it after the read
    )
    asyncio.run(heartbeat.beat())
    assert not events.stop_flag("job_ended").is_set()  # a later run of it starts with a fresh flag
