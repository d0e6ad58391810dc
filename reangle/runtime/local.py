"""The embedded runner: one asyncio task per engine (per GPU), one render at a time on it.

A job runs in two stages. Its render (load the inputs, run the engine) holds the engine. Its finish (encode
and store the outputs, then complete the job) does not, so it runs in the background while the runner
already takes the next job and renders it: the GPU does not wait on image encoding or disk writes. At most
one finish is in flight: a render that ends while the previous finish still runs waits for it, which keeps
memory bounded and jobs completing in the order they were rendered. Blocking work runs in worker threads, so
the event loop keeps serving requests.

What holds across the two stages:
- A job succeeds only once all its outputs are stored. An error while encoding or storing fails that job
  alone; the runner goes on.
- A cancel accepted before the job completes wins, even when its render was done (the store's rule): the
  job ends canceled without outputs. The finish skips the encoding it has not started when it sees the cancel.
- A cancel while the job is being prepared (its LoRAs downloaded, its prompt rewritten) ends it canceled
  within STOP_CHECK_S: the preparation is abandoned, not waited for.
- A graceful stop (this task canceled) stops the render in progress and re-queues its job (as it does a job
  rendered but still waiting for the previous finish), and waits for the finish in flight: a job whose finish
  has started is stored and completed, not rendered again.
- kill -9: a job not completed yet is still `processing` in the store, so the next start re-queues it; the
  outputs it had stored belong to no job and expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from PIL import Image

from reangle.core.edit import EditPlan
from reangle.core.images import MIME_TYPES, OutputFormat, encode_image
from reangle.core.jobs import Job, JobError, JobKind, OutputAsset
from reangle.core.models import MODELS
from reangle.core.service import JobService, model_spec, plan_request
from reangle.engine.base import EditResult, Engine
from reangle.engine.lora_sources import ResolvedLora
from reangle.engine.rewriter import Rewrite
from reangle.errors import Canceled, LoraLoadError, ReangleError, Unavailable
from reangle.runtime.base import UNAVAILABLE_RETRY_S, wait_to_record_again
from reangle.runtime.job_prep import JobPreparer, PreparedJob
from reangle.runtime.orbit_extras import contact_sheet, turntable_webp
from reangle.runtime.remote_jobs import RemoteJobs

log = logging.getLogger("reangle.runner")

T = TypeVar("T")
RETRY_S = 1.0
#: How long a job whose inputs cannot be read (the store or the bucket is away) stays with its runner, tried
#: again every UNAVAILABLE_RETRY_S, before it goes back to the queue.
HOLD_UNAVAILABLE_S = 60.0
#: How often the stop flag of a job being prepared is looked at.
STOP_CHECK_S = 0.1


@dataclass(frozen=True, kw_only=True)
class _Rendered:
    image: Image.Image
    seed: int
    plan: EditPlan
    rewrite: Rewrite | None = None


class LocalRunner:
    def __init__(
        self,
        service: JobService,
        engine: Engine,
        *,
        preparer: JobPreparer | None = None,
        remote: RemoteJobs | None = None,
    ) -> None:
        self.service, self.engine = service, engine
        self.preparer = preparer or JobPreparer(service)
        self.remote = remote
        self._finishing: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        #: the job being rendered (for the heartbeat)
        self.rendering: Job | None = None

    async def run_forever(self, retry_s: float = RETRY_S) -> None:
        remote_ids = [spec.id for spec in MODELS.values() if spec.remote]
        local_ids = [spec.id for spec in MODELS.values() if not spec.remote]
        remote_loop = None
        if self.remote is not None and remote_ids:
            remote = self.remote.run_forever(lambda: self.service.next_job(models=remote_ids), retry_s)
            remote_loop = asyncio.create_task(remote, name="remote jobs")
        try:
            while True:
                try:
                    job = await self.service.next_job(models=local_ids)
                    if job is not None:
                        await self.run_job(job)
                except Unavailable as exc:
                    log.warning(
                        "the runner cannot take a job (%s); trying again in %g s", exc, UNAVAILABLE_RETRY_S
                    )
                    await asyncio.sleep(UNAVAILABLE_RETRY_S)
                except Exception:
                    # An error of the store must not end the runner: the server would go on accepting jobs
                    # that nothing runs.
                    log.exception("the runner failed; trying again in %g s", retry_s)
                    await asyncio.sleep(retry_s)
        finally:
            try:
                if remote_loop is not None:
                    remote_loop.cancel()
                    await asyncio.gather(remote_loop, return_exceptions=True)
            finally:
                await self.wait_finishing(stopping=True)

    async def run_to_end(self, job: Job) -> None:
        """Run a claimed job and return once it has ended (a remote one too: it holds this call's slot)."""
        if model_spec(job.model).remote:
            if self.remote is None:
                raise RuntimeError(f"job {job.id} needs a remote model, and this runner runs none")
            await self.remote.run(job)
        else:
            await self.run_job(job)
            await self.wait_finishing()

    async def run_job(self, job: Job) -> None:
        """Render `job`, then start its finish in the background and return; `wait_finishing` waits for it."""
        started = time.perf_counter()
        timings = {"queue_s": (job.started_at or job.created_at) - job.created_at}
        self.rendering = job
        try:
            rendered = await self._render_when_reachable(job, timings)
            await self.wait_finishing()
        except asyncio.CancelledError:  # the server is stopping; the engine thread has already stopped
            self.service.release(job)
            raise
        except (
            Unavailable
        ) as exc:  # not the job's fault: back to the queue, for a runner that reaches the store
            log.warning("job %s: %s; handing it back", job.id, exc)
            with contextlib.suppress(Unavailable):
                self.service.release(job)
            await asyncio.sleep(RETRY_S)  # not at once again: the store or the bucket may stay away a while
            return
        except Exception as exc:
            self._end_with_error(job, exc, timings, "rendering")
            return
        finally:
            self.rendering = None
        self._finishing = asyncio.create_task(
            self._finish(job, rendered, timings, started), name=f"finish {job.id}"
        )

    async def _render_when_reachable(self, job: Job, timings: dict[str, float]) -> list[_Rendered]:
        """Render `job`, keeping it in hand while the store or the bucket is away (Unavailable) for up to
        HOLD_UNAVAILABLE_S, trying again every UNAVAILABLE_RETRY_S. Handed back at once, another runner would
        take it straight away and hand it back too, many times a second: each a status change, an event and a
        webhook. Past that, Unavailable (only this runner may be cut off)."""
        held_until = time.monotonic() + HOLD_UNAVAILABLE_S
        while True:
            try:
                return await self._render_job(job, timings)
            except Unavailable as exc:
                if time.monotonic() + UNAVAILABLE_RETRY_S > held_until:
                    raise
                log.warning("job %s: %s; trying again in %g s", job.id, exc, UNAVAILABLE_RETRY_S)
                await asyncio.sleep(UNAVAILABLE_RETRY_S)

    def job_in_hand(self) -> str | None:
        return self.rendering.id if self.rendering else None

    def jobs_in_hand(self) -> list[str]:
        """The job being rendered and the remote jobs being followed."""
        remote = sorted(self.remote.running) if self.remote is not None else []
        return [self.rendering.id, *remote] if self.rendering else remote

    async def wait_finishing(self, *, stopping: bool = False) -> None:
        """Wait until the job finishing in the background, if any, has completed or failed. `stopping`: the
        runner stops, so a store still refusing the job's end after the first tries is not waited out."""
        if stopping:
            self._stopping.set()
        if self._finishing is not None:
            await asyncio.wait({self._finishing})
            self._finishing = None

    async def _render_job(self, job: Job, timings: dict[str, float]) -> list[_Rendered]:
        async with contextlib.AsyncExitStack() as stack:
            entering = stack.enter_async_context(self.preparer.prepared(job))
            prepared = await _unless_stopped(entering, self.service.should_stop(job))
            info = self.engine.info
            sizes = [image.size for image in prepared.images]
            plans = [
                plan_request(request, sizes, limits=info.limits, target_area=info.target_area)
                for request in prepared.requests
            ]
            if prepared.rewrite is not None:
                timings["rewrite_s"] = prepared.rewrite.seconds
            inference = time.perf_counter()
            rendered = await self._render(job, prepared, plans)
            timings["inference_s"] = time.perf_counter() - inference
            return rendered

    async def _render(self, job: Job, prepared: PreparedJob, plans: list[EditPlan]) -> list[_Rendered]:
        loop = asyncio.get_running_loop()
        stop = self.service.stop_flag(job)
        should_stop = self.service.should_stop(job)
        images = prepared.images

        def on_step(step: int, steps: int) -> None:
            loop.call_soon_threadsafe(self._report_progress, job, step, steps)

        def run() -> list[EditResult]:
            if prepared.generates:
                return self.engine.generate(plans, on_step=on_step, should_stop=should_stop)
            return self.engine.edit_views(images, plans, on_step=on_step, should_stop=should_stop)

        try:
            results = await _in_thread(run, on_cancel=stop.set)
        except LoraLoadError as exc:
            raise _as_users_see_it(exc, prepared.loras) from None
        return [
            _Rendered(image=image, seed=result.seed + k, plan=plan, rewrite=prepared.rewrite)
            for plan, result in zip(plans, results, strict=True)
            for k, image in enumerate(result.images)
        ]

    async def _finish(
        self, job: Job, rendered: Sequence[_Rendered], timings: dict[str, float], started: float
    ) -> None:
        """Store the outputs in a thread, then complete the job; again, while the store is unavailable, until
        it takes them, or until the runner stops (see wait_to_record_again). Outputs once stored are not
        stored again. Even when this task is canceled (the loop is closing) the thread is waited for and the
        job completed: its render is done, and a thread cannot be stopped halfway."""
        stop = self.service.stop_flag(job)
        encoding = time.perf_counter()
        loop = asyncio.get_running_loop()
        work: asyncio.Future[list[OutputAsset]] | None = None
        for tries in itertools.count():
            if work is None or work.exception() is not None:
                # a bare executor future, not a task: nothing cancels it, not even the loop's shutdown
                work = loop.run_in_executor(None, self._store_outputs, job, rendered, stop)
            try:
                await asyncio.wait({work})  # unlike awaiting `work`, this neither cancels it nor raises
            except asyncio.CancelledError:
                await asyncio.wait({work})
                with contextlib.suppress(Unavailable):
                    self._complete(job, work, timings, started, encoding)
                raise
            try:
                self._complete(job, work, timings, started, encoding)
                return
            except Unavailable as exc:
                what = "store the outputs" if work.exception() is not None else "record the end"
                log.warning("could not %s of job %s (%s); trying again", what, job.id, exc)
                if not await wait_to_record_again(tries, self._stopping):
                    log.error(
                        "could not record the end of job %s and the runner is stopping: it stays processing "
                        "until it runs again (at the next start; scaled out, on another worker)",
                        job.id,
                    )
                    return

    def _complete(
        self,
        job: Job,
        work: asyncio.Future[list[OutputAsset]],
        timings: dict[str, float],
        started: float,
        encoding: float,
    ) -> None:
        """Record the job's end. Raises Unavailable when the store is (while storing the outputs or recording
        the end), so that the caller may try again; after any other error of the store the job stays
        processing, to be run again (at the next start, or by the scale-out workers' check for jobs whose end
        went unrecorded)."""
        timings["encode_s"] = time.perf_counter() - encoding
        try:
            exc = work.exception()
            if isinstance(exc, Unavailable):
                raise exc
            if exc is not None:
                self._end_with_error(job, exc, timings, "storing its outputs")
                return
            timings["run_s"] = time.perf_counter() - started
            self.service.complete(job, work.result(), timings)
        except Unavailable:
            raise
        except Exception:
            log.exception("could not record the end of job %s", job.id)

    def _report_progress(self, job: Job, step: int, steps: int) -> None:
        try:
            self.service.report_progress(job, step, steps)
        except Unavailable as exc:  # progress is advisory: the job goes on and its end is recorded later
            log.warning("job %s: progress not recorded (%s)", job.id, exc)

    def _end_with_error(self, job: Job, exc: BaseException, timings: dict[str, float], stage: str) -> None:
        if isinstance(exc, Canceled):
            self.service.end_stopped(job, timings)
        elif isinstance(exc, ReangleError):
            self.service.fail(job, JobError(code=exc.code, message=exc.message, hint=exc.hint), timings)
        else:
            log.error("job %s failed unexpectedly while %s", job.id, stage, exc_info=exc)
            # no exception text: it may hold server paths; an OSError's reason alone (disk full) does not
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            message = f"the job failed while {stage}: {reason} (the server log has the details)"
            self.service.fail(job, JobError(code="internal_error", message=message), timings)

    def _store_outputs(
        self, job: Job, rendered: Sequence[_Rendered], stop: threading.Event
    ) -> list[OutputAsset]:
        def check_canceled() -> None:
            if stop.is_set():
                raise Canceled("the job was canceled before its outputs were stored")

        fmt: OutputFormat = job.input.get("output_format", "png")
        quality = int(job.input.get("quality", 90))
        role = "view" if job.kind == JobKind.ORBIT else "image"
        outputs = []
        for item in rendered:
            check_canceled()
            data = encode_image(item.image, fmt, quality)
            outputs.append(self._put(job, data, MIME_TYPES[fmt], item.image.size, role, item))
        if job.kind == JobKind.ORBIT:
            check_canceled()
            views = [item.image for item in rendered]
            labels = [item.plan.pose.azimuth if item.plan.pose else "" for item in rendered]
            turntable = turntable_webp(views, labels)
            outputs.append(self._put(job, turntable, "image/webp", views[0].size, "turntable"))
            sheet = contact_sheet(views, labels)
            outputs.append(
                self._put(job, encode_image(sheet, "png"), "image/png", sheet.size, "contact_sheet")
            )
        return outputs

    def _put(
        self,
        job: Job,
        data: bytes,
        mime: str,
        size: tuple[int, int],
        role: str,
        item: _Rendered | None = None,
    ) -> OutputAsset:
        record = self.service.assets.put_output(job.owner, data, mime, *size, job_id=job.id)
        pose = item.plan.pose if item else None
        return OutputAsset(
            asset_id=record.id,
            role=role,
            width=size[0],
            height=size[1],
            mime_type=mime,
            seed=item.seed if item else None,
            pose=(
                {
                    "azimuth_deg": pose.azimuth_deg,
                    "elevation_deg": pose.elevation_deg,
                    "distance": pose.distance_factor,
                }
                if pose
                else None
            ),
            plan=_sent_to_model(item) if item else None,
        )


async def _in_thread(call: Callable[[], T], *, on_cancel: Callable[[], None] | None = None) -> T:
    """Run `call` in a worker thread. When the server stops (this task is canceled), ask the call to stop and
    wait for it: a thread left running would keep the process from exiting and write to a closed store. The
    job stays `processing`, so the next start re-queues it."""
    work = asyncio.ensure_future(asyncio.to_thread(call))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        if on_cancel is not None:
            on_cancel()
        await asyncio.wait({work})
        if not work.cancelled():
            work.exception()  # the engine's Canceled, expected here; retrieved so that it is not logged
        raise


async def _unless_stopped(work: Awaitable[T], should_stop: Callable[[], bool]) -> T:
    """`work`'s result; or, once `should_stop()` (looked at every STOP_CHECK_S), `work` canceled (its cleanup
    done) and Canceled raised. A job's preparation may wait minutes on a download or a rewrite: a cancel
    must not. Work already handed to a thread (a rewrite under way) runs on to its end unseen."""
    task = asyncio.ensure_future(work)
    try:
        while not should_stop():
            done, _ = await asyncio.wait({task}, timeout=STOP_CHECK_S)
            if done:
                return task.result()
        raise Canceled("the job was canceled while it was being prepared")
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # retrieved: an error of a preparation left behind is not logged as lost


def _as_users_see_it(exc: LoraLoadError, loras: Sequence[ResolvedLora]) -> LoraLoadError:
    """The engine's error with each LoRA file named as the request or catalog named it: the engine knows only
    the cached file, whose name is a hash, or an operator's file. The engine's words stay in the log."""
    message = exc.message
    for lora in loras:
        message = message.replace(str(lora.path), lora.shown).replace(lora.path.name, lora.shown)
    if message == exc.message:
        return exc
    log.warning("LoRA error: %s", exc.message)
    return LoraLoadError(message, hint=exc.hint)


def _sent_to_model(item: _Rendered) -> dict[str, Any]:
    """The plan of one output as the model ran it (its seed and count are the output's own fields), and what
    the rewriter made of the prompt when the job asked for a rewrite."""
    sent = {key: value for key, value in item.plan.to_dict().items() if key not in ("seed", "num_outputs")}
    if item.rewrite is not None:
        sent["rewrite"] = item.rewrite.to_dict()
    return sent
