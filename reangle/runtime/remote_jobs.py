"""Jobs of models served by a vendor's API (Wan 2.7 image through DashScope): no GPU of ours runs them, so
several wait on the vendor at once beside the local engine, each as its own task.

A job's vendor task is created once: an error of the vendor (refused content, a bad key, a task that did not
finish in time) fails the job with the vendor's reason rather than sending the request again, which could
bill twice. Only an unavailable store or bucket hands the job back, as for local jobs. The task's id is
recorded on the job as soon as the vendor gives it (`Job.vendor_task`), so that a run after a server stop or
a hand-back follows that task instead of creating a second one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from PIL import Image

from reangle.core.images import MIME_TYPES, decode_image, encode_image
from reangle.core.jobs import Job, JobError, OutputAsset
from reangle.core.models import WanImageInput
from reangle.core.ports import JobStore
from reangle.core.service import JobService
from reangle.engine.rewriter import Rewrite, RewriteTask
from reangle.errors import AssetGone, Canceled, ReangleError, Unavailable
from reangle.remote.dashscope import DashScopeClient, TaskResult, TaskUpdate
from reangle.remote.errors import ProviderConfigError
from reangle.runtime.base import UNAVAILABLE_RETRY_S, wait_to_record_again
from reangle.runtime.job_prep import JobPreparer

log = logging.getLogger("reangle.remote")

ClientFactory = Callable[[str], DashScopeClient]
#: Claims the next queued job of a remote model; None when none came within its wait.
Claim = Callable[[], Awaitable[Job | None]]
#: How far along a vendor's task is, as the job's progress (there are no steps to count).
_PROGRESS = {"PENDING": (0, 3), "RUNNING": (1, 3), "SUCCEEDED": (2, 3)}


class RemoteJobs:
    def __init__(
        self,
        service: JobService,
        preparer: JobPreparer,
        client: ClientFactory | None,
        *,
        concurrency: int,
        unavailable: str = "",
    ) -> None:
        self.service, self.preparer, self._client = service, preparer, client
        self.unavailable = unavailable
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        #: the ids of the jobs being run (for the heartbeat's check of cancels stored by another process)
        self.running: set[str] = set()

    async def run_forever(self, claim: Claim, retry_s: float = 1.0) -> None:
        """Claim remote jobs with `claim` (the job service's `next_job` for the remote models) and run each in
        the background, in a loop of its own beside the local runner's. A job is claimed only once a slot is
        free: one waiting for a slot stays queued, and no local job waits behind it. When this task is
        canceled, every job in flight goes back to the queue (see `stop`)."""
        try:
            while True:
                await self._slots.acquire()
                try:
                    job = await claim()
                except Unavailable as exc:  # another process holds the database: as the local runner does
                    self._slots.release()
                    log.warning(
                        "cannot claim a remote job (%s); trying again in %g s", exc, UNAVAILABLE_RETRY_S
                    )
                    await asyncio.sleep(UNAVAILABLE_RETRY_S)
                    continue
                except Exception:  # the store: try again, as the local runner does
                    self._slots.release()
                    log.exception("claiming a remote job failed; trying again in %g s", retry_s)
                    await asyncio.sleep(retry_s)
                    continue
                if job is None:
                    self._slots.release()
                    continue
                self._spawn(job)
        finally:
            await self.stop()

    def _spawn(self, job: Job) -> None:
        """Run `job` in the background in the slot the caller has taken (released when it ends)."""
        task = asyncio.create_task(self.run(job), name=f"remote {job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def stop(self) -> None:
        """Stop following every job in flight; each goes back to the queue (a PENDING vendor task is canceled
        at the vendor, a running one is let go)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def run(self, job: Job) -> None:
        """Run `job` to its end (as `run_forever` does in the background)."""
        self.running.add(job.id)
        try:
            await self._run(job)
        finally:
            self.running.discard(job.id)

    async def _run(self, job: Job) -> None:
        started = time.perf_counter()
        timings = {"queue_s": (job.started_at or job.created_at) - job.created_at}
        try:
            outputs = await self._render(job, timings)
        except asyncio.CancelledError:
            with contextlib.suppress(Unavailable):
                self.service.release(job)
            raise
        except Canceled:
            await self._record(job, "cancel", lambda: self.service.end_stopped(job, timings))
            return
        except _StoreUnavailable as exc:
            log.warning("job %s: %s; handing it back", job.id, exc.__cause__)
            with contextlib.suppress(Unavailable):
                self.service.release(job)
            return
        except ReangleError as exc:
            error = JobError(code=exc.code, message=exc.message, hint=exc.hint)
            await self._record(job, "failure", lambda: self.service.fail(job, error, timings))
            return
        except Exception:
            log.exception("job %s failed unexpectedly", job.id)
            error = JobError(code="internal_error", message="the remote job failed (the server log has why)")
            await self._record(job, "failure", lambda: self.service.fail(job, error, timings))
            return
        timings["run_s"] = time.perf_counter() - started
        await self._record(job, "outputs", lambda: self.service.complete(job, outputs, timings))

    async def _record(self, job: Job, what: str, record: Callable[[], object]) -> None:
        """Record the job's end, again while the store is unavailable, until it takes it (see
        wait_to_record_again; a stop cancels this task): the vendor's work is paid for, and a job left
        processing would be run again, with a new (billed) vendor task."""
        for tries in itertools.count():
            try:
                record()
                return
            except Unavailable as exc:
                log.warning("job %s: its %s could not be recorded (%s); trying again", job.id, what, exc)
                await wait_to_record_again(tries)

    async def _render(self, job: Job, timings: dict[str, float]) -> list[OutputAsset]:
        spec, validated = self.preparer.validated(job)
        if not isinstance(validated, WanImageInput):
            raise TypeError(f"model {spec.id} is not a remote model")
        if self._client is None:
            raise ProviderConfigError(f"model {spec.id} is unavailable: {self.unavailable}")
        images: list[Image.Image] = []
        if validated.rewrite_prompt:  # the rewriter sees the images; the vendor gets their bytes (`_body`)
            try:
                images = await self.preparer.load_images(job, validated.images)
            except Unavailable as exc:
                raise _StoreUnavailable from exc
        # with images Wan edits them; without, it makes a new picture
        task: RewriteTask = "edit" if validated.images else "generate"
        should_stop = self.service.should_stop(job)
        prompt, rewrite = await self.preparer.prompt(spec, validated, images, task, should_stop=should_stop)
        if rewrite is not None:
            timings["rewrite_s"] = rewrite.seconds
        validated = validated.model_copy(update={"prompt": prompt})
        try:
            # reading, decoding and base64-encoding up to 9 large images: not on the event loop
            body = await asyncio.to_thread(self._body, job, validated, spec.entry.base)
        except Unavailable as exc:
            raise _StoreUnavailable from exc
        vendor_task = _VendorTaskRecord(self.service.store, job)
        remote = time.perf_counter()
        async with self._client(spec.entry.base) as client:
            result = await client.generate(
                body,
                on_status=lambda update: self._progress(job, update, vendor_task),
                on_created=vendor_task.created,
                should_stop=should_stop,
                task_id=job.vendor_task,  # created by an earlier run: followed, not created again
            )
        timings["inference_s"] = time.perf_counter() - remote
        if self.service.stop_flag(job).is_set():  # a cancel; the time limits spare a finished render
            raise Canceled("the job was canceled while its images were downloaded")
        try:
            return await asyncio.to_thread(self._store, job, validated, result, spec.entry.base, rewrite)
        except Unavailable as exc:
            raise _StoreUnavailable from exc

    def _body(self, job: Job, validated: WanImageInput, model: str) -> dict[str, Any]:
        """The vendor's request body, with the input images' bytes from the store as data URLs."""
        images = []
        for position, asset_id in enumerate(validated.images):
            self.service.assets.get(job.owner, asset_id)  # still there, and the job owner's
            found = self.service.assets.read_bytes(asset_id)
            if found is None:
                raise AssetGone(f"input image {position} (asset {asset_id}) is gone")
            images.append(found[0])
        return validated.vendor_request(images).to_body(model)

    def _progress(self, job: Job, update: TaskUpdate, vendor_task: _VendorTaskRecord) -> None:
        vendor_task.retry()
        step = _PROGRESS.get(update.status)
        if step is not None:
            with contextlib.suppress(Unavailable):
                self.service.report_progress(job, *step)

    def _store(
        self, job: Job, validated: WanImageInput, result: TaskResult, model: str, rewrite: Rewrite | None
    ) -> list[OutputAsset]:
        fmt = validated.output_format
        #: What the vendor was asked and answered, for accounting and support (its task id, its usage).
        plan: dict[str, object] = {
            "provider": "dashscope",
            "model": model,
            "prompt": validated.prompt,
            "task_id": result.task_id,
            "request_id": result.request_id,
            "usage": result.usage,
        }
        if rewrite is not None:
            plan["rewrite"] = rewrite.to_dict()
        outputs = []
        for image in result.images:
            data, mime = image.data, image.mime_type
            if mime != MIME_TYPES[fmt]:
                data, mime = encode_image(decode_image(data).image, fmt, validated.quality), MIME_TYPES[fmt]
            record = self.service.assets.put_output(
                job.owner, data, mime, image.width, image.height, job_id=job.id
            )
            outputs.append(
                OutputAsset(
                    asset_id=record.id,
                    role="image",
                    width=image.width,
                    height=image.height,
                    mime_type=mime,
                    seed=validated.seed,
                    plan=dict(plan),
                )
            )
        return outputs


class _VendorTaskRecord:
    """Records on the job the vendor task its run created; while the store is unavailable, again at each
    status update of the task (until then, a server stop would have the next run create another task)."""

    def __init__(self, store: JobStore, job: Job) -> None:
        self._store, self._job = store, job
        self._unrecorded: str | None = None

    def created(self, task_id: str) -> None:
        self._unrecorded = task_id
        self.retry()

    def retry(self) -> None:
        task_id, job = self._unrecorded, self._job
        if task_id is None:
            return
        try:
            recorded = self._store.set_vendor_task(job.id, job.attempt, task_id)
        except Unavailable as exc:
            log.warning("job %s: its vendor task %s is not recorded yet: %s", job.id, task_id, exc)
            return
        self._unrecorded = None
        if not recorded:  # another runner holds the job now (it was recovered): that one decides
            log.warning(
                "job %s: attempt %d lost the job before its vendor task %s was recorded",
                job.id,
                job.attempt,
                task_id,
            )


class _StoreUnavailable(Exception):
    """Our own store or bucket was unavailable (not the vendor): the job is handed back."""
