"""`reangle admin`: the operator's view of every key's jobs, read from the store itself (SQLite in the data
folder, or REANGLE_DATABASE_URL), as `reangle keys` does: list them, show one, cancel one."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reangle.api.render import iso
from reangle.cli.arg_types import whole_number
from reangle.cli.keys import DATA_DIR_HELP, jobs_location, open_store
from reangle.core.jobs import Job, JobEvent, JobStatus
from reangle.errors import InvalidInput
from reangle.runtime.heartbeat import HEARTBEAT_S
from reangle.settings import Settings

if TYPE_CHECKING:
    from reangle.core.ports import JobStore

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000


def add_admin_commands(commands: argparse._SubParsersAction[Any]) -> None:
    admin = commands.add_parser(
        "admin", help="every API key's jobs, read from the store itself: list, show or cancel them"
    )
    actions = admin.add_subparsers(metavar="ACTION", required=True)

    listing = actions.add_parser("jobs", help="the jobs of every key, newest first")
    listing.add_argument("--status", choices=[status.value for status in JobStatus])
    listing.add_argument("--key-id", help="only this key's jobs (key_..., env_... or anonymous)")
    listing.add_argument("--model", help="only this model's jobs")
    listing.add_argument(
        "--limit",
        type=whole_number(1, MAX_LIMIT),
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"at most N jobs, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})",
    )
    listing.add_argument("--json", action="store_true", help="one JSON object per job")
    listing.set_defaults(run=run_admin_jobs)

    show = actions.add_parser("show", help="one job in full: its input, outputs, error and history")
    show.add_argument("job_id", metavar="JOB_ID")
    show.add_argument("--json", action="store_true", help="print the job as one JSON object")
    show.set_defaults(run=run_admin_show)

    cancel = actions.add_parser(
        "cancel", help="cancel any key's job: a queued one ends now, a processing one at its next step"
    )
    cancel.add_argument("job_id", metavar="JOB_ID")
    cancel.set_defaults(run=run_admin_cancel)
    for parser in (listing, show, cancel):
        parser.add_argument("--data-dir", type=Path, help=DATA_DIR_HELP)


def _to_the_second(timestamp: float | None) -> str:
    """A table's time: the API's ISO time without its milliseconds (`2026-12-06T22:44:41Z`), or "-"."""
    shown = iso(timestamp)
    return "-" if shown is None else shown.split(".")[0] + "Z"


def job_summary(job: Job) -> dict[str, Any]:
    """A job as `admin jobs --json` lists it."""
    return {
        "id": job.id,
        "key_id": job.owner,
        "model": job.model,
        "kind": job.kind.value,
        "status": job.status.value,
        "cancel_requested": job.cancel_requested,
        "progress": round(job.progress, 4),
        "attempt": job.attempt,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "error": job.error.to_dict() if job.error else None,
    }


def job_detail(job: Job) -> dict[str, Any]:
    """A job in full, as `admin show --json` prints it: what the API shows its key (without download links),
    and what only the operator sees (its key, webhook, vendor task, the route that submitted it)."""
    return job_summary(job) | {
        "priority": job.priority,
        "batch_id": job.batch_id,
        "input": job.input,
        "outputs": [asdict(output) for output in job.outputs],
        "timings": {name: round(value, 4) for name, value in job.timings.items()},
        "time_limits": asdict(job.limits) if job.limits else None,
        "webhook": {"url": job.webhook.url, "events": list(job.webhook.events)} if job.webhook else None,
        "vendor_task": job.vendor_task,
        "source": job.source,
        "history": [{"status": change.status.value, "at": iso(change.at)} for change in job.history],
    }


def job_table(jobs: list[Job]) -> str:
    rows = [("ID", "KEY", "MODEL", "KIND", "STATUS", "ATTEMPT", "CREATED", "STARTED", "FINISHED", "ERROR")]
    rows += [
        (
            job.id,
            job.owner,
            job.model,
            job.kind.value,
            job.status.value + (" (cancel requested)" if _cancel_pending(job) else ""),
            str(job.attempt),
            _to_the_second(job.created_at),
            _to_the_second(job.started_at),
            _to_the_second(job.finished_at),
            job.error.code if job.error else "-",
        )
        for job in jobs
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def _cancel_pending(job: Job) -> bool:
    return job.cancel_requested and job.status == JobStatus.PROCESSING


def _open_existing_store(
    args: argparse.Namespace, settings: Settings, *, writes: bool = False
) -> tuple[Settings, JobStore]:
    """The settings with --data-dir applied and their job store; a data folder with no database is one line
    (none is made: a mistyped folder would list no jobs), and so is one that `writes` cannot write in."""
    try:
        return open_store(args, settings, existing=True, writes=writes)
    except InvalidInput as exc:
        if exc.field != "data-dir" or exc.hint is None:  # not the missing database: an unwritable folder
            raise
        raise InvalidInput(
            exc.message,
            field=exc.field,
            hint="check --data-dir or REANGLE_DATA_DIR: the folder the server uses",
        ) from None


def run_admin_jobs(args: argparse.Namespace, settings: Settings) -> int:
    settings, store = _open_existing_store(args, settings)
    try:
        jobs = store.list_all_jobs(
            status=JobStatus(args.status) if args.status else None,
            owner=args.key_id,
            model=args.model,
            limit=args.limit,
        )
    finally:
        store.close()
    if args.json:
        for job in jobs:
            print(json.dumps(job_summary(job)))
    elif jobs:
        print(job_table(jobs))
    else:
        filtered = args.status or args.key_id or args.model
        print(f"reangle: no {'such ' if filtered else ''}jobs in {jobs_location(settings)}", file=sys.stderr)
    return 0


def run_admin_show(args: argparse.Namespace, settings: Settings) -> int:
    settings, store = _open_existing_store(args, settings)
    try:
        job = _stored_job(store, args.job_id, settings)
    finally:
        store.close()
    detail = job_detail(job)
    if args.json:
        print(json.dumps(detail))
        return 0
    for name, value in detail.items():
        if value is None or value is False or value in ([], {}):
            continue
        print(f"{name}: {value if isinstance(value, str | int | float) else json.dumps(value)}")
    return 0


def _stored_job(store: JobStore, job_id: str, settings: Settings) -> Job:
    job = store.get_job(job_id)
    if job is None:
        raise InvalidInput(f"no job {job_id} in {jobs_location(settings)}", field="job-id")
    return job


def run_admin_cancel(args: argparse.Namespace, settings: Settings) -> int:
    settings, store = _open_existing_store(args, settings, writes=True)
    try:
        before = _stored_job(store, args.job_id, settings)
        job = store.cancel(before.id, time.time())  # changes nothing once the job has ended
        if job is None:  # deleted by the retention sweep meanwhile
            raise InvalidInput(f"no job {args.job_id} in {jobs_location(settings)}", field="job-id")
        if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):  # the API's 409, in its words
            raise InvalidInput(
                f"job {job.id} has already {job.status.value}; only queued or processing jobs cancel",
                field="job-id",
            )
        _tell_other_processes(settings, store, before, job)
    finally:
        store.close()
    print(_cancel_line(before, job))
    return 0


def _tell_other_processes(settings: Settings, store: JobStore, before: Job, job: Job) -> None:
    """What the API's cancel tells the processes of a PostgreSQL deployment at once (the stop, to the worker
    running the job; the end, to the job's subscribers). Without it they still learn it from the store: a
    worker's or the embedded server's heartbeat reads the cancel within seconds, and the API's subscribers
    re-read their jobs every few seconds."""
    from reangle.compose import open_event_bus, shared_database_url

    if not shared_database_url(settings):  # SQLite: the events of one process stay in that process
        return
    events = open_event_bus(settings, store)
    try:
        if _cancel_pending(job):
            events.request_stop(job.id)
        if job.status.is_terminal and job.status != before.status:
            events.publish(JobEvent(job_id=job.id, kind="status", job=job))
    finally:
        events.close()  # sends what is queued first


def _cancel_line(before: Job, job: Job) -> str:
    if before.status == JobStatus.CANCELED:
        return f"{job.id} was already canceled"
    if job.status == JobStatus.CANCELED:
        return f"{job.id} ({job.owner}) canceled"
    return (
        f"{job.id} ({job.owner}): cancel requested; the job stops at its next step, once its server reads "
        f"the cancel (within {HEARTBEAT_S:g} s)"
    )
