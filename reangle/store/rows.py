"""How the SQL stores' rows become jobs and asset records.

Rows are read by position, in the column order of `schema.JOB_COLUMNS` and `schema.ASSET_COLUMNS`: every
status read decodes a job, and by position (with the enums looked up in dicts) that costs a quarter less
than by column name.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from reangle.core.jobs import Job, JobError, JobKind, JobStatus, OutputAsset, StatusChange, TimeLimits
from reangle.core.ports import AssetKey, AssetRecord, WebhookDelivery, WorkerStatus
from reangle.core.webhooks import target_from_json
from reangle.store.schema import ASSET_COLUMNS, JOB_COLUMN_COUNT, JOB_COLUMNS

# lookups in these are cheaper than calling the enum classes
_STATUSES = {status.value: status for status in JobStatus}
_KINDS = {kind.value: kind for kind in JobKind}


def job_from_row(row: Sequence[Any]) -> Job:
    """The Job in the first JOB_COLUMN_COUNT columns of `row`."""
    (
        job_id,
        owner,
        model,
        kind,
        input_json,
        status,
        progress,
        attempt,
        priority,
        created_at,
        started_at,
        finished_at,
        history_json,
        outputs_json,
        error_json,
        timings_json,
        batch_id,
        cancel_requested,
        webhook_json,
        vendor_task,
        source,
        limits,
    ) = row[:JOB_COLUMN_COUNT]
    return Job(
        id=job_id,
        owner=owner,
        model=model,
        kind=_KINDS[kind],
        input=json.loads(input_json),
        status=_STATUSES[status],
        progress=progress,
        attempt=attempt,
        priority=priority,
        created_at=created_at,
        started_at=started_at,
        finished_at=finished_at,
        history=tuple(
            StatusChange(status=_STATUSES[change["status"]], at=change["at"])
            for change in json.loads(history_json)
        ),
        outputs=tuple(OutputAsset(**output) for output in json.loads(outputs_json)),
        error=JobError(**json.loads(error_json)) if error_json else None,
        timings=json.loads(timings_json),
        batch_id=batch_id,
        cancel_requested=bool(cancel_requested),
        webhook=target_from_json(webhook_json),
        vendor_task=vendor_task,
        source=source,
        limits=TimeLimits(**json.loads(limits)) if limits else None,
    )


def asset_from_row(row: Sequence[Any]) -> AssetRecord:
    """The AssetRecord in a row of `schema.ASSET_COLUMNS`."""
    asset_id, owner, sha256, mime_type, width, height, size, created_at, expires_at, job_id, name = row
    return AssetRecord(
        id=asset_id,
        owner=owner,
        sha256=sha256,
        mime_type=mime_type,
        width=width,
        height=height,
        bytes=size,
        created_at=created_at,
        expires_at=expires_at,
        job_id=job_id,
        name=name,
    )


def limits_json(limits: TimeLimits | None) -> str | None:
    return json.dumps(asdict(limits)) if limits is not None else None


def history_json(history: Sequence[StatusChange]) -> str:
    return json.dumps([{"status": change.status.value, "at": change.at} for change in history])


def interrupted_error(attempts: int) -> JobError:
    """Why a job fails when the server stopped in the middle of it `attempts` times."""
    times = "once" if attempts == 1 else f"{attempts} times"
    return JobError(
        code="interrupted",
        message=(
            f"the server stopped in the middle of this job {times}; giving up after {attempts} attempt(s)"
        ),
        hint="the job may crash the server; check its input and the server log",
    )


def worker_values(worker: WorkerStatus) -> tuple[Any, ...]:
    """A worker as a row of `schema.WORKER_COLUMNS` (its models comma-separated)."""
    return (
        worker.name,
        worker.device,
        worker.engine,
        ",".join(worker.models),
        worker.started_at,
        worker.seen_at,
        worker.job_id,
    )


def worker_from_row(row: Sequence[Any]) -> WorkerStatus:
    name, device, engine, models, started_at, seen_at, job_id = row
    return WorkerStatus(
        name=name,
        device=device,
        engine=engine,
        models=tuple(models.split(",")) if models else (),
        started_at=started_at,
        seen_at=seen_at,
        job_id=job_id,
    )


def delivery_from_row(row: Sequence[Any]) -> WebhookDelivery:
    """The WebhookDelivery in a row of `schema.DELIVERY_COLUMNS`."""
    (
        delivery_id,
        job_id,
        owner,
        url,
        event_type,
        created_at,
        attempts,
        next_attempt_at,
        payload,
        delivered_at,
        given_up_at,
        last_error,
    ) = row
    return WebhookDelivery(
        id=delivery_id,
        job_id=job_id,
        owner=owner,
        url=url,
        type=event_type,
        created_at=created_at,
        attempts=attempts,
        next_attempt_at=next_attempt_at,
        payload=payload,
        delivered_at=delivered_at,
        given_up_at=given_up_at,
        last_error=last_error,
    )


def asset_listing_query(
    mark: str, owner: str, *, now: float, limit: int, before: AssetKey | None, outputs_only: bool
) -> tuple[str, list[Any]]:
    """An owner's unexpired assets newest first by (created_at, id) (through the index assets_owner), one
    more than `limit` (whether a next page exists); `mark` is the driver's placeholder (? or %s)."""
    sql = f"SELECT {ASSET_COLUMNS} FROM assets WHERE owner = {mark} AND expires_at >= {mark}"
    args: list[Any] = [owner, now]
    if outputs_only:
        sql += " AND job_id IS NOT NULL"
    if before is not None:
        sql += f" AND (created_at, id) < ({mark}, {mark})"
        args.extend(before)
    return f"{sql} ORDER BY created_at DESC, id DESC LIMIT {mark}", [*args, limit + 1]


def asset_page(rows: Sequence[Sequence[Any]], limit: int) -> tuple[list[AssetRecord], AssetKey | None]:
    """The records of an `asset_listing_query`'s rows, and the next page's key (None on the last)."""
    records = [asset_from_row(row) for row in rows[:limit]]
    more = len(rows) > limit
    return records, ((records[-1].created_at, records[-1].id) if more else None)


def all_jobs_query(
    mark: str, *, status: JobStatus | None, owner: str | None, model: str | None, limit: int
) -> tuple[str, list[Any]]:
    """Every owner's jobs, newest first; of `status`, `owner` and `model` where given (`mark`: ? or %s)."""
    filters = [("status", status.value if status else None), ("owner", owner), ("model", model)]
    wanted = [(column, value) for column, value in filters if value is not None]
    where = " AND ".join(f"{column} = {mark}" for column, _ in wanted)
    sql = f"SELECT {JOB_COLUMNS} FROM jobs{' WHERE ' + where if where else ''} ORDER BY seq DESC LIMIT {mark}"
    return sql, [value for _, value in wanted] + [limit]
