"""What the upkeep loops log while the store refuses them (another process's lock, a full disk): a passing
state is one WARNING line, not a traceback, and not one line each heartbeat; a bug keeps its traceback."""

from __future__ import annotations

import asyncio
import logging

import pytest

from reangle.core.ports import WorkerStatus
from reangle.engine.fake import FakeEngine
from reangle.errors import Unavailable
from reangle.runtime import heartbeat
from reangle.runtime.embedded import sweep_forever
from reangle.runtime.heartbeat import Heartbeat
from reangle.settings import Settings

LOCKED = "the job database cannot be used now: database is locked"


class FailingSweeps:
    """A service whose sweeps meet a locked store, then a bug, then succeed."""

    def __init__(self) -> None:
        self.outcomes: list[Exception | None] = [Unavailable(LOCKED), RuntimeError("a bug"), None]

    def sweep(self) -> tuple[int, int]:
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome
        return 0, 0


def test_a_sweep_that_meets_an_unavailable_store_is_one_warning_and_a_bug_keeps_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = FailingSweeps()

    async def sweep_three_times() -> None:
        task = asyncio.create_task(sweep_forever(service, 0))  # type: ignore[arg-type]
        while service.outcomes:
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    with caplog.at_level(logging.INFO, "reangle.server"):
        asyncio.run(asyncio.wait_for(sweep_three_times(), 10))
    lines = [
        (record.levelname, record.getMessage(), record.exc_info is not None) for record in caplog.records
    ]
    assert lines[:2] == [
        ("WARNING", f"retention sweep skipped: {LOCKED}; trying again in 0 s", False),
        ("ERROR", "retention sweep failed", True),
    ]


class RefusingStore:
    """The one store call a beat makes without stops, refused while `refusing`."""

    def __init__(self) -> None:
        self.refusing = False

    def record_worker(self, worker: WorkerStatus) -> None:
        if self.refusing:
            raise Unavailable("the job database cannot be used now: database or disk is full")


def test_a_store_refusing_the_heartbeat_is_one_line_then_quiet_and_one_line_when_it_takes_it_again(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RefusingStore()
    beats = Heartbeat(store, FakeEngine(Settings()), [], lambda: None, name="box:1")  # type: ignore[arg-type]

    def beat(times: int = 1) -> list[tuple[str, str]]:
        caplog.clear()
        for _ in range(times):
            asyncio.run(beats.beat())
        return [(record.levelname, record.getMessage()) for record in caplog.records]

    with caplog.at_level(logging.INFO, "reangle.worker"):
        assert beat() == []
        store.refusing = True
        assert beat(5) == [
            (
                "WARNING",
                "heartbeat of box:1 not recorded: the job database cannot be used now: database or disk is "
                "full; trying again every 2 s",
            )
        ]
        monkeypatch.setattr(heartbeat, "REFUSAL_REMINDER_S", 0.0)  # as if a long while has passed
        [(level, reminder)] = beat()
        assert level == "WARNING"
        assert reminder.startswith("heartbeat of box:1 still not recorded after ")
        store.refusing = False
        assert beat(3) == [("INFO", "heartbeat of box:1 recorded again")]
        assert beats.refusal is None
