"""The scale-out event bus: PostgreSQL LISTEN/NOTIFY between every API replica and worker of a deployment.

A process delivers its own events to its own subscribers at once and sends them to the others on one channel,
tagged with its origin so that it skips its own echo. Sending happens on a thread of its own, so that an
unreachable database never stalls the event loop. A status notice carries only the job id: receivers read
the job from the store, so a notice never outgrows PostgreSQL's 8000-byte payload limit and never shows a
state older than the store's. Notices are not durable: while the listening connection is down, events are
missed, so after reconnecting the bus re-reads the status of every job someone here still listens to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import secrets
import threading
from typing import Any

import psycopg

from reangle.core.jobs import JobEvent
from reangle.core.ports import ChangeWatcher, JobStore
from reangle.errors import ReangleError
from reangle.runtime.local_bus import LocalEventBus

log = logging.getLogger("reangle.events")

CHANNEL = "reangle_events"
RECONNECT_S = (0.2, 0.5, 1.0, 2.0, 5.0)
CONNECT_TIMEOUT_S = 5


class PgEventBus:
    def __init__(self, conninfo: str, store: JobStore) -> None:
        self.conninfo, self.store = conninfo, store
        self.origin = secrets.token_hex(8)
        self._local = LocalEventBus()
        self._outbox: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._sender: threading.Thread | None = None
        self._watchers: list[ChangeWatcher] = []
        #: set while the listening connection is up (tests and health checks wait on it)
        self.listening = asyncio.Event()

    # what this process does ---------------------------------------------------------------------------------

    def publish(self, event: JobEvent) -> None:
        self._changed(event.job_id)
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
            self._outbox.put(None)
            self._sender.join(timeout=CONNECT_TIMEOUT_S + 1)
            self._sender = None

    def _notify(self, notice: dict[str, Any]) -> None:
        self._outbox.put(json.dumps(notice | {"origin": self.origin}, separators=(",", ":")))
        if self._sender is None:
            self._sender = threading.Thread(target=self._send_forever, name="reangle-events", daemon=True)
            self._sender.start()

    def _send_forever(self) -> None:
        """Each notice is tried on the open connection, then once more on a new one (a connection left over
        from before a database restart fails at its first use). A notice still not sent is logged and
        dropped: the job's state is in the store, and listeners re-read it when they reconnect."""
        connection: psycopg.Connection[Any] | None = None
        while (payload := self._outbox.get()) is not None:
            for last_try in (False, True):
                try:
                    if connection is None or connection.closed:
                        connection = psycopg.connect(
                            self.conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
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
        drops."""
        failures = 0
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
                ) as connection:
                    await connection.execute(f"LISTEN {CHANNEL}")
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
                    log.warning("event bus: lost the database (%s); reconnecting", exc)
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
            self._local.publish(JobEvent(job_id=job_id, kind="status", job=job))
