"""JobService: the one owner of the job lifecycle. Every API dialect and every runner goes through it.

queued -> processing -> succeeded | failed | canceled; terminal states never change. Runner writes are fenced
by attempt (see the store). Events (status, progress) go out through the event bus (`ports.EventBus`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reangle.core.assets import AssetService, new_id
from reangle.core.edit import EditPlan, EditRequest, GenerateRequest, SizeLimits, plan_edit, plan_generation
from reangle.core.inputs import (
    NUL,
    UrlCheck,
    UrlFetcher,
    decode_inline,
    is_http_url,
    refuse_bad_text,
    resolve_image,
)
from reangle.core.jobs import (
    Job,
    JobError,
    JobEvent,
    JobKind,
    JobStatus,
    OutputAsset,
    StatusChange,
    TimeLimits,
    WebhookTarget,
)
from reangle.core.lora_refs import LoraRules, check_each_once, check_local_path
from reangle.core.models import (
    MODELS,
    AnyInput,
    ModelSpec,
    TextToImageInput,
    WanImageInput,
    check_vendor_images,
)
from reangle.core.ports import AssetRecord, EventBus, JobStore, NewJob
from reangle.core.read_cache import ReadCache
from reangle.core.webhooks import PROGRESS_EVERY_S, wants_progress
from reangle.errors import Conflict, InvalidInput, NotFound, QueueFull, Unavailable, counted

MAX_PAGE = 100
MAX_BATCH = 64
MAX_IDEMPOTENCY_KEY = 200
#: fail_unserved reads the queued jobs of a model no longer served this many at a time.
UNSERVED_PAGE = 100
#: What a synchronous request whose job was canceled because the server stops answers (503, retried).
STOPPING = "the server is stopping, so the request's job was canceled: send the request again"
#: Progress of one job is stored (and published) at most this often, besides its first and last step: a
#: 40-step job on a fast GPU would otherwise write 40 rows a second.
PROGRESS_INTERVAL_S = 0.25
#: After a progress write the store could not take (another process holds the database), the job's progress
#: is not written for this long: each try would hold the event loop for the store's busy timeout.
PROGRESS_PAUSE_S = 10.0

log = logging.getLogger("reangle.jobs")


@dataclass(frozen=True, kw_only=True)
class ServiceLimits:
    max_queue: int = 1000
    #: queued jobs one owner may have at a time; None: no limit but max_queue
    max_queue_per_key: int | None = None
    max_attempts: int = 3
    result_ttl_s: float = 24 * 3600
    #: size limits and default area of the engine the jobs will run on
    sizes: SizeLimits = field(default_factory=SizeLimits)
    target_area: int = 1024 * 1024
    #: what the runner takes of a request's own LoRAs, checked at submit; None: not checked here (the API
    #: replica of a scale-out need not have the workers' settings; the runner still checks)
    loras: LoraRules | None = None


@dataclass(frozen=True, kw_only=True)
class SubmitRequest:
    model: str
    input: Any
    kind: JobKind = JobKind.EDIT
    priority: int = 0
    idempotency_key: str | None = None
    webhook: WebhookTarget | None = None
    #: see Job.source
    source: str | None = None
    limits: TimeLimits | None = None


class JobService:
    def __init__(
        self,
        store: JobStore,
        assets: AssetService,
        fetch: UrlFetcher,
        limits: ServiceLimits,
        *,
        events: EventBus,
        clock: Callable[[], float] = time.time,
        check_url: UrlCheck | None = None,
    ) -> None:
        self.store, self.assets, self.fetch, self.limits, self.clock = store, assets, fetch, limits, clock
        self.events = events
        #: checks a request's LoRA URLs at submit under the URL rules the runner's download applies (scheme,
        #: host, private addresses), so that one it would refuse is a 422 now, not a failed job later; None:
        #: not checked at submit (the runner still checks each download)
        self.check_url = check_url
        #: status reads kept while no event of their job says otherwise (scaled out only: see ReadCache)
        self.reads: ReadCache[tuple[Job, list[AssetRecord]]] = ReadCache()
        events.watch(self.reads)
        #: (job id, attempt) -> when its progress was last stored
        self._progress_written: dict[tuple[str, int], float] = {}
        #: (job id, attempt) -> when its last progress webhook was written (for jobs whose webhook asks)
        self._progress_notified: dict[tuple[str, int], float] = {}
        #: called with every job that reaches a terminal status (metrics)
        self.finished_hooks: list[Callable[[Job], None]] = []
        #: called with the jobs of every submit once they are queued (the embedded server's LoRA prefetch)
        self.queued_hooks: list[Callable[[Sequence[Job]], None]] = []
        #: set when the server stops: every `wait` answers and every event stream ends (see stop_waiting)
        self._stopping = asyncio.Event()

    # clients ------------------------------------------------------------------------------------------------

    async def submit(self, owner: str, request: SubmitRequest) -> Job:
        """Queue one job. The same Idempotency-Key with the same request returns the job already queued."""
        if request.idempotency_key is not None and len(request.idempotency_key) > MAX_IDEMPOTENCY_KEY:
            raise InvalidInput(
                f"Idempotency-Key: at most {MAX_IDEMPOTENCY_KEY} characters", field="Idempotency-Key"
            )
        # off the event loop: inline images are decoded to be compared by content
        hashes = (
            await asyncio.to_thread(self._request_hashes, owner, request)
            if request.idempotency_key
            else (None,)
        )
        request_hash = hashes[0]
        if request.idempotency_key is not None:
            existing = self.store.job_by_idempotency_key(owner, request.idempotency_key)
            if existing is not None:
                return self._same_request(existing, hashes, request.idempotency_key)
        if request.idempotency_key is None:
            # early, before the images are fetched; the insert checks again. A keyed request skips it: a
            # twin that got in meanwhile is found by the insert and returned, not refused as a full queue.
            self._check_queue_room(1)
        new = await self._prepare(owner, request, batch_id=None, request_hash=request_hash)
        job, stored_hash = self._insert([new])[0]
        if request.idempotency_key is not None:  # a concurrent submit with this key may have won
            job = self._same_request((job, stored_hash), hashes, request.idempotency_key)
        self._announce([job])
        return job

    async def submit_batch(
        self,
        owner: str,
        model: str,
        inputs: Sequence[Any],
        *,
        webhook: WebhookTarget | None = None,
        source: str | None = None,
        limits: TimeLimits | None = None,
    ) -> tuple[str, list[Job]]:
        """Queue one edit job per input, all or none, under one batch id (each with `webhook`, `source`,
        `limits`)."""
        if not 1 <= len(inputs) <= MAX_BATCH:
            raise InvalidInput(f"a batch holds 1 to {MAX_BATCH} items, got {len(inputs)}", field="items")
        self._check_batch_fits(len(inputs))
        model_spec(model)
        self._check_queue_room(len(inputs))
        batch_id = new_id("batch")
        new_jobs = []
        for index, data in enumerate(inputs):
            with _naming_item(index):
                new_jobs.append(
                    await self._prepare(
                        owner,
                        SubmitRequest(model=model, input=data, webhook=webhook, source=source, limits=limits),
                        batch_id=batch_id,
                    )
                )
        jobs = [job for job, _ in self._insert(new_jobs)]
        self._announce(jobs)
        return batch_id, jobs

    def _request_hashes(self, owner: str, request: SubmitRequest) -> tuple[str, str]:
        """What a keyed request is recognised by: its hash with its images by content (a client retrying
        uploads its file again, as a new asset of the same bytes), stored with its job; then its hash as sent,
        as jobs stored before were hashed."""
        digests = {}
        for ref in _image_refs(request.input):
            if ref.startswith("asset_"):
                with contextlib.suppress(NotFound):  # refused later, by the submit itself
                    digests[ref] = "sha256:" + self.assets.get(owner, ref).sha256
            elif not is_http_url(ref):
                with contextlib.suppress(InvalidInput):  # likewise
                    digests[ref] = "sha256:" + hashlib.sha256(decode_inline(ref, field="images")).hexdigest()
        return _request_hash(request, digests), _request_hash(request, {})

    def _same_request(self, stored: tuple[Job, str | None], hashes: Sequence[str | None], key: str) -> Job:
        job, stored_hash = stored
        if stored_hash not in hashes:
            raise Conflict(
                f"Idempotency-Key {key!r} was already used for a different request (job {job.id})",
                hint="use a new key for a new request",
            )
        return job

    def _insert(self, new_jobs: Sequence[NewJob]) -> list[tuple[Job, str | None]]:
        return self.store.insert_jobs(
            new_jobs, max_queued=self.limits.max_queue, max_queued_per_owner=self.limits.max_queue_per_key
        )

    def _check_batch_fits(self, count: int) -> None:
        """A batch larger than the queue may ever hold is refused as such: a 429 would ask for retries that
        can never succeed."""
        limits = [(self.limits.max_queue, "the queue holds", "REANGLE_MAX_QUEUE")]
        if self.limits.max_queue_per_key is not None:
            limits.append(
                (self.limits.max_queue_per_key, "one API key may have", "REANGLE_MAX_QUEUE_PER_KEY")
            )
        for limit, holder, setting in limits:
            if count > limit:
                raise InvalidInput(
                    f"a batch of {count} items cannot be queued: {holder} at most {limit} queued jobs "
                    f"({setting})",
                    field="items",
                    hint=f"send it as batches of at most {limit} items",
                )

    def _check_queue_room(self, count: int) -> None:
        queued = self.queue_depth()
        if queued + count > self.limits.max_queue:
            raise QueueFull(f"the queue holds {counted(queued, 'job')}; its limit is {self.limits.max_queue}")

    def _announce(self, jobs: Sequence[Job]) -> None:
        self.events.work_arrived()
        for job in jobs:
            self._publish_status(job)
        for hook in self.queued_hooks:
            hook(jobs)

    async def _prepare(
        self,
        owner: str,
        request: SubmitRequest,
        *,
        batch_id: str | None,
        request_hash: str | None = None,
    ) -> NewJob:
        """Validate the input, resolve its images into assets and plan every edit; nothing is queued yet."""
        spec = model_spec(request.model)
        if spec.unavailable:
            raise InvalidInput(
                f"model {spec.id} is unavailable on this server: {spec.unavailable}", field="model"
            )
        refuse_bad_text(request.input, "input")
        validated = spec.validate(request.kind, request.input)
        loras = [] if isinstance(validated, WanImageInput) else validated.lora_refs()
        if self.limits.loras is not None:
            self.limits.loras.check(loras)
        check_each_once(loras)  # on every process: an API replica has no LoraRules
        for lora in loras:
            if lora.kind == "path":
                check_local_path(lora.value, lora.field)
            elif lora.kind == "url" and self.check_url is not None:
                await self.check_url(lora.value, lora.field)
        data = validated.model_dump(mode="json")
        records = []
        image_field = "image" if request.kind == JobKind.ORBIT else "images"
        resolved = []
        for position, ref in enumerate(validated.images):
            field = f"input.{image_field}" + ("" if request.kind == JobKind.ORBIT else f".{position}")
            record = await resolve_image(ref, owner, self.assets, self.fetch, field=field)
            self.store.extend_asset(record.id, self.clock() + self.limits.result_ttl_s)
            resolved.append(record.id)
            records.append(record)
        if request.kind == JobKind.ORBIT:
            data["image"] = resolved[0]
        elif "images" in data:
            data["images"] = resolved
        self._check_plans(validated, records)
        now = self.clock()
        job = Job(
            id=new_id("job"),
            owner=owner,
            model=spec.id,
            kind=request.kind,
            input=data,
            priority=request.priority,
            created_at=now,
            history=(StatusChange(status=JobStatus.QUEUED, at=now),),
            batch_id=batch_id,
            webhook=request.webhook,
            source=request.source,
            limits=request.limits,
        )
        return NewJob(job=job, idempotency_key=request.idempotency_key, request_hash=request_hash)

    def _check_plans(self, validated: AnyInput, records: list[AssetRecord]) -> None:
        if isinstance(validated, WanImageInput):
            check_vendor_images([(r.width, r.height, r.bytes) for r in records])
            return
        sizes = [(record.width, record.height) for record in records]
        requests: Sequence[EditRequest | GenerateRequest] = (
            validated.generate_requests(seed=0)
            if isinstance(validated, TextToImageInput)
            else validated.edit_requests()
        )
        for request in requests:
            plan_request(request, sizes, limits=self.limits.sizes, target_area=self.limits.target_area)

    def get(self, owner: str, job_id: str) -> Job:
        # no id this server hands out holds a NUL; PostgreSQL cannot even compare one
        job = self.store.get_job(job_id) if NUL not in job_id else None
        if job is None or job.owner != owner:
            raise NotFound(f"no job {job_id}")
        return self._past_ttl_ended(job)

    def get_with_outputs(self, owner: str, job_id: str) -> tuple[Job, list[AssetRecord]]:
        """The job and the records of its outputs still stored, in one read of the store, or none when an
        earlier read is still current (the status read clients poll)."""
        found = self.reads.get(job_id)
        if found is None:
            ticket = self.reads.ticket()
            found = self.store.get_job_with_outputs(job_id) if NUL not in job_id else None
            if found is not None:
                self.reads.put(job_id, found, ticket)
        if found is None or found[0].owner != owner:
            raise NotFound(f"no job {job_id}")
        job, outputs = found
        return self._past_ttl_ended(job), outputs

    def _past_ttl_ended(self, job: Job) -> Job:
        """The job as it stands; a queued one past its total time limit (RunPod's ttl) is ended as timed out
        when read, as the limit promises, rather than once a runner takes it. Every read of jobs a client
        sees goes through here, some in a worker thread (see LocalEventBus.publish)."""
        limits, now = job.limits, self.clock()
        if job.status != JobStatus.QUEUED or limits is None or limits.total_s is None:
            return job
        if now < job.created_at + limits.total_s:
            return job
        try:
            failed = self.store.fail_queued(job.id, limits.error(job, now), now)
        except Unavailable:
            return job  # a runner (or the next read) ends it
        if failed is None:  # taken or canceled meanwhile
            return self.store.get_job(job.id) or job
        self._ended(failed)
        return failed

    def list_jobs(
        self,
        owner: str,
        *,
        status: JobStatus | None = None,
        limit: int = 20,
        cursor: str | None = None,
        cursor_field: str = "cursor",
    ) -> tuple[list[Job], str | None]:
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}, got {limit}", field="limit")
        before = None if cursor is None else parse_cursor(cursor, field=cursor_field)
        jobs, next_seq = self.store.list_jobs(owner, status=status, limit=limit, before_seq=before)
        jobs = [self._past_ttl_ended(job) for job in jobs]
        return jobs, (str(next_seq) if next_seq is not None else None)

    def batch(self, owner: str, batch_id: str) -> list[Job]:
        stored = self.store.batch_jobs(batch_id) if NUL not in batch_id else []
        jobs = [self._past_ttl_ended(job) for job in stored if job.owner == owner]
        if not jobs:
            raise NotFound(f"no batch {batch_id}")
        return jobs

    def cancel(self, owner: str, job_id: str) -> Job:
        job = self.get(owner, job_id)
        if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            raise Conflict(
                f"job {job_id} has already {job.status.value}; only queued or processing jobs cancel"
            )
        canceled = self.store.cancel(job_id, self.clock())
        assert canceled is not None
        # decided from the store's answer, not the read above: a runner may have claimed the job in between
        if canceled.status == JobStatus.PROCESSING and canceled.cancel_requested:
            self.events.request_stop(job_id)
        if canceled.status.is_terminal and canceled.status != job.status:
            self._ended(canceled)
        return canceled

    async def wait(self, owner: str, job_id: str, timeout: float) -> Job:
        """The job once it is terminal, or as it stands when `timeout` seconds have passed."""
        async with self.subscribe(owner, job_id) as events:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    async for event in events:
                        if event.job is not None and event.job.status.is_terminal:
                            return event.job
        return self.get(owner, job_id)

    @contextlib.asynccontextmanager
    async def subscribe(self, owner: str, job_id: str) -> AsyncIterator[AsyncIterator[JobEvent]]:
        """Events of one job, starting with its current status; the stream ends after a terminal status."""
        with self.events.subscribe(job_id) as queue:
            queue.put_nowait(JobEvent(job_id=job_id, kind="status", job=self.get(owner, job_id)))
            yield _until_terminal(queue, self._stopping)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop_waiting(self) -> None:
        """The server is stopping: every `wait` answers with its job as it stands and every event stream ends
        now, so that clients get a whole answer (and poll or reconnect) rather than a cut connection."""
        self._stopping.set()

    def job_by_idempotency_key(self, owner: str, key: str) -> Job | None:
        found = self.store.job_by_idempotency_key(owner, key)
        return self._past_ttl_ended(found[0]) if found else None

    def counts(self) -> dict[str, int]:
        """How many stored jobs have each status, across all keys."""
        return self.store.count_by_status()

    def queue_depth(self) -> int:
        return self.store.count_by_status().get(JobStatus.QUEUED, 0)

    # runners ------------------------------------------------------------------------------------------------

    def recover(self) -> tuple[list[Job], list[Job]]:
        """At start-up, before any runner: re-queue jobs a previous process left processing, or end them (see
        JobStore.recover). Returns (requeued, ended)."""
        requeued, ended = self.store.recover(self.clock(), self.limits.max_attempts)
        for job in ended:
            self._keep_inputs(job)
            self._ended(job)
        if requeued:
            self.events.work_arrived()
        return requeued, ended

    def fail_unserved(self, served: Collection[str]) -> list[Job]:
        """At start-up of a server that runs every job itself (the embedded one), before its runner: fail the
        queued jobs of models it no longer serves (turned off or removed from the catalog), which would
        otherwise wait forever. Scaled out, another worker may serve them: they are left queued there."""
        failed = []
        for model in sorted(set(self.store.queued_by_model()) - set(served)):
            # straight from queued to failed: not shown processing again (a job re-queued at a restart ran
            # before, and its error says so)
            while job_ids := self.store.queued_job_ids(model, UNSERVED_PAGE):
                for job_id in job_ids:
                    queued = self.store.get_job(job_id)
                    error = unserved_error(model, ran_before=queued is not None and _ran_before(queued))
                    ended = self.store.fail_queued(job_id, error, self.clock())
                    if ended is not None:  # None: canceled (or failed) meanwhile, and announced then
                        self._keep_inputs(ended)
                        self._ended(ended)
                        failed.append(ended)
        return failed

    async def next_job(self, poll_s: float = 1.0, *, models: Collection[str] | None = None) -> Job | None:
        """Claim the next queued job (of `models` only, when given), waiting up to `poll_s` for one."""
        job = self.store.claim_next(self.clock(), models=models)
        if job is None:
            await self.events.wait_for_work(poll_s)
            job = self.store.claim_next(self.clock(), models=models)
        if job is not None:
            self._started(job)
        return job

    def claim(self, job_id: str) -> Job | None:
        """Take one job the dispatcher handed to this process's runner: the job to run (processing, as the
        next attempt if an earlier runner of it went silent), or None when there is nothing to run."""
        job = self.store.claim_job(job_id, self.clock(), self.limits.max_attempts)
        if job is None:
            return None
        if job.status != JobStatus.PROCESSING:  # canceled or out of attempts just now
            self._ended(job)
            return None
        self._started(job)
        return job

    def _started(self, job: Job) -> None:
        log.info("job %s started: %s, attempt %d", job.id, job.model, job.attempt)
        self._keep_inputs(job)
        self.events.forget(job.id)
        flag = self.events.stop_flag(job.id)  # a fresh flag for this attempt, there for a cancel from now on
        if job.cancel_requested:
            flag.set()
        self._publish_status(job)

    def stop_flag(self, job: Job) -> threading.Event:
        return self.events.stop_flag(job.id)

    def should_stop(self, job: Job) -> Callable[[], bool]:
        """What a running job looks at between its steps: true once it is canceled or past its time limits
        (thread-safe). A job stopped on it ends with `end_stopped`."""
        stop = self.stop_flag(job)
        deadline = job.limits.deadline(job) if job.limits else None
        if deadline is None:
            return stop.is_set
        return lambda: stop.is_set() or self.clock() >= deadline

    def end_stopped(self, job: Job, timings: dict[str, float] | None = None) -> Job | None:
        """End a job whose run stopped on `should_stop`: canceled, or failed as timed out."""
        now, limits = self.clock(), job.limits
        deadline = limits.deadline(job) if limits else None
        if limits and deadline is not None and now >= deadline and not self.stop_flag(job).is_set():
            return self.fail(job, limits.error(job, now), timings)
        return self.mark_canceled(job)

    def report_progress(self, job: Job, step: int, steps: int) -> None:
        now = self.clock()
        last = self._progress_written.get((job.id, job.attempt))
        if last is not None and (now < last or (step < steps and now - last < PROGRESS_INTERVAL_S)):
            return  # paused (see PROGRESS_PAUSE_S), or written a moment ago
        self._progress_written[job.id, job.attempt] = now
        fraction = min(1.0, step / steps) if steps else 0.0
        try:
            stored = self.store.set_progress(
                job.id, job.attempt, fraction, webhook_at=self._progress_webhook(job, now)
            )
        except Unavailable:
            self._progress_written[job.id, job.attempt] = self.clock() + PROGRESS_PAUSE_S
            raise
        if stored:
            progress = {"progress": fraction, "step": step, "steps": steps}
            self.events.publish(JobEvent(job_id=job.id, kind="progress", progress=progress))

    def _progress_webhook(self, job: Job, now: float) -> float | None:
        """`now` when a progress event is due for the job's webhook: one per PROGRESS_EVERY_S of its run, the
        first that long after its first step (a short job sends job.processing and its end only)."""
        if not wants_progress(job.webhook):
            return None
        last = self._progress_notified.setdefault((job.id, job.attempt), now)
        if now - last < PROGRESS_EVERY_S:
            return None
        self._progress_notified[job.id, job.attempt] = now
        return now

    def complete(self, job: Job, outputs: Sequence[OutputAsset], timings: dict[str, float]) -> Job | None:
        return self._finish(job, JobStatus.SUCCEEDED, outputs=outputs, timings=timings)

    def fail(self, job: Job, error: JobError, timings: dict[str, float] | None = None) -> Job | None:
        return self._finish(job, JobStatus.FAILED, error=error, timings=timings)

    def release(self, job: Job) -> None:
        """The runner gives the job back (the server is stopping cleanly, or the store was unavailable): queue
        it again without spending one of its attempts."""
        self._forget(job)
        if self.store.release(job.id, job.attempt, self.clock()):
            released = self.store.get_job(job.id)
            if released is not None:
                self._publish_status(released)

    def mark_canceled(self, job: Job) -> Job | None:
        return self._finish(job, JobStatus.CANCELED)

    def _finish(self, job: Job, status: JobStatus, **fields: Any) -> Job | None:
        self._forget(job)
        finished = self.store.finish(job.id, job.attempt, status, self.clock(), **fields)
        if finished is not None:
            self._keep_inputs(finished)
            self._ended(finished)
        return finished

    def _ended(self, job: Job) -> None:
        log.info("%s", ended_line(job))
        self._publish_status(job)
        for hook in self.finished_hooks:
            hook(job)

    def sweep(self) -> tuple[int, int]:
        """End the queued jobs past their total time limit; delete finished jobs past retention and expired
        assets; returns (jobs, files) deleted. The inputs of unfinished jobs are kept, however long those jobs
        wait or run."""
        now = self.clock()
        for job in self.store.queued_with_time_limits(self.limits.max_queue):
            self._past_ttl_ended(job)  # told to webhooks and event streams now, not once a runner takes it
        self.store.extend_job_inputs(now + self.limits.result_ttl_s)
        jobs = self.store.delete_finished_before(now - self.limits.result_ttl_s)
        return jobs, self.assets.sweep()

    def _keep_inputs(self, job: Job) -> None:
        """A job's inputs live as long as the job: through its run, then for its retention time."""
        self.store.extend_job_inputs(self.clock() + self.limits.result_ttl_s, job_id=job.id)

    def _forget(self, job: Job) -> None:
        """The runner is done with the job (it ended, or went back to the queue)."""
        self.events.forget(job.id)
        self._progress_written.pop((job.id, job.attempt), None)
        self._progress_notified.pop((job.id, job.attempt), None)

    def _publish_status(self, job: Job) -> None:
        self.events.publish(JobEvent(job_id=job.id, kind="status", job=job))


@contextlib.contextmanager
def _naming_item(index: int) -> Iterator[None]:
    """An error about one item of a batch says which item it is about."""
    try:
        yield
    except InvalidInput as exc:
        field = f"items.{index}.{exc.field}" if exc.field else f"items.{index}"
        raise type(exc)(f"items.{index}: {exc.message}", field=field, hint=exc.hint) from None


async def _until_terminal(queue: asyncio.Queue[JobEvent], stopping: asyncio.Event) -> AsyncIterator[JobEvent]:
    stop = asyncio.ensure_future(stopping.wait())
    get: asyncio.Future[JobEvent] | None = None
    try:
        while True:
            get = asyncio.ensure_future(queue.get())
            await asyncio.wait({get, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not get.done():
                return
            event = get.result()
            yield event
            if event.job is not None and event.job.status.is_terminal:
                return
    finally:
        stop.cancel()
        if get is not None:
            get.cancel()


def unserved_error(model: str, *, ran_before: bool) -> JobError:
    """The error of a queued job failed at start-up because its model is no longer served: a job re-queued
    at a restart ran before (and was interrupted), any other never ran."""
    ran = (
        "the job had started before a restart interrupted it, and was not run again"
        if ran_before
        else "the job never ran"
    )
    return JobError(
        code="model_unavailable",
        message=f"model {model} is no longer served by this server (it was turned off or removed from its "
        f"catalog); {ran}",
        hint="submit it again to a model GET /v1/models lists",
    )


def _ran_before(job: Job) -> bool:
    """Whether a queued job was processing once (a runner took it, and a restart re-queued it)."""
    return job.attempt > 1 or any(change.status == JobStatus.PROCESSING for change in job.history)


def model_spec(model_id: str) -> ModelSpec:
    if model_id not in MODELS:
        raise InvalidInput(f"unknown model {model_id!r}; choose one of {', '.join(MODELS)}", field="model")
    return MODELS[model_id]


def _image_refs(data: Any) -> list[str]:
    """The input images a request names: an edit's `images`, an orbit's `image`."""
    if not isinstance(data, dict):
        return []
    images, image = data.get("images"), data.get("image")
    refs = images if isinstance(images, list) else [image]
    return [ref for ref in refs if isinstance(ref, str)]


def _request_hash(request: SubmitRequest, image_digests: Mapping[str, str]) -> str:
    """A hash of the request, with each input image `image_digests` names replaced by its digest."""
    data = request.input
    if image_digests:
        data = dict(data)
        if isinstance(data.get("images"), list):
            data["images"] = [
                image_digests.get(ref, ref) if isinstance(ref, str) else ref for ref in data["images"]
            ]
        if isinstance(data.get("image"), str):
            data["image"] = image_digests.get(data["image"], data["image"])
    fields = [request.model, request.kind.value, data, request.priority]
    if request.limits is not None:  # a request without limits hashes as before they existed
        fields.append([request.limits.run_s, request.limits.total_s])
    body = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


def plan_request(
    request: EditRequest | GenerateRequest,
    sizes: Sequence[tuple[int, int]],
    *,
    limits: SizeLimits,
    target_area: int,
) -> EditPlan:
    """An edit planned against its input images' sizes, or a generation (which has none)."""
    if isinstance(request, GenerateRequest):
        return plan_generation(request, limits=limits, target_area=target_area)
    return plan_edit(request, sizes, limits=limits, target_area=target_area)


_CURSOR = re.compile(r"[0-9]{1,18}")  # ASCII digits only, and below 2**63 (SQLite's integers)


def parse_cursor(text: str, *, field: str) -> int:
    """A page cursor this server handed out (a job sequence number), or InvalidInput naming `field`."""
    if not _CURSOR.fullmatch(text):
        raise InvalidInput(f"{field} is not one this server returned", field=field)
    return int(text)


def ended_line(job: Job) -> str:
    """The log's line for a job that has ended: its status, run time, and its error's code and message."""
    ran = f" after {job.finished_at - job.started_at:.1f} s" if job.started_at and job.finished_at else ""
    line = f"job {job.id} {job.status.value}{ran}: {job.model}, attempt {job.attempt}"
    return f"{line}; {job.error.code}: {job.error.message}" if job.error else line
