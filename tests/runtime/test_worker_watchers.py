"""A scale-out worker's watchers (its checks for stalled and orphaned jobs) stop when the worker restarts
after a database outage, even when the cancel is lost inside a database call: one that lived on had held up
the restart for good, and the worker took no job again while its heartbeat said it was alive."""

from __future__ import annotations

import asyncio
import contextlib

import psycopg

from reangle.runtime.worker import stop_watchers, watch


def test_a_watcher_whose_cancel_is_lost_in_a_database_call_still_stops() -> None:
    checks: list[str] = []

    async def check_losing_its_cancel() -> None:
        """A fake database call that completes as the cancel lands, and so drops it."""
        checks.append("check")
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.2)

    async def scenario() -> None:
        stop = asyncio.Event()
        watcher = asyncio.create_task(
            watch(stop, 0.01, check_losing_its_cancel, "check"), name="stalled jobs"
        )
        while not checks:
            await asyncio.sleep(0.01)
        async with asyncio.timeout(5):  # a cancel alone: the watcher went on checking for ever
            await stop_watchers([watcher], stop)
        assert watcher.done()

    asyncio.run(scenario())
    assert len(checks) == 1


def test_a_database_error_in_a_check_is_one_line_and_the_checks_go_on(caplog) -> None:  # type: ignore[no-untyped-def]
    calls: list[int] = []

    async def failing_check() -> None:
        calls.append(1)
        raise psycopg.OperationalError("connection refused")

    async def scenario() -> None:
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch(stop, 0.01, failing_check, "check for stalled jobs"))
        while len(calls) < 3:
            await asyncio.sleep(0.01)
        await stop_watchers([watcher], stop)

    asyncio.run(scenario())
    assert "could not check for stalled jobs: connection refused" in caplog.text
