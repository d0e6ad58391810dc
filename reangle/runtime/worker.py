"""Scale-out workers: Procrastinate hands each queued job to one worker process, which runs it on its engine.

The jobs table stays the system of record; a Procrastinate job only says "run reangle job X" and is deferred
in the same transaction that queues the row (see `reangle.store.postgres`), on the queue of the job's model,
so that a worker takes only the models its engine serves. A worker runs one job at a time (concurrency 1)
and beats a heartbeat; a periodic task (run by one worker at a time) hands the jobs of a worker silent for
`STALLED_S` to another worker, where the claim makes them the next attempt, so nothing the silent worker
still writes lands. The retention sweep is a periodic task too: once per period across the deployment.
"""

from __future__ import annotations

import asyncio
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
from reangle.settings import Settings
from reangle.store.pg_dispatch import RUN_JOB_TASK, job_queue

log = logging.getLogger("reangle.worker")

MAINTENANCE_QUEUE = "reangle.maintenance"
#: How long a worker silent to Procrastinate (its heartbeat comes every HEARTBEAT_S) is given before its
#: job is re-run elsewhere (the measured goal: a killed worker's job restarts within 15 s).
STALLED_S = 8.0
STALLED_CHECK_CRON = "*/2 * * * * *"  # every 2 s (Procrastinate's sixth cron field is seconds)
RESTART_S = (0.5, 1.0, 2.0, 5.0)


def sweep_cron(interval_s: float) -> str:
    """The retention sweep's schedule for `REANGLE_SWEEP_INTERVAL_S`, in whole seconds or minutes."""
    seconds = max(1, round(interval_s))
    if seconds < 60:
        return f"*/{seconds} * * * * *"
    return f"*/{min(59, seconds // 60)} * * * *"


class WorkerRuntime:
    """A Procrastinate worker serving `models` on one engine, inside `reangle serve` or `reangle worker`."""

    def __init__(
        self,
        conninfo: str,
        service: JobService,
        engine: Engine,
        settings: Settings,
        *,
        models: Collection[str] | None = None,
        name: str | None = None,
    ) -> None:
        self.service, self.engine = service, engine
        self.models = sorted(models or MODELS)
        self.runner = LocalRunner(service, engine)
        # unique per process: Procrastinate can leave jobs stuck when a restarted worker reuses a name
        self.heartbeat = Heartbeat(service.store, engine, self.models, self._job_in_hand, name=name)
        self.name = self.heartbeat.name
        self._claimed: str | None = None
        self.app = build_app(conninfo, sweep_cron(settings.sweep_interval_s))

    async def run(self) -> None:
        """Until cancelled, which lets the job in hand finish first. When the database goes away, the worker
        stops and starts again once it is back (its job, if any, is then re-run as a stalled one)."""
        async with asyncio.TaskGroup() as tasks:
            beating = tasks.create_task(self.heartbeat.run(), name="heartbeat")
            try:
                await self._work_forever()
            finally:
                beating.cancel()

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
            await self.app.run_worker_async(
                queues=queues,
                name=self.name,
                concurrency=1,
                install_signal_handlers=False,
                update_heartbeat_interval=HEARTBEAT_S,
                stalled_worker_timeout=STALLED_S,
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
            await self.runner.run_job(job)
            # the outputs are stored before Procrastinate hears the job is done: a worker killed while
            # storing leaves a stalled job that another worker runs again
            await self.runner.wait_finishing()
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

    @app.periodic(cron=STALLED_CHECK_CRON)
    @app.task(
        name="reangle.retry_stalled",
        queue=MAINTENANCE_QUEUE,
        queueing_lock="reangle.retry_stalled",
        pass_context=True,
    )
    async def retry_stalled(context: JobContext, timestamp: int) -> None:
        manager = context.app.job_manager
        for stalled in await manager.get_stalled_jobs(
            task_name=RUN_JOB_TASK, seconds_since_heartbeat=STALLED_S
        ):
            log.warning("job %s: its worker stopped answering; handing it to another", stalled.task_kwargs)
            await manager.retry_job(stalled)
        await manager.prune_stalled_workers(seconds_since_heartbeat=STALLED_S)

    @app.periodic(cron=sweep_schedule)
    @app.task(name="reangle.sweep", queue=MAINTENANCE_QUEUE, queueing_lock="reangle.sweep", pass_context=True)
    async def sweep(context: JobContext, timestamp: int) -> None:
        await asyncio.to_thread(_worker(context).sweep)

    return app


def _worker(context: JobContext) -> WorkerRuntime:
    worker: Any = context.additional_context["worker"]
    assert isinstance(worker, WorkerRuntime)
    return worker
