"""How the PostgreSQL store hands queued jobs to Procrastinate workers: one Procrastinate job per queued row,
deferred in the same transaction, on the queue of the job's model. The workers (`reangle.runtime.worker`)
listen on those queues and run the task named here."""

from __future__ import annotations

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
