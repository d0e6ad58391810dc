"""Each process running jobs says, every few seconds, that it is alive, what it runs and which job it holds;
/healthz and /metrics read it back from the store, and scale-out workers leave a job a live heartbeat names
to its worker. On each beat a process also reads whether a cancel was stored for the jobs it holds: a cancel
reaches the job even when its NOTIFY was lost, or when another process wrote it (`reangle admin cancel`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from reangle.core.jobs import JobStatus
from reangle.core.models import MODELS
from reangle.core.ports import EventBus, JobStore, WorkerStatus
from reangle.engine.base import Engine

log = logging.getLogger("reangle.worker")

HEARTBEAT_S = 2.0
#: /healthz lists the workers heard from within this many seconds.
LISTED_FOR_S = 30.0
#: A process whose own beats the store has refused for this long answers /healthz 503 ("degraded"): it can
#: neither take jobs in nor record their progress (a full disk, a lock held by another process, a database
#: gone read-only). Longer than a lock wait (5 s) and two beats, so one slow write does not flip it.
REFUSED_FOR_S = 15.0
#: While the store refuses the beats, the log says so at the first refusal, then once each this many seconds.
REFUSAL_REMINDER_S = 300.0


def process_name() -> str:
    """Unique per process (host and pid), so a restarted worker never takes over an old one's name."""
    return f"{socket.gethostname()}:{os.getpid()}"


def runnable_models(models: Collection[str]) -> list[str]:
    """The served models of `models` that this process can run. One it would only fail (Wan without a
    DashScope key) is left on its queue for a worker that can run it, and its heartbeat does not list it."""
    return sorted(model for model in models if model in MODELS and not MODELS[model].unavailable)


class Heartbeat:
    def __init__(
        self,
        store: JobStore,
        engine: Engine,
        models: Collection[str],
        job_in_hand: Callable[[], str | None],
        *,
        stops: JobStops | None = None,
        name: str | None = None,
        interval_s: float = HEARTBEAT_S,
    ) -> None:
        """With `stops`, each beat stops the held jobs whose cancel is stored."""
        self.store, self.engine, self.job_in_hand = store, engine, job_in_hand
        self.stops = stops
        self.models = tuple(runnable_models(models))
        self.name = name or process_name()
        self.interval_s = interval_s
        self.started_at = time.time()
        self.recorded_at = self.started_at
        self.refusal: str | None = None
        self._refusal_logged_at = 0.0

    def status(self) -> WorkerStatus:
        info = self.engine.info
        return WorkerStatus(
            name=self.name,
            device=info.device,
            engine=info.name,
            models=self.models,
            started_at=self.started_at,
            seen_at=time.time(),
            job_id=self.job_in_hand(),
        )

    async def run(self) -> None:
        """Until cancelled; then the worker's row is removed (a killed worker's row just ages out)."""
        try:
            while True:
                await self.beat()
                await asyncio.sleep(self.interval_s)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.store.forget_worker, self.name)

    async def beat(self) -> None:
        """Record this worker's status; then, with `stops`, stop each held job whose cancel is stored."""
        status = self.status()
        try:
            await asyncio.to_thread(self.store.record_worker, status)
        except Exception as exc:  # the database away for a while: keep beating
            self._log_refusal(exc)
            self.refusal = str(exc) or type(exc).__name__
            return
        if self.refusal is not None:
            log.info("heartbeat of %s recorded again", self.name)
        self.recorded_at, self.refusal = status.seen_at, None
        if self.stops is not None:
            for job_id in self.stops.held():
                await self._stop_if_canceled(job_id, self.stops)

    def _log_refusal(self, exc: Exception) -> None:
        """One line at the first refusal, then one each REFUSAL_REMINDER_S, not one each beat."""
        now = time.time()
        if self.refusal is None:
            log.warning(
                "heartbeat of %s not recorded: %s; trying again every %g s", self.name, exc, self.interval_s
            )
        elif now - self._refusal_logged_at >= REFUSAL_REMINDER_S:
            refused_for = now - self.recorded_at
            log.warning("heartbeat of %s still not recorded after %.0f s: %s", self.name, refused_for, exc)
        else:
            return
        self._refusal_logged_at = now

    def store_trouble(self) -> str | None:
        """Why this process cannot write to the store, once its beats have been refused for REFUSED_FOR_S."""
        refused_for = time.time() - self.recorded_at
        if self.refusal is None or refused_for < REFUSED_FOR_S:
            return None
        return f"the store has refused this process's writes for {refused_for:.0f} s: {self.refusal}"

    async def _stop_if_canceled(self, job_id: str, stops: JobStops) -> None:
        try:
            job = await asyncio.to_thread(self.store.get_job, job_id)
        except Exception as exc:
            log.warning("heartbeat of %s could not read job %s: %s", self.name, job_id, exc)
            return
        if job is not None and job.status == JobStatus.PROCESSING and job.cancel_requested:
            stops.stop(job_id)


@dataclass(frozen=True)
class JobStops:
    """The jobs a process holds (`held`: the one it renders, the remote ones it follows) and their stop flags
    on its event bus, for the heartbeat's check of stored cancels."""

    events: EventBus
    held: Callable[[], Collection[str]]

    def stop(self, job_id: str) -> None:
        """Stop a held job at its next step, as a cancel's notice would have."""
        if job_id not in self.held():  # ended meanwhile
            return
        flag = self.events.stop_flag(job_id)
        if not flag.is_set():
            log.info("job %s: cancel requested (read by the heartbeat); stopping it", job_id)
            flag.set()
        if job_id not in self.held():  # it ended while the flag was made: none stays behind for a later run
            self.events.forget(job_id)
