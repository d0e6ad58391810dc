"""The webhook outbox rows both SQL stores write in the transaction of a status change (or a progress
update), from the job's owner, stored webhook and batch id."""

from __future__ import annotations

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
