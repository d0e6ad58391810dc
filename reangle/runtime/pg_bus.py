"""The scale-out event bus: PostgreSQL LISTEN/NOTIFY between every API replica and worker of a deployment.

A process delivers its own events to its own subscribers at once and sends them to the others on one channel,
tagged with its origin so that it skips its own echo. Sending happens on a thread of its own, so that an
unreachable database never stalls the event loop. A status notice carries only the job id: receivers read
the job from the store, so a notice never outgrows PostgreSQL's 8000-byte payload limit and never shows a
state older than the store's. Notices are not durable: while the listening connection is down, events are
missed, so after reconnecting the bus re-reads the status of every job someone here still listens to; and a
notice may be lost without the connection dropping, so every RECHECK_S the bus also re-reads those jobs and
passes on a status that changed unheard. The listening connection has TCP keepalives: a database gone silent
breaks it in seconds, and the bus reconnects. What waits to be sent is bounded: status and stop notices go
first (each one once while pending), progress notices are kept per job, the latest only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import threading
from collections import Counter, OrderedDict, deque
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from reangle.core.jobs import Job, JobEvent
from reangle.core.ports import ChangeWatcher, JobStore
from reangle.errors import ReangleError
from reangle.runtime.local_bus import LocalEventBus
from reangle.store.postgres import BoundedConnection, first_line

log = logging.getLogger("reangle.events")

CHANNEL = "reangle_events"
RECONNECT_S = (0.2, 0.5, 1.0, 2.0, 5.0)
CONNECT_TIMEOUT_S = 5
#: How often the jobs someone here listens to are read again, for a status whose notice was lost.
RECHECK_S = 5.0
#: The connections of the bus (the listening one only receives, so without keepalives a database host gone
#: silent would leave it waiting for good): probes after 5 s idle, every 2 s, and the connection broken when
#: 10 s pass without an answer to them (or to data sent). A setting the database URL names itself wins.
CONNECTION_OPTIONS: dict[str, int] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}
#: At most this many jobs' progress notices wait to be sent; beyond, the oldest is dropped (progress is
#: advisory, and the next one of that job supersedes it).
MAX_PENDING_PROGRESS = 1000


class PgEventBus:
    def __init__(self, conninfo: str, store: JobStore) -> None:
        self.conninfo, self.store = conninfo, store
        #: what the bus's own connections use: the URL with CONNECTION_OPTIONS
        self._connect_to = with_connection_options(conninfo)
        self.origin = secrets.token_hex(8)
        self._local = LocalEventBus()
        self._outbox = NoticeOutbox()
        self._sender: threading.Thread | None = None
        self._watchers: list[ChangeWatcher] = []
        #: the latest status published here of each job someone here listens to, as `_status_mark`
        self._published: dict[str, int] = {}
        #: set while the listening connection is up (tests and health checks wait on it)
        self.listening = asyncio.Event()

    # what this process does ---------------------------------------------------------------------------------

    def publish(self, event: JobEvent) -> None:
        self._changed(event.job_id)
        if event.job is not None and self._local.has_subscribers(event.job_id):
            self._note_published(event.job)
        self._local.publish(event)
        notice: dict[str, Any] = {"job_id": event.job_id, "kind": event.kind}
        if event.progress is not None:
            notice["progress"] = event.progress
        self._notify(notice)

    def subscribe(self, job_id: str) -> contextlib.AbstractContextManager[asyncio.Queue[JobEvent]]:
        return self._local.subscribe(job_id)

    def work_arrived(self) -> None:
        """Nothing to do: Procrastinate wakes the workers (its own NOTIFY when a job is deferred)."""

    async def wait_for_work(self, timeout_s: float) -> None:
        await asyncio.sleep(timeout_s)

    def stop_flag(self, job_id: str) -> threading.Event:
        return self._local.stop_flag(job_id)

    def request_stop(self, job_id: str) -> None:
        self._local.request_stop(job_id)
        self._notify({"job_id": job_id, "kind": "stop"})

    def forget(self, job_id: str) -> None:
        self._local.forget(job_id)

    def watch(self, watcher: ChangeWatcher) -> None:
        self._watchers.append(watcher)

    def _changed(self, job_id: str) -> None:
        for watcher in self._watchers:
            watcher.changed(job_id)

    def _hearing(self, hearing: bool) -> None:
        """Whatever was kept may have missed events; from now on it is kept only while they are heard."""
        for watcher in self._watchers:
            watcher.enabled = False
            watcher.clear()
            watcher.enabled = hearing

    def close(self) -> None:
        """Send what is queued, then stop the sending thread."""
        if self._sender is not None:
            self._outbox.close()
            self._sender.join(timeout=CONNECT_TIMEOUT_S + 1)
            self._sender = None

    def pending_notices(self) -> int:
        """How many notices wait to be sent."""
        return len(self._outbox)

    def _notify(self, notice: dict[str, Any]) -> None:
        payload = json.dumps(notice | {"origin": self.origin}, separators=(",", ":"))
        self._outbox.put(str(notice["job_id"]), str(notice["kind"]), payload)
        if self._sender is None:
            self._sender = threading.Thread(target=self._send_forever, name="reangle-events", daemon=True)
            self._sender.start()

    def _send_forever(self) -> None:
        """Each notice is tried on the open connection, then once more on a new one (a connection left over
        from before a database restart fails at its first use). A notice still not sent is logged and
        dropped: the job's state is in the store, and listeners re-read it when they reconnect."""
        connection: psycopg.Connection[Any] | None = None
        while (payload := self._outbox.take()) is not None:
            for last_try in (False, True):
                try:
                    if connection is None or connection.closed:
                        connection = BoundedConnection.connect(  # a wedged server holds no notice for long
                            self._connect_to, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
                        )
                    connection.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
                    break
                except psycopg.Error as exc:
                    if connection is not None:
                        connection.close()
                    connection = None
                    if last_try:
                        log.warning("event bus: could not send an event (%s)", exc)
        if connection is not None:
            connection.close()

    # what the other processes do ----------------------------------------------------------------------------

    async def listen(self) -> None:
        """Deliver the other processes' events here until cancelled, reconnecting whenever the connection
        drops, and re-reading every RECHECK_S the jobs listened to here."""
        recheck = asyncio.create_task(self._recheck_forever(), name="event bus recheck")
        try:
            await self._listen_forever()
        finally:
            recheck.cancel()
            await asyncio.gather(recheck, return_exceptions=True)

    async def open_listening_connection(self) -> psycopg.AsyncConnection[Any]:
        """A new connection listening on the channel (the caller closes it)."""
        connection = await psycopg.AsyncConnection.connect(
            self._connect_to, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
        )
        try:
            await connection.execute(f"LISTEN {CHANNEL}")
        except BaseException:
            await connection.close()
            raise
        return connection

    async def _listen_forever(self) -> None:
        failures = 0
        while True:
            try:
                async with await self.open_listening_connection() as connection:
                    self._hearing(True)
                    self.listening.set()
                    if failures:
                        log.info("event bus: listening again")
                        self._resync()
                    failures = 0
                    async for notice in connection.notifies():
                        self._deliver(notice.payload)
            except psycopg.Error as exc:
                self._hearing(False)
                self.listening.clear()
                wait = RECONNECT_S[min(failures, len(RECONNECT_S) - 1)]
                if failures == 0:
                    log.warning("event bus: lost the database (%s); reconnecting", first_line(exc))
                failures += 1
                await asyncio.sleep(wait)

    def _deliver(self, payload: str) -> None:
        try:
            notice = json.loads(payload)
            if notice.get("origin") == self.origin:
                return
            job_id, kind = str(notice["job_id"]), str(notice["kind"])
        except (ValueError, KeyError, TypeError):
            log.warning("event bus: ignored a malformed notice %r", payload[:200])
            return
        if kind == "stop":
            self._local.request_stop(job_id)
            return
        self._changed(job_id)
        if kind == "progress":
            self._local.publish(JobEvent(job_id=job_id, kind="progress", progress=notice.get("progress")))
        elif kind == "status" and self._local.has_subscribers(job_id):
            self._publish_stored_status(job_id)

    def _resync(self) -> None:
        """After missing notices: the stored status of every job someone here listens to."""
        for job_id in self._local.subscribed_jobs():
            self._publish_stored_status(job_id)

    def _publish_stored_status(self, job_id: str) -> None:
        try:
            job = self.store.get_job(job_id)
        except ReangleError as exc:  # the store away for a moment: the listener must live on
            log.warning("event bus: could not read job %s: %s", job_id, exc.message)
            return
        if job is not None:
            self._publish_here(job)

    def _publish_here(self, job: Job) -> None:
        self._note_published(job)
        self._local.publish(JobEvent(job_id=job.id, kind="status", job=job))

    def _note_published(self, job: Job) -> None:
        self._published[job.id] = max(_status_mark(job), self._published.get(job.id, 0))

    async def _recheck_forever(self) -> None:
        while True:
            await asyncio.sleep(RECHECK_S)
            try:
                await self.recheck()
            except Exception:  # the next recheck may fare better; the listener must live on regardless
                log.exception("event bus: the recheck of the jobs listened to failed")

    async def recheck(self) -> None:
        """Publish here the stored status of each job listened to here when it is later than the one last
        published here: its notice was lost. Of a job nothing was published of yet, only its end is
        published (its subscribers read its status when they subscribed; the end is what they wait for)."""
        job_ids = self._local.subscribed_jobs()
        for gone in self._published.keys() - set(job_ids):
            del self._published[gone]
        if not job_ids:
            return
        try:
            jobs = await asyncio.to_thread(self._read_jobs, job_ids)
        except ReangleError as exc:
            log.warning("event bus: could not re-read the jobs listened to: %s", exc.message)
            return
        for job in jobs:
            if not self._local.has_subscribers(job.id):
                continue
            last = self._published.get(job.id)
            if last is None and not job.status.is_terminal:
                self._note_published(job)
            elif last is None or _status_mark(job) > last:  # not older than one heard meanwhile, either
                log.info("event bus: job %s changed unheard (a notice was lost); passing it on", job.id)
                self._publish_here(job)

    def _read_jobs(self, job_ids: Sequence[str]) -> list[Job]:
        return [job for job_id in job_ids if (job := self.store.get_job(job_id)) is not None]


def with_connection_options(conninfo: str) -> str:
    """`conninfo` with those of CONNECTION_OPTIONS it does not set itself."""
    named = conninfo_to_dict(conninfo)
    return make_conninfo(
        conninfo, **{name: value for name, value in CONNECTION_OPTIONS.items() if name not in named}
    )


def _status_mark(job: Job) -> int:
    """Orders the statuses of a job: each status change adds to its history."""
    return len(job.history)


class NoticeOutbox:
    """The notices a bus has yet to send, for its sending thread; bounded. Status and stop notices go first,
    in order, one per job and kind while pending (a notice makes receivers read the store, which already
    holds the later change). Progress notices are kept per job, the latest only (in the place of the job's
    first one), for at most MAX_PENDING_PROGRESS jobs (the oldest dropped beyond); a job's pending progress
    goes out just before its next status notice, so that no receiver hears its progress after its end."""

    def __init__(self, max_pending_progress: int = MAX_PENDING_PROGRESS) -> None:
        self._ready = threading.Condition()
        self._urgent: deque[str] = deque()
        self._urgent_pending: Counter[str] = Counter()
        self._progress: OrderedDict[str, str] = OrderedDict()
        self._max_progress = max_pending_progress
        self._closed = False
        self.dropped = 0

    def __len__(self) -> int:
        with self._ready:
            return len(self._urgent) + len(self._progress)

    def put(self, job_id: str, kind: str, payload: str) -> None:
        with self._ready:
            if kind == "progress":
                self._progress[job_id] = payload
                while len(self._progress) > self._max_progress:
                    self._progress.popitem(last=False)
                    self.dropped += 1
            else:
                progress = self._progress.pop(job_id, None)
                if progress is not None:
                    self._urgent.append(progress)
                    self._urgent_pending[progress] += 1
                elif payload in self._urgent_pending:
                    return
                self._urgent.append(payload)
                self._urgent_pending[payload] += 1
            self._ready.notify()

    def take(self) -> str | None:
        """The next notice to send, waiting for one; None once closed and empty."""
        with self._ready:
            while not (self._urgent or self._progress or self._closed):
                self._ready.wait()
            if self._urgent:
                payload = self._urgent.popleft()
                self._urgent_pending[payload] -= 1
                if not self._urgent_pending[payload]:
                    del self._urgent_pending[payload]
                return payload
            if self._progress:
                return self._progress.popitem(last=False)[1]
            return None

    def close(self) -> None:
        """`take` returns what is left, then None."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
