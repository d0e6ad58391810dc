"""Scale-out workers: Procrastinate hands each queued job to one worker process, which runs it on its engine.

The jobs table stays the system of record; a Procrastinate job only says "run reangle job X" and is deferred
in the same transaction that queues the row (see `reangle.store.postgres`), on the queue of the job's model,
so that a worker takes only the models it can run (see `runnable_models`). A worker runs one job at a time
(concurrency 1) and beats two heartbeats, Procrastinate's and reangle's (the workers table, which names the
job in hand).
Every worker also watches for workers silent for `STALLED_S` and hands their jobs to another worker, where
the claim makes them the next attempt, so nothing the silent worker still writes lands; a job that a live
reangle heartbeat still names is left to its worker. The retention sweep is a periodic task too: once per
period across the deployment. Each worker also runs a webhook sender beside its job (the outbox's leases keep
two workers off one delivery).

When Procrastinate stops by itself (it lost the database), the job in hand goes on: a render is minutes of GPU
time, and its end is recorded once the database is back (see `LocalRunner`). The worker takes no other job
until it has ended; reangle's heartbeat names it meanwhile, which keeps the other workers off it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import procrastinate
import procrastinate.exceptions
import procrastinate.jobs
import procrastinate.manager
import psycopg
import psycopg.errors
from procrastinate import JobContext

from reangle.core.jobs import Job
from reangle.core.models import MODELS
from reangle.core.service import JobService
from reangle.engine.base import Engine
from reangle.errors import Unavailable
from reangle.runtime.heartbeat import HEARTBEAT_S, Heartbeat, JobStops, runnable_models
from reangle.runtime.local import LocalRunner
from reangle.runtime.pg_bus import with_connection_options
from reangle.runtime.webhook_sender import WebhookSender
from reangle.settings import Settings
from reangle.store.pg_dispatch import (
    RUN_JOB_TASK,
    defer_orphaned_jobs,
    drop_run,
    job_queue,
    jobs_held_by_live_workers,
)

log = logging.getLogger("reangle.worker")

MAINTENANCE_QUEUE = "reangle.maintenance"
#: How long a worker silent to Procrastinate (its heartbeat comes every HEARTBEAT_S) is given before its
#: job is re-run elsewhere (the measured goal: a killed worker's job restarts within 15 s).
STALLED_S = 8.0
STALLED_CHECK_S = 1.0
#: How often a worker looks for jobs that no Procrastinate job will run any more (see defer_orphaned_jobs).
ORPHAN_CHECK_S = 10.0
#: On SIGTERM a worker gives its job this long to end, then stops it and puts it back on the queue for
#: another worker (a job already storing its outputs is let complete). Procrastinate stops its heartbeat while
#: it drains, but reangle's goes on naming the job in hand, which keeps the other workers off it.
STOP_GRACE_S = 5.0
RESTART_S = (0.5, 1.0, 2.0, 5.0)
#: A stalled-job query slower than this waited for the database: its answer is not trusted (see
#: `_stalled_checks_from`).
SLOW_CHECK_S = 2.0
#: How long a restart of the worker waits for its watchers (the stalled and orphaned job checks) to stop.
WATCHERS_STOP_S = 5.0
#: How Procrastinate (3.10, procrastinate_finish_job_v1) refuses to end a run that is no longer in hand.
RUN_GONE = 'Job was not found or not in "doing" or "todo" status'
#: The link of a run to its Procrastinate worker: a fetch by a worker whose registration is gone breaks it.
WORKER_LINK = "procrastinate_jobs_worker_id_fkey"


def sweep_cron(interval_s: float) -> str:
    """The retention sweep's schedule for `REANGLE_SWEEP_INTERVAL_S`: every n seconds or minutes, n the
    largest divisor of 60 not above the interval (a cron step must divide 60 to keep its period), at least
    hourly. Procrastinate's cron (croniter) takes seconds as a sixth field, at the end."""
    seconds = max(1, round(interval_s))
    if seconds < 60:
        return f"* * * * * */{_divisor_of_60(seconds)}"
    if seconds < 3600:
        return f"*/{_divisor_of_60(seconds // 60)} * * * *"
    return "0 * * * *"


def _divisor_of_60(step: int) -> int:
    return max(divisor for divisor in (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30) if divisor <= step)


class WorkerRuntime:
    """A Procrastinate worker serving those of `models` (default: all) it can run, on one engine, inside
    `reangle serve` or `reangle worker`."""

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
        self.models = runnable_models(models or MODELS)
        self.runner = runner or LocalRunner(service, engine)
        # unique per process: Procrastinate can leave jobs stuck when a restarted worker reuses a name
        self.heartbeat = Heartbeat(
            service.store,
            engine,
            self.models,
            self._job_in_hand,
            stops=JobStops(service.events, self._held),
            name=name,
        )
        self.name = self.heartbeat.name
        self._claimed: str | None = None
        #: No check for stalled jobs before then: right after a database outage every heartbeat is stale,
        #: this process's own too, and the jobs of live workers would be handed to others.
        self._stalled_checks_from = 0.0
        self._after_outage = False
        #: the task rendering the job in hand, to its end
        self._job_task: asyncio.Task[None] | None = None
        #: the Procrastinate run of a job that went on when Procrastinate stopped by itself
        self._carried_run: procrastinate.jobs.Job | None = None
        #: the task of `run`, whose cancel is a stop (SIGTERM), unlike Procrastinate stopping by itself
        self._run_task: asyncio.Task[Any] | None = None
        self.app = build_app(conninfo, sweep_cron(settings.sweep_interval_s))

    @property
    def queues(self) -> list[str]:
        """The Procrastinate queues this worker takes jobs from: its models' and the maintenance queue."""
        return [job_queue(model) for model in self.models] + [MAINTENANCE_QUEUE]

    async def run(self) -> None:
        """Until cancelled, which gives the job in hand STOP_GRACE_S to end before it goes back to the queue.
        It returns only once that job has reached its end state (completed, or back on the queue), so the
        caller may close the store then. When the database goes away, Procrastinate stops and starts again
        once it is back, once the job in hand, which goes on meanwhile, has ended."""
        self._run_task = asyncio.current_task()
        async with asyncio.TaskGroup() as tasks:
            beside = [tasks.create_task(self.heartbeat.run(), name="heartbeat")]
            if self.webhooks is not None:
                beside.append(tasks.create_task(self.webhooks.run(), name="webhooks"))
            try:
                await self._work_forever()
            finally:
                await self._settle_job_in_hand()  # the heartbeat still names the job meanwhile
                for task in beside:
                    task.cancel()

    def store_trouble(self) -> str | None:
        return self.heartbeat.store_trouble()

    def _job_in_hand(self) -> str | None:
        return self._claimed

    def _held(self) -> list[str]:
        return [self._claimed] if self._claimed else []

    async def _settle_job_in_hand(self) -> None:
        """Wait until the job in hand has reached its end state. Procrastinate's graceful stop has normally
        done so. A job carried through an outage gets STOP_GRACE_S, as the graceful stop would have given it,
        and a job task left behind (the graceful stop itself cancelled, by a second signal) none; then it is
        stopped, and goes back to the queue."""
        job_task = self._job_task
        if job_task is not None and not job_task.done():
            if self._carried_run is not None:
                await _despite_cancels(lambda: asyncio.wait({job_task}, timeout=STOP_GRACE_S))
            if not job_task.done():
                log.warning("job %s still in hand after the worker stopped; stopping it", self._claimed)
            await self._stop_job(job_task)
        await _despite_cancels(lambda: self.runner.wait_finishing(stopping=True))

    async def _stop_job(self, job_task: asyncio.Task[None]) -> None:
        job_task.cancel()
        await _despite_cancels(lambda: asyncio.wait({job_task}))
        if not job_task.cancelled():
            job_task.exception()  # retrieved: its end could not be recorded (the store closing, say)

    async def _work_forever(self) -> None:
        failures = 0
        while True:
            try:
                await self._run_worker()
                log.warning("the job queue stopped by itself; starting it again")
            except (psycopg.Error, procrastinate.exceptions.ProcrastinateException) as exc:
                wait = RESTART_S[min(failures, len(RESTART_S) - 1)]
                log.warning("worker stopped (%s); starting again in %g s", _stop_reason(exc), wait)
                failures += 1
                await asyncio.sleep(wait)
            finally:  # Procrastinate also stops by itself when its listener loses the database
                self._after_outage = True

    async def _run_worker(self) -> None:
        async with self.app.open_async():
            if self._after_outage:
                self._stalled_checks_from, self._after_outage = time.time() + STALLED_S, False
            # Hand the jobs of silent workers to the queue again. Every worker checks, on its own timer rather
            # than as a periodic task: a periodic task waits for a free worker, and with one worker left,
            # busy, nobody would check. Two workers retrying one job is harmless: the second finds it not
            # running.
            stop = asyncio.Event()
            watchers = [
                asyncio.create_task(
                    watch(stop, STALLED_CHECK_S, self._check_stalled, "check for stalled jobs"),
                    name="stalled jobs",
                ),
                asyncio.create_task(
                    watch(stop, ORPHAN_CHECK_S, self._defer_orphans, "check for orphaned jobs"),
                    name="orphaned jobs",
                ),
            ]
            try:
                await self._end_carried_job()
                await self._run_procrastinate(self.queues)
            finally:
                await stop_watchers(watchers, stop)

    async def _end_carried_job(self) -> None:
        """Wait for the job carried through an outage to end, then drop its Procrastinate run, still `doing`
        under a worker that stopped (unless Procrastinate recorded it aborted): the job's own end is in the
        jobs table, and a run left would be handed on as a stalled one."""
        if self._carried_run is None:
            return
        if self._job_task is not None:
            job_task = self._job_task
            await asyncio.wait({job_task})
        log.info(
            "job %s, carried through the outage, has ended; taking jobs again",
            self._carried_run.task_kwargs.get("job_id"),
        )
        connector = self.app.connector
        assert isinstance(connector, procrastinate.PsycopgConnector)
        async with connector.pool.connection() as connection:
            await drop_run(connection, self._carried_run.id)
        self._carried_run = None

    async def _check_stalled(self) -> None:
        """`retry_stalled_jobs`, but not within STALLED_S of the database coming back (see
        `_stalled_checks_from`): not after a check that failed, nor after one that waited for a connection."""
        if time.time() < self._stalled_checks_from:
            return
        try:
            await self.retry_stalled_jobs()
        except (psycopg.Error, procrastinate.exceptions.ProcrastinateException):
            self._stalled_checks_from = time.time() + STALLED_S
            raise

    async def retry_stalled_jobs(self) -> list[str]:
        """One check (the app open): the jobs whose Procrastinate worker has been silent for STALLED_S go back
        on the queue, unless a reangle heartbeat heard within STALLED_S names them (their worker is alive,
        draining its job on SIGTERM, say). Returns the ids of the jobs handed back."""
        manager = self.app.job_manager
        asked = time.time()
        stalled = list(
            await manager.get_stalled_jobs(task_name=RUN_JOB_TASK, seconds_since_heartbeat=STALLED_S)
        )
        if time.time() - asked > SLOW_CHECK_S or time.time() < self._stalled_checks_from:
            # it waited for the database (away meanwhile), or the worker started again after an outage
            # meanwhile: every heartbeat is stale for a while
            self._stalled_checks_from = max(self._stalled_checks_from, time.time() + STALLED_S)
            return []
        held = await self._held_by_live_workers({str(run.task_kwargs.get("job_id")) for run in stalled})
        retried = []
        for run in stalled:
            job_id = str(run.task_kwargs.get("job_id"))
            if job_id in held:
                continue
            log.warning("job %s: its worker stopped answering; handing it to another", job_id)
            with contextlib.suppress(procrastinate.exceptions.ProcrastinateException):
                await manager.retry_job(run)
                retried.append(job_id)
        await manager.prune_stalled_workers(seconds_since_heartbeat=STALLED_S)
        return retried

    async def _held_by_live_workers(self, job_ids: set[str]) -> set[str]:
        if not job_ids:
            return set()
        connector = self.app.connector
        assert isinstance(connector, procrastinate.PsycopgConnector)
        async with connector.pool.connection() as connection:
            return await jobs_held_by_live_workers(connection, job_ids, time.time() - STALLED_S)

    async def _defer_orphans(self) -> None:
        connector = self.app.connector
        assert isinstance(connector, procrastinate.PsycopgConnector)
        async with connector.pool.connection() as connection:
            orphans = await defer_orphaned_jobs(connection, time.time() - STALLED_S)
        if orphans:
            log.warning("jobs %s had no run left (their end went unrecorded); run again", orphans)

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

    async def run_job(self, job_id: str, run: procrastinate.jobs.Job) -> None:
        job = self.service.claim(job_id)
        if job is None:  # canceled while queued, already ended, or out of attempts
            return
        log.info("job %s: attempt %d on worker %s", job.id, job.attempt, self.name)
        # the outputs are stored before Procrastinate hears the job is done: a worker killed while storing
        # leaves a stalled job that another worker runs again
        job_task = asyncio.create_task(self._run_to_end(job), name=f"job {job.id}")
        self._claimed, self._job_task = job.id, job_task
        try:
            await asyncio.shield(job_task)
        except asyncio.CancelledError:
            if self._stopping():
                # a render is stopped and its job put back on the queue, but outputs already being stored are
                # stored and the job completed (the store must stay open until then)
                await self._stop_job(job_task)
                await _despite_cancels(lambda: self.runner.wait_finishing(stopping=True))
                raise
            # Procrastinate stopped by itself: it lost the database
            if not job_task.done():
                log.warning(
                    "job %s: the job queue lost the database; the job goes on, and its end is recorded once "
                    "the database is back",
                    job.id,
                )
            self._carried_run = run
            raise

    async def _run_to_end(self, job: Job) -> None:
        try:
            await self.runner.run_to_end(job)
        finally:
            self._claimed, self._job_task = None, None

    def _stopping(self) -> bool:
        return self._run_task is not None and self._run_task.cancelling() > 0

    def sweep(self) -> None:
        try:
            jobs, files = self.service.sweep()
        except Unavailable as exc:  # the database or the bucket is away: not a failure of the task
            log.warning("retention sweep skipped: %s; it runs again next period", exc)
            return
        if jobs or files:
            log.info("retention sweep: deleted %d jobs and %d files", jobs, files)


def build_app(conninfo: str, sweep_schedule: str) -> procrastinate.App:
    # Procrastinate's connections get the event bus's TCP keepalives: without them a database host gone
    # silent (a failover that leaves the old address dead) would hold the worker's listening connection, and
    # any query in flight, for many minutes before it takes jobs again.
    connector = procrastinate.PsycopgConnector(conninfo=with_connection_options(conninfo))
    app = procrastinate.App(connector=connector)
    app.job_manager = _JobManager(connector)

    @app.task(name=RUN_JOB_TASK, pass_context=True)
    async def run_job(context: JobContext, job_id: str) -> None:
        await _worker(context).run_job(job_id, context.job)

    @app.periodic(cron=sweep_schedule)
    @app.task(name="reangle.sweep", queue=MAINTENANCE_QUEUE, queueing_lock="reangle.sweep", pass_context=True)
    async def sweep(context: JobContext, timestamp: int) -> None:
        await asyncio.to_thread(_worker(context).sweep)

    return app


class _JobManager(procrastinate.manager.JobManager):
    """Procrastinate's, but the end of a run that another worker took over while this one was silent (its
    heartbeat stopped: its database connection frozen, say) is one WARNING line. Procrastinate would raise it
    from a task nobody awaits: an ERROR with a traceback, at the time that task is collected."""

    async def finish_job(
        self, job: procrastinate.jobs.Job, status: procrastinate.jobs.Status, delete_job: bool
    ) -> None:
        try:
            await super().finish_job(job, status, delete_job)
        except procrastinate.exceptions.ConnectorException as exc:
            if not _run_gone(exc):
                raise
            log.warning(
                "job %s: another worker took it over while this one was silent; nothing this attempt wrote "
                "after that landed",
                job.task_kwargs.get("job_id", job.call_string),
            )


def _run_gone(exc: procrastinate.exceptions.ConnectorException) -> bool:
    refusal = exc.__cause__
    return isinstance(refusal, psycopg.errors.RaiseException) and (
        refusal.diag.message_primary or ""
    ).startswith(RUN_GONE)


def _stop_reason(exc: Exception) -> str:
    """Why the Procrastinate worker stopped, on one line: for a database error the database's words, where
    Procrastinate's are only "Database error."."""
    cause = exc.__cause__ if isinstance(exc.__cause__, psycopg.Error) else exc
    if isinstance(cause, psycopg.errors.ForeignKeyViolation) and cause.diag.constraint_name == WORKER_LINK:
        return "its registration was dropped while it was silent: it registers again"
    words = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {' '.join(words[0].split())}" if words else type(cause).__name__


async def watch(
    stop: asyncio.Event, period_s: float, check: Callable[[], Awaitable[object]], what: str
) -> None:
    """Run `check` every `period_s` until `stop` is set; a database error is one line, and the next check
    comes all the same."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), period_s)
        if stop.is_set():
            return
        try:
            await check()
        except (psycopg.Error, procrastinate.exceptions.ProcrastinateException) as exc:
            log.warning("could not %s: %s", what, exc)


async def stop_watchers(watchers: list[asyncio.Task[None]], stop: asyncio.Event) -> None:
    """Stop the `watch` tasks, by `stop` as well as by a cancel: a cancel landing as a database call completes
    can be lost (Python 3.11's asyncio.wait_for, inside the connection pool, drops it), and a watcher that
    lived on would hold up the worker's restart after a database outage for good. One still busy after
    WATCHERS_STOP_S is left to end by itself at its next check of `stop`."""
    stop.set()
    for watcher in watchers:
        watcher.cancel()
    _, running = await asyncio.wait(watchers, timeout=WATCHERS_STOP_S)
    for watcher in running:
        log.warning("the %s watcher has not stopped yet; going on without it", watcher.get_name())


async def _despite_cancels(wait: Callable[[], Awaitable[object]]) -> None:
    """Await `wait()` to its end, awaiting it again after each cancel of the caller (what it waits for is
    not cancelled by that). The caller is on its way out already: it raises its own CancelledError after."""
    while True:
        try:
            await wait()
            return
        except asyncio.CancelledError:
            continue


def _worker(context: JobContext) -> WorkerRuntime:
    worker: Any = context.additional_context["worker"]
    assert isinstance(worker, WorkerRuntime)
    return worker
