"""The embedded default's event bus: everything in one process, so plain asyncio queues and events. The one
change made from outside, a cancel by `reangle admin cancel`, reaches the subscribers through a recheck of
the stored jobs they listen to."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator

from reangle.core.jobs import Job, JobEvent
from reangle.core.ports import ChangeWatcher
from reangle.errors import ReangleError

log = logging.getLogger("reangle.server")

#: How often the stored status of the jobs listened to is read back, for ends written by another process.
RECHECK_S = 5.0


class LocalEventBus:
    def __init__(self, read_job: Callable[[str], Job | None] | None = None) -> None:
        """`read_job` reads a job from the store, for `recheck`; without it nothing is re-read."""
        self._read_job = read_job
        #: the event loop of the subscribers (they subscribe on it)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscribers: dict[str, set[asyncio.Queue[JobEvent]]] = defaultdict(set)
        self._work = asyncio.Event()
        self._stop_flags: dict[str, threading.Event] = {}

    def publish(self, event: JobEvent) -> None:
        """Deliver `event` to the job's subscribers; from a worker thread (a read in `asyncio.to_thread` may
        end a job: JobService._past_ttl_ended), through their event loop, as asyncio queues are not
        thread-safe."""
        if not self._subscribers.get(event.job_id):
            return
        loop = self._loop
        if loop is not None and _running_loop() is not loop:
            loop.call_soon_threadsafe(self._deliver, event)
        else:
            self._deliver(event)

    def _deliver(self, event: JobEvent) -> None:
        for queue in self._subscribers.get(event.job_id, ()):
            queue.put_nowait(event)

    @contextlib.contextmanager
    def subscribe(self, job_id: str) -> Iterator[asyncio.Queue[JobEvent]]:
        self._loop = _running_loop() or self._loop
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
        """Until cancelled: every RECHECK_S, `recheck`."""
        if self._read_job is None:
            return
        while True:
            await asyncio.sleep(RECHECK_S)
            try:
                await self.recheck()
            except Exception:  # the next recheck may fare better; a failed listener would stop the server
                log.exception("event bus: the recheck of the jobs listened to failed")

    async def recheck(self) -> None:
        """Pass on the end of each job listened to here that ended in the store without an event here (another
        process canceled it): its subscribers wait for that end. An end this process published already
        ended its subscriptions."""
        job_ids = self.subscribed_jobs()
        if self._read_job is None or not job_ids:
            return
        read_job = self._read_job
        try:
            jobs = await asyncio.to_thread(lambda: [read_job(job_id) for job_id in job_ids])
        except ReangleError as exc:
            log.warning("event bus: could not re-read the jobs listened to: %s", exc.message)
            return
        for job in jobs:
            if job is not None and job.status.is_terminal and self.has_subscribers(job.id):
                log.info("event bus: job %s ended in another process (%s); passing it on", job.id, job.status)
                self.publish(JobEvent(job_id=job.id, kind="status", job=job))

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


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # a worker thread
        return None
