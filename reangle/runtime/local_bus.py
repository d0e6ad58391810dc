"""The embedded default's event bus: everything in one process, so plain asyncio queues and events."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import defaultdict
from collections.abc import Iterator

from reangle.core.jobs import JobEvent
from reangle.core.ports import ChangeWatcher


class LocalEventBus:
    def __init__(self) -> None:
        self._subscribers: dict[str, set[asyncio.Queue[JobEvent]]] = defaultdict(set)
        self._work = asyncio.Event()
        self._stop_flags: dict[str, threading.Event] = {}

    def publish(self, event: JobEvent) -> None:
        for queue in self._subscribers.get(event.job_id, ()):
            queue.put_nowait(event)

    @contextlib.contextmanager
    def subscribe(self, job_id: str) -> Iterator[asyncio.Queue[JobEvent]]:
        queue: asyncio.Queue[JobEvent] = asyncio.Queue()
        self._subscribers[job_id].add(queue)
        try:
            yield queue
        finally:
            self._subscribers[job_id].discard(queue)
            if not self._subscribers[job_id]:
                del self._subscribers[job_id]

    def has_subscribers(self, job_id: str) -> bool:
        return job_id in self._subscribers

    def subscribed_jobs(self) -> list[str]:
        return list(self._subscribers)

    async def listen(self) -> None:
        """Nothing comes from other processes."""

    def watch(self, watcher: ChangeWatcher) -> None:
        """Reads are in-process here: nothing is worth keeping, the watcher stays disabled."""

    def close(self) -> None:
        pass

    def work_arrived(self) -> None:
        self._work.set()

    async def wait_for_work(self, timeout_s: float) -> None:
        self._work.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._work.wait()

    def stop_flag(self, job_id: str) -> threading.Event:
        return self._stop_flags.setdefault(job_id, threading.Event())

    def request_stop(self, job_id: str) -> None:
        if job_id in self._stop_flags:
            self._stop_flags[job_id].set()

    def forget(self, job_id: str) -> None:
        self._stop_flags.pop(job_id, None)
