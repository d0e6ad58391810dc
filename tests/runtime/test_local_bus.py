"""The embedded event bus: events reach only the job's subscribers, work wakes a waiting runner, a cancel
reaches the flag of the job being run."""

from __future__ import annotations

import asyncio
import time

from reangle.core.jobs import JobEvent
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
