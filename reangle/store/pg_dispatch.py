"""How the PostgreSQL store hands queued jobs to Procrastinate workers: one Procrastinate job per queued row,
deferred in the same transaction, on the queue of the job's model. The workers (`reangle.runtime.worker`)
listen on those queues and run the task named here."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import psycopg

RUN_JOB_TASK = "reangle.run_job"
JOB_QUEUE_PREFIX = "reangle.jobs."

#: Defers the run of each stored job the statement selects (add a WHERE), with the job's own priority
#: (higher runs first, as in reangle), through Procrastinate's versioned SQL function.
DEFER_RUNS = (
    "SELECT procrastinate_defer_jobs_v1(ARRAY[ROW("
    f"'{JOB_QUEUE_PREFIX}' || model, '{RUN_JOB_TASK}', priority, NULL, NULL, "
    "jsonb_build_object('job_id', id), NULL)::procrastinate_job_to_defer_v1]) FROM jobs"
)


def job_queue(model: str) -> str:
    return JOB_QUEUE_PREFIX + model


def defer_run(cursor: psycopg.Cursor[Any], job_id: str) -> None:
    """Within the caller's transaction: commits (or rolls back) with the row that made the job queued."""
    cursor.execute(DEFER_RUNS + " WHERE id = %s", (job_id,))


#: Only one worker at a time looks for orphaned jobs (two would defer one job twice).
ORPHAN_CHECK_LOCK = 0x5245414E474C4F

#: Jobs the store says are queued or running but that no Procrastinate job will run any more: a worker ended
#: its task without recording the job's end (the database went away at that moment), or its claim failed.
#: Rows a claim or a status change holds locked are skipped: they are in hand; so are the jobs a worker heard
#: from since a time names (one carried through a database outage, its run recorded aborted).
ORPHANED_JOBS = (
    "SELECT id FROM jobs WHERE status IN ('queued', 'processing') AND NOT EXISTS ("
    "SELECT 1 FROM procrastinate_jobs AS run WHERE run.task_name = %s AND run.status IN ('todo', 'doing') "
    "AND run.args ->> 'job_id' = jobs.id) AND NOT EXISTS ("
    "SELECT 1 FROM workers WHERE workers.job_id = jobs.id AND workers.seen_at >= %s) FOR UPDATE SKIP LOCKED"
)


async def defer_orphaned_jobs(connection: psycopg.AsyncConnection[Any], seen_since: float) -> list[str]:
    """Give every orphaned job a run again (a processing one becomes its next attempt when claimed); returns
    their ids. Nothing when another worker is doing this check right now. A job that a worker heard from at
    `seen_since` or later (its clock) names is in hand, not orphaned."""
    async with connection.transaction(), connection.cursor() as cursor:
        await cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", (ORPHAN_CHECK_LOCK,))
        locked = await cursor.fetchone()
        if not (locked and locked[0]):
            return []
        await cursor.execute(ORPHANED_JOBS, (RUN_JOB_TASK, seen_since))
        orphans = [str(row[0]) for row in await cursor.fetchall()]
        if orphans:
            await cursor.execute(DEFER_RUNS + " WHERE id = ANY(%s)", (orphans,))
        return orphans


async def drop_run(connection: psycopg.AsyncConnection[Any], run_id: int | None) -> None:
    """Delete a Procrastinate run still `doing` whose job has ended without it (see WorkerRuntime)."""
    async with connection.cursor() as cursor:
        await cursor.execute("DELETE FROM procrastinate_jobs WHERE id = %s AND status = 'doing'", (run_id,))


#: The jobs among those given that a worker heard from since a time (reangle's own heartbeat, the workers
#: table) names as its job in hand.
HELD_JOBS = "SELECT DISTINCT job_id FROM workers WHERE job_id = ANY(%s) AND seen_at >= %s"


async def jobs_held_by_live_workers(
    connection: psycopg.AsyncConnection[Any], job_ids: Collection[str], seen_since: float
) -> set[str]:
    """Those of `job_ids` that a worker heard from at `seen_since` or later (its clock) still holds: its
    Procrastinate heartbeat may have stopped (a worker draining its job on SIGTERM), but the job is in
    hand."""
    if not job_ids:
        return set()
    async with connection.cursor() as cursor:
        await cursor.execute(HELD_JOBS, (list(job_ids), seen_since))
        return {str(row[0]) for row in await cursor.fetchall()}
