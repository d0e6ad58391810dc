"""The webhook outbox rows both SQL stores write in the transaction of a status change (or a progress
update), from the job's owner, stored webhook and batch id; and which rows a sender's claim leaves out."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from reangle.core.jobs import JobStatus
from reangle.core.webhooks import (
    PROGRESS_TYPE,
    RUNPOD,
    batch_event_id,
    event_type,
    new_event_id,
    target_from_json,
    wants_progress,
)

#: Parameters of INSERT_DELIVERY, in this order: id, job_id, owner, url, type, created_at, next_attempt_at.
INSERT_DELIVERY = (
    "INSERT INTO webhook_deliveries (id, job_id, owner, url, type, created_at, next_attempt_at) "
    "VALUES ({0},{0},{0},{0},{0},{0},{0}) ON CONFLICT (id) DO NOTHING"
)


def skipped_deliveries(
    owners: Collection[str], origins: Collection[str], placeholder: str
) -> tuple[str, list[str]]:
    """The WHERE conditions (each starting with AND) and their parameters that leave out the deliveries of
    `owners` and those whose URL starts with one of `origins` (followed by its end, `/`, `?` or `#`)."""
    conditions: list[str] = []
    args: list[str] = []
    if owners:
        conditions.append(f" AND owner NOT IN ({','.join([placeholder] * len(owners))})")
        args += owners
    for origin in origins:
        conditions.append(
            f" AND NOT (substr(url, 1, {len(origin)}) = {placeholder} "
            f"AND substr(url, {len(origin) + 1}, 1) IN ('', '/', '?', '#'))"
        )
        args.append(origin)
    return "".join(conditions), args


@dataclass(frozen=True, kw_only=True)
class JobWebhook:
    """What a store reads of a job to decide on a delivery: SELECT owner, webhook, batch_id."""

    job_id: str
    owner: str
    webhook: str | None
    batch_id: str | None


def status_delivery(job: JobWebhook, status: JobStatus, now: float) -> tuple[object, ...] | None:
    """The INSERT_DELIVERY parameters for the job's change to `status`; None when its webhook (if any) did
    not ask for it."""
    target = target_from_json(job.webhook)
    if target is None:
        return None
    kind = event_type(target, status)
    if kind is None:
        return None
    event_id = new_event_id()
    if target.flavor == RUNPOD and job.batch_id:
        event_id = batch_event_id(job.batch_id)
    return (event_id, job.job_id, job.owner, target.url, kind, now, now)


def progress_delivery(job: JobWebhook, now: float) -> tuple[object, ...] | None:
    target = target_from_json(job.webhook)
    if target is None or not wants_progress(target):
        return None
    return (new_event_id(), job.job_id, job.owner, target.url, PROGRESS_TYPE, now, now)
