"""Scale-out workers: Procrastinate hands each queued job to one worker process, which runs it on its engine.

The jobs table stays the system of record; a Procrastinate job only says "run reangle job X" and is deferred
in the same transaction that queues the row (see `reangle.store.postgres`), on the queue of the job's model,
so that a worker takes only the models its engine serves. A worker runs one job at a time (concurrency 1)
and beats a heartbeat; every worker also watches for workers silent for `STALLED_S` and hands their jobs
to another worker, where the claim makes them the next attempt, so nothing the silent worker still writes
lands. The retention sweep is a periodic task too: once per period across the deployment. Each
worker also runs a webhook sender beside its job (the outbox's leases keep two workers off one delivery).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection
from typing import Any

import procrastinate
import procrastinate.exceptions
import psycopg
from procrastinate import JobContext

from reangle.core.models import MODELS
from reangle.core.service import JobService
from reangle.engine.base import Engine
from reangle.runtime.heartbeat import HEARTBEAT_S, Heartbeat
from reangle.runtime.local import LocalRunner
from reangle.runtime.webhook_sender import WebhookSender
from reangle.settings import Settings
from reangle.store.pg_dispatch import RUN_JOB_TASK, defer_orphaned_jobs, job_queue

log = logging.getLogger("reangle.worker")

MAINTENANCE_QUEUE = "reangle.maintenance"
#: How long a worker silent to Procrastinate (its heartbeat comes every HEARTBEAT_S) is given before its
#: job is re-run elsewhere (the measured goal: a killed worker's job restarts within 15 s).
STALLED_S = 8.0
STALLED_CHECK_S = 1.0
#: How often a worker looks for jobs that no Procrastinate job will run any more (see defer_orphaned_jobs).
ORPHAN_CHECK_S = 10.0
#: On SIGTERM a worker gives its job this long to end, then stops it and puts it back on the queue for
#: another worker. Shorter than STALLED_S: Procrastinate stops the heartbeat while it drains, so a longer
#: drain would look like a dead worker and have its job run twice.
STOP_GRACE_S = 5.0
RESTART_S = (0.5, 1.0, 2.0, 5.0)


def sweep_cron(interval_s: float) -> str:
    """The retention sweep's schedule for `REANGLE_SWEEP_INTERVAL_S`: every n seconds or minutes, n the
    largest divisor of 60 not above the interval (a cron step must divide 60 to keep its period), at least
    hourly."""
    seconds = max(1, round(interval_s))
    if seconds < 60:
        return f"*/{_divisor_of_60(seconds)} * * * * *"
    if seconds < 3600:
        return f"*/{_divisor_of_60(seconds // 60)} * * * *"
    return "0 * * * *"


def _divisor_of_60(step: int) -> int:
    return max(divisor for divisor in (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30) if divisor <= step)


class WorkerRuntime:
    """A Procrastinate worker serving `models` on one engine, inside `reangle serve` or `reangle worker`."""

    def __init__(
        self,
        conninfo: str,
        service: JobService,
        engine: Engine,
        settings: Settings,
        *,
        runner: LocalRunner | None = None,
        models: Collection[str] | None = None,
        name: str | None = None,
        webhooks: WebhookSender | None = None,
    ) -> None:
        self.service, self.engine, self.webhooks = service, engine, webhooks
        self.models = sorted(models or MODELS)
        self.runner = runner or LocalRunner(service, engine)
        # unique per process: Procrastinate can leave jobs stuck when a restarted worker reuses a name
        self.heartbeat = Heartbeat(service.store, engine, self.models, self._job_in_hand, name=name)
        self.name = self.heartbeat.name
        self._claimed: str | None = None
        self.app = build_app(conninfo, sweep_cron(settings.sweep_interval_s))

    async def run(self) -> None:
        """Until cancelled, which gives the job in hand STOP_GRACE_S to end before it goes back to the queue.
        When the database goes away, the worker stops and starts again once it is back (its job, if any, is
        then re-run as a stalled one)."""
        async with asyncio.TaskGroup() as tasks:
            beside = [tasks.create_task(self.heartbeat.run(), name="heartbeat")]
            if self.webhooks is not None:
                beside.append(tasks.create_task(self.webhooks.run(), name="webhooks"))
            try:
                await self._work_forever()
            finally:
                for task in beside:
                    task.cancel()

    def _job_in_hand(self) -> str | None:
        return self._claimed

    async def _work_forever(self) -> None:
        failures = 0
        while True:
            try:
                await self._run_worker()
            except (psycopg.Error, procrastinate.exceptions.ProcrastinateException) as exc:
                wait = RESTART_S[min(failures, len(RESTART_S) - 1)]
                log.warning("worker stopped (%s: %s); starting again in %g s", type(exc).__name__, exc, wait)
                failures += 1
                await asyncio.sleep(wait)

    async def _run_worker(self) -> None:
        queues = [job_queue(model) for model in self.models] + [MAINTENANCE_QUEUE]
        async with self.app.open_async():
            watchers = [
                asyncio.create_task(self._retry_stalled_forever(), name="stalled jobs"),
                asyncio.create_task(self._defer_orphans_forever(), name="orphaned jobs"),
            ]
            try:
                await self._run_procrastinate(queues)
            finally:
                for watcher in watchers:
                    watcher.cancel()
                await asyncio.gather(*watchers, return_exceptions=True)

    async def _retry_stalled_forever(self) -> None:
        """Hand the jobs of silent workers to the queue again. Every worker checks, on its own timer rather
        than as a periodic task: a periodic task waits for a free worker, and with one worker left, busy,
        nobody would check. Two workers retrying one job is harmless: the second finds it not running."""
        manager = self.app.job_manager
        while True:
            await asyncio.sleep(STALLED_CHECK_S)
            try:
                for stalled in await manager.get_stalled_jobs(
                    task_name=RUN_JOB_TASK, seconds_since_heartbeat=STALLED_S
                ):
                    log.warning(
                        "%s: its worker stopped answering; handing it to another", stalled.task_kwargs
                    )
                    with contextlib.suppress(procrastinate.exceptions.ProcrastinateException):
                        await manager.retry_job(stalled)
                await manager.prune_stalled_workers(seconds_since_heartbeat=STALLED_S)
            except (psycopg.Error, procrastinate.exceptions.ProcrastinateException) as exc:
                log.warning("could not check for stalled jobs: %s", exc)

    async def _defer_orphans_forever(self) -> None:
        connector = self.app.connector
        assert isinstance(connector, procrastinate.PsycopgConnector)
        while True:
            await asyncio.sleep(ORPHAN_CHECK_S)
            try:
                async with connector.pool.connection() as connection:
                    orphans = await defer_orphaned_jobs(connection)
                if orphans:
                    log.warning("jobs %s had no run left (their end went unrecorded); run again", orphans)
            except psycopg.Error as exc:
                log.warning("could not check for orphaned jobs: %s", exc)

    async def _run_procrastinate(self, queues: list[str]) -> None:
        await self.app.run_worker_async(
            queues=queues,
            name=self.name,
            concurrency=1,
            install_signal_handlers=False,
            update_heartbeat_interval=HEARTBEAT_S,
            stalled_worker_timeout=STALLED_S,
            shutdown_graceful_timeout=STOP_GRACE_S,
            delete_jobs="successful",
            additional_context={"worker": self},
        )

    async def run_job(self, job_id: str) -> None:
        job = self.service.claim(job_id)
        if job is None:  # canceled while queued, already ended, or out of attempts
            return
        log.info("job %s: attempt %d on worker %s", job.id, job.attempt, self.name)
        self._claimed = job.id
        try:
            # the outputs are stored before Procrastinate hears the job is done: a worker killed while
            # storing leaves a stalled job that another worker runs again
            await self.runner.run_to_end(job)
        finally:
            self._claimed = None

    def sweep(self) -> None:
        jobs, files = self.service.sweep()
        if jobs or files:
            log.info("retention sweep: deleted %d jobs and %d files", jobs, files)


def build_app(conninfo: str, sweep_schedule: str) -> procrastinate.App:
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))

    @app.task(name=RUN_JOB_TASK, pass_context=True)
    async def run_job(context: JobContext, job_id: str) -> None:
        await _worker(context).run_job(job_id)

    @app.periodic(cron=sweep_schedule)
    @app.task(name="reangle.sweep", queue=MAINTENANCE_QUEUE, queueing_lock="reangle.sweep", pass_context=True)
    async def sweep(context: JobContext, timestamp: int) -> None:
        await asyncio.to_thread(_worker(context).sweep)

    return app


def _worker(context: JobContext) -> WorkerRuntime:
    worker: Any = context.additional_context["worker"]
    assert isinstance(worker, WorkerRuntime)
    return worker
