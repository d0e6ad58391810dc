"""What the core needs from the outside, as typed protocols, and the records it exchanges with them.

The core imports no adapter: `reangle.store` implements these (SQLite or PostgreSQL for jobs; files or S3 for
blobs), `reangle.runtime` the event bus, and `reangle.compose` picks them from the settings.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Collection, Sequence
from contextlib import AbstractContextManager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from reangle.core.jobs import Job, JobError, JobEvent, JobStatus, OutputAsset

#: True while a client waits for the answer (set for each HTTP request: reangle.api.client_waits), in the
#: worker threads its work runs in too (they copy the context): a store then gives up waiting for a lock
#: another process holds as soon as on the event loop (an upload decodes and stores its image in a thread).
client_waiting: ContextVar[bool] = ContextVar("reangle_client_waiting", default=False)


@dataclass(frozen=True, kw_only=True)
class AssetRecord:
    id: str
    owner: str
    sha256: str
    mime_type: str
    width: int
    height: int
    bytes: int
    created_at: float
    expires_at: float
    #: the job that made it (outputs); None for uploads
    job_id: str | None = None
    #: the file name its uploader gave (a multipart file's name, Scenario's `name`); None if none
    name: str | None = None


@dataclass(frozen=True, kw_only=True)
class WorkerStatus:
    """A process running jobs, as it last reported itself."""

    name: str
    device: str
    engine: str
    models: tuple[str, ...]
    started_at: float
    seen_at: float
    #: the job in hand, if any
    job_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class ApiKeyRecord:
    """A stored API key as it is listed: never its secret, nor the secret's hash."""

    id: str
    name: str
    created_at: float


@dataclass(frozen=True, kw_only=True)
class WebhookDelivery:
    """One event of a job for its webhook (an outbox row): pending while `next_attempt_at` is set."""

    id: str
    job_id: str
    owner: str
    url: str
    #: "job.succeeded", "job.processing", "job.progress", ...
    type: str
    created_at: float
    attempts: int = 0
    next_attempt_at: float | None = None
    #: the body as first sent (every retry sends it again); None before the first attempt
    payload: str | None = None
    delivered_at: float | None = None
    given_up_at: float | None = None
    last_error: str | None = None


@dataclass(frozen=True, kw_only=True)
class NewJob:
    job: Job
    idempotency_key: str | None = None
    request_hash: str | None = None


@dataclass(frozen=True, kw_only=True)
class BlobPage:
    """One page of a walk over the stored blobs, in the store's own order."""

    #: digest -> when its bytes were last put (epoch seconds; a put of bytes already stored counts)
    put_at: dict[str, float]
    #: where the next page starts (the store's own marker); None once the walk has reached the end
    resume_after: str | None


#: Where a page of an owner's assets resumes: the (created_at, id) of the last asset before it.
AssetKey = tuple[float, str]


class JobStore(Protocol):
    """Jobs, asset records and API keys, durably. Every write a runner makes names the job's attempt and
    changes nothing once the job has moved on to another attempt; terminal statuses never change."""

    def close(self) -> None: ...

    # jobs
    def insert_jobs(
        self,
        new_jobs: Sequence[NewJob],
        *,
        max_queued: int | None = None,
        max_queued_per_owner: int | None = None,
    ) -> list[tuple[Job, str | None]]:
        """Insert all or none; each job with its stored request hash. A job whose idempotency key is taken
        comes back as the stored one. QueueFull when the queued jobs would pass `max_queued`, or a job's
        owner's queued jobs `max_queued_per_owner`."""
        ...

    def job_by_idempotency_key(self, owner: str, key: str) -> tuple[Job, str | None] | None: ...
    def get_job(self, job_id: str) -> Job | None: ...
    def get_job_with_outputs(self, job_id: str) -> tuple[Job, list[AssetRecord]] | None:
        """The job and the records of its outputs that are still stored, in one read (the status read)."""
        ...

    def list_jobs(
        self, owner: str, *, status: JobStatus | None, limit: int, before_seq: int | None
    ) -> tuple[list[Job], int | None]:
        """Newest first: the page, and the cursor of the next page (None on the last)."""
        ...

    def list_all_jobs(
        self,
        *,
        status: JobStatus | None = None,
        owner: str | None = None,
        model: str | None = None,
        limit: int,
    ) -> list[Job]:
        """Up to `limit` jobs of every owner, newest first; only those of `status`, `owner` and `model` where
        given (the operator's view: `reangle admin jobs`)."""
        ...

    def batch_jobs(self, batch_id: str) -> list[Job]: ...
    def claim_next(self, now: float, *, models: Collection[str] | None = None) -> Job | None:
        """Move the next queued job (highest priority, then oldest) to processing; only a job for one of
        `models` when given (a worker takes only what its engine serves), any job when None."""
        ...

    def claim_job(self, job_id: str, now: float, max_attempts: int) -> Job | None:
        """Hand one job to the caller's runner (a scale-out worker given it by the dispatcher): a queued job
        becomes processing; a processing one, whose runner went silent, becomes its next attempt, or fails
        after `max_attempts`, or ends canceled when a cancel was asked for. Returns the job as it now
        stands (processing when the caller is to run it); None when it does not exist or had ended."""
        ...

    def set_progress(
        self, job_id: str, attempt: int, progress: float, *, webhook_at: float | None = None
    ) -> bool:
        """Store the progress of a processing job of this attempt; with `webhook_at`, also write a
        job.progress delivery when its webhook asks for progress (the caller throttles)."""
        ...

    def finish(
        self,
        job_id: str,
        attempt: int,
        status: JobStatus,
        now: float,
        *,
        outputs: Sequence[OutputAsset] = (),
        error: JobError | None = None,
        timings: dict[str, float] | None = None,
    ) -> Job | None:
        """End a processing job of this attempt (None when the attempt lost it). A cancel accepted while it
        ran wins over success."""
        ...

    def set_vendor_task(self, job_id: str, attempt: int, task_id: str) -> bool:
        """Record the vendor task a processing job of this attempt created (it outlives the attempt: the
        job's next run follows it); whether it was recorded."""
        ...

    def cancel(self, job_id: str, now: float) -> Job | None: ...
    def release(self, job_id: str, attempt: int, now: float) -> bool: ...
    def recover(self, now: float, max_attempts: int) -> tuple[list[Job], list[Job]]:
        """Jobs left processing: re-queued as their next attempt, or ended (failed past `max_attempts`,
        canceled when a cancel was asked). Returns (requeued, ended)."""
        ...

    def count_by_status(self) -> dict[str, int]: ...
    def queued_by_model(self) -> dict[str, int]: ...
    def queued_job_ids(self, model: str, limit: int) -> list[str]:
        """Up to `limit` ids of the model's queued jobs, oldest first."""
        ...

    def queued_with_time_limits(self, limit: int) -> list[Job]:
        """Up to `limit` queued jobs that have time limits, oldest first (the sweep ends those past them)."""
        ...

    def fail_queued(self, job_id: str, error: JobError, now: float) -> Job | None:
        """Fail a queued job straight away with `error`, never having run it (its events and webhook
        deliveries as any failure's); None when the job is not queued (any more)."""
        ...

    def delete_finished_before(self, cutoff: float) -> int:
        """Delete the jobs that ended before `cutoff`, and end their outputs' lives at `cutoff` at the latest
        (for the assets sweep: a retention shortened since they were made); returns how many jobs."""
        ...

    # asset records
    def insert_asset(self, record: AssetRecord, *, if_absent: bool = False) -> None:
        """Store the record; with `if_absent`, a record already stored under its id is kept instead."""

    def get_asset(self, asset_id: str) -> AssetRecord | None: ...
    def get_assets(self, asset_ids: Sequence[str]) -> list[AssetRecord]:
        """The records of those assets that exist, in one read."""
        ...

    def list_assets(
        self,
        owner: str,
        *,
        now: float,
        limit: int,
        before: AssetKey | None = None,
        outputs_only: bool = False,
    ) -> tuple[list[AssetRecord], AssetKey | None]:
        """The owner's records not expired at `now`, newest first by (created_at, id): those before the key
        `before` where given, outputs only when asked. The page, and the key of its last record when more
        follow (the next page's `before`; None on the last)."""
        ...

    def extend_asset(self, asset_id: str, expires_at: float) -> None: ...
    def extend_job_inputs(self, expires_at: float, *, job_id: str | None = None) -> None: ...
    def delete_expired_assets(self, now: float) -> set[str]:
        """Delete expired asset records, and the output records an ended job did not keep; the content
        hashes no remaining record refers to."""
        ...

    def hashes_without_assets(self, hashes: Sequence[str]) -> set[str]:
        """Those of the content hashes that no asset record refers to (the caller passes a page of the orphan
        walk: up to a thousand)."""
        ...

    # workers
    def record_worker(self, worker: WorkerStatus) -> None:
        """Insert or replace the worker's row (a heartbeat)."""
        ...

    def list_workers(self, seen_since: float) -> list[WorkerStatus]: ...
    def forget_worker(self, name: str) -> None: ...

    # API keys
    def insert_api_key(self, key_id: str, name: str, key_hash: str, now: float) -> None: ...
    def count_api_keys(self) -> int: ...
    def api_key_id(self, key_hash: str) -> str | None: ...

    def has_api_key(self, key_id: str) -> bool: ...
    def list_api_keys(self) -> list[ApiKeyRecord]:
        """Every stored key, oldest first."""
        ...

    def delete_api_key(self, key_id: str) -> bool:
        """Remove the key (requests with it are refused from then on); False if there was none."""
        ...

    # shared secrets
    def shared_secret(self, name: str) -> str:
        """A random secret created once and kept in the store, the same for every process that asks."""
        ...

    # webhooks
    def webhook_secrets(self, owner: str, now: float) -> list[str]:
        """The owner's signing secrets, made on first use: the current one, then the one it replaced while
        that is still valid."""
        ...

    def rotate_webhook_secret(self, owner: str, now: float, overlap_s: float) -> str:
        """A new current secret; the old one stays valid for `overlap_s`."""
        ...

    def claim_webhook_deliveries(
        self,
        now: float,
        limit: int,
        lease_s: float,
        *,
        skip_owners: Collection[str] = (),
        skip_origins: Collection[str] = (),
    ) -> list[WebhookDelivery]:
        """Up to `limit` due deliveries, oldest first, each pushed `lease_s` into the future so that no other
        sender takes it meanwhile (a sender that dies lets it come due again). Those of `skip_owners`, or
        whose URL starts with one of `skip_origins` (`scheme://host:port`, as the URL gives them), stay where
        they are: the sender has all the attempts they may have under way."""
        ...

    def record_webhook_attempt(
        self, delivery_id: str, now: float, *, payload: str, error: str | None, retry_at: float | None
    ) -> None:
        """One attempt made: delivered when `error` is None; else tried again at `retry_at`, or given up
        when that is None."""
        ...

    def postpone_webhook_delivery(self, delivery_id: str, at: float) -> None:
        """Not yet sendable (a RunPod batch with items still running): due again at `at`, no attempt spent."""
        ...

    def webhook_deliveries(self, job_id: str) -> list[WebhookDelivery]:
        """The job's deliveries, oldest first."""
        ...


class BlobStore(Protocol):
    """Asset bytes, content-addressed by their SHA-256."""

    def put(self, data: bytes) -> str:
        """Store `data` once and return its SHA-256 (hex)."""
        ...

    def read(self, digest: str) -> bytes:
        """The bytes under `digest`; AssetGone when they are missing."""
        ...

    def delete(self, digest: str) -> None: ...

    def list_page(self, after: str | None, limit: int) -> BlobPage:
        """At most `limit` stored blobs, from the start of the store (`after` None) or from where an earlier
        page said to resume."""
        ...

    def local_path(self, digest: str) -> Path | None:
        """A file on this machine holding the bytes, for the server to send itself; None when they are
        missing or live elsewhere (see `public_url`)."""
        ...

    def public_url(self, digest: str, *, expires_at: float, mime_type: str) -> str | None:
        """A link clients fetch the bytes from without the API (a presigned object-store URL) valid until
        `expires_at`; None when the API serves them itself."""
        ...


class ChangeWatcher(Protocol):
    """Told of every job event (see EventBus.watch): the status-read cache."""

    enabled: bool

    def changed(self, job_id: str) -> None: ...
    def clear(self) -> None: ...


class EventBus(Protocol):
    """Carries what happens to jobs to whoever waits on it: status and progress events to the job's
    subscribers, "there is work" to idle runners, a cancel to the runner holding the job. Within one process
    on the embedded default; across processes when scaled out."""

    def publish(self, event: JobEvent) -> None: ...

    def subscribe(self, job_id: str) -> AbstractContextManager[asyncio.Queue[JobEvent]]:
        """A queue receiving the job's events from now on, until the context exits."""
        ...

    def work_arrived(self) -> None: ...

    async def wait_for_work(self, timeout_s: float) -> None:
        """Return when work arrives, or after `timeout_s`."""
        ...

    def stop_flag(self, job_id: str) -> threading.Event:
        """The flag a runner holding the job watches between denoising steps (made on first use)."""
        ...

    def request_stop(self, job_id: str) -> None:
        """Set the job's stop flag wherever the job runs."""
        ...

    def forget(self, job_id: str) -> None:
        """The runner is done with the job: drop its stop flag."""
        ...

    def watch(self, watcher: ChangeWatcher) -> None:
        """Tell `watcher` of every job event, this process's and the other processes'. A bus that carries
        events between processes enables it while it hears them and clears it when it may have missed some;
        in one process reads are local and it stays disabled."""
        ...

    async def listen(self) -> None:
        """Deliver other processes' events here until cancelled (returns at once when there are none)."""
        ...

    def close(self) -> None: ...
