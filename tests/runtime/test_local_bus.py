"""The embedded event bus: events reach only the job's subscribers, work wakes a waiting runner, a cancel
reaches the flag of the job being run."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from reangle.core.jobs import Job, JobEvent, JobKind, JobStatus
from reangle.runtime.local_bus import LocalEventBus


def progress(job_id: str, value: float) -> JobEvent:
    return JobEvent(job_id=job_id, kind="progress", progress={"progress": value})


def test_an_event_reaches_the_subscribers_of_its_job_only_while_they_listen() -> None:
    async def scenario() -> None:
        bus = LocalEventBus()
        with (
            bus.subscribe("job_a") as first,
            bus.subscribe("job_a") as second,
            bus.subscribe("job_b") as other,
        ):
            bus.publish(progress("job_a", 0.5))
            assert first.get_nowait() == second.get_nowait() == progress("job_a", 0.5)
            assert other.empty()
        bus.publish(progress("job_a", 1.0))  # nobody listens any more: dropped, no error
        assert first.empty()

    asyncio.run(scenario())


def test_work_wakes_a_waiting_runner_at_once_and_waiting_ends_after_the_timeout_otherwise() -> None:
    async def scenario() -> tuple[float, float]:
        bus = LocalEventBus()
        started = time.monotonic()
        await bus.wait_for_work(0.05)
        idle = time.monotonic() - started

        waiting = asyncio.create_task(bus.wait_for_work(30))
        await asyncio.sleep(0.01)
        started = time.monotonic()
        bus.work_arrived()
        await asyncio.wait_for(waiting, 5)
        return idle, time.monotonic() - started

    idle, woken = asyncio.run(scenario())
    assert idle >= 0.05
    assert woken < 5


def test_a_stop_reaches_the_flag_of_a_job_being_run_and_a_forgotten_job_gets_a_fresh_flag() -> None:
    bus = LocalEventBus()
    bus.request_stop("job_not_here")  # a job this process does not run: nothing to set
    assert not bus.stop_flag("job_not_here").is_set()

    flag = bus.stop_flag("job_a")
    assert bus.stop_flag("job_a") is flag
    bus.request_stop("job_a")
    assert flag.is_set()

    bus.forget("job_a")
    assert not bus.stop_flag("job_a").is_set()


def test_a_recheck_passes_on_the_end_another_process_stored_and_nothing_else() -> None:
    stored = {
        "job_canceled": Job(
            id="job_canceled", owner="o", model="m", kind=JobKind.EDIT, input={}, created_at=1.0
        ),
        "job_running": Job(
            id="job_running", owner="o", model="m", kind=JobKind.EDIT, input={}, created_at=1.0
        ),
    }

    async def scenario() -> None:
        bus = LocalEventBus(stored.get)  # a fake store: a dict of the jobs as another process left them
        with bus.subscribe("job_canceled") as watcher, bus.subscribe("job_running") as other:
            await bus.recheck()
            assert watcher.empty()  # still queued: nothing to pass on
            stored["job_canceled"] = replace(stored["job_canceled"], status=JobStatus.CANCELED)
            stored["job_running"] = replace(stored["job_running"], status=JobStatus.PROCESSING)
            await bus.recheck()
            event = watcher.get_nowait()
            assert (event.kind, event.job) == ("status", stored["job_canceled"])
            assert other.empty()  # a change short of an end is this process's own to publish

    asyncio.run(scenario())


def test_an_event_published_from_a_worker_thread_reaches_a_waiting_subscriber() -> None:
    async def scenario() -> JobEvent:
        bus = LocalEventBus()
        with bus.subscribe("job_a") as queue:
            waiting = asyncio.ensure_future(queue.get())
            await asyncio.sleep(0)  # the subscriber waits on the loop
            # a read in asyncio.to_thread may end a job and publish its end
            await asyncio.to_thread(bus.publish, progress("job_a", 1.0))
            async with asyncio.timeout(5):
                return await waiting

    # debug mode refuses an event loop's non-thread-safe calls from another thread
    assert asyncio.run(scenario(), debug=True) == progress("job_a", 1.0)
