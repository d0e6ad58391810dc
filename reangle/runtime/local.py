"""The embedded runner: one asyncio task per engine (per GPU), one job at a time on it.

The engine runs in a worker thread; image encoding and storage run in another, so the event loop keeps
serving requests while the GPU works.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from PIL import Image

from reangle.core.edit import EditPlan, plan_edit
from reangle.core.images import MIME_TYPES, OutputFormat, encode_image
from reangle.core.jobs import Job, JobError, JobKind, OutputAsset
from reangle.core.service import JobService, edit_requests
from reangle.engine.base import Engine
from reangle.errors import Canceled, ReangleError
from reangle.runtime.orbit_extras import contact_sheet, turntable_webp

log = logging.getLogger("reangle.runner")

T = TypeVar("T")
RETRY_S = 1.0


@dataclass(frozen=True, kw_only=True)
class _Rendered:
    image: Image.Image
    seed: int
    plan: EditPlan


class LocalRunner:
    def __init__(self, service: JobService, engine: Engine) -> None:
        self.service, self.engine = service, engine

    async def run_forever(self, retry_s: float = RETRY_S) -> None:
        while True:
            try:
                job = await self.service.next_job()
                if job is not None:
                    await self.run_job(job)
            except Exception:
                # An error of the store (a locked or full disk) must not end the runner: the server would go
                # on accepting jobs that nothing runs.
                log.exception("the runner failed; trying again in %g s", retry_s)
                await asyncio.sleep(retry_s)

    async def run_job(self, job: Job) -> None:
        started = time.perf_counter()
        timings = {"queue_s": (job.started_at or job.created_at) - job.created_at}
        try:
            outputs = await self._execute(job, timings)
        except asyncio.CancelledError:  # the server is stopping; the engine thread has already stopped
            self.service.release(job)
            raise
        except Canceled:
            self.service.mark_canceled(job)
        except ReangleError as exc:
            self.service.fail(job, JobError(code=exc.code, message=exc.message, hint=exc.hint), timings)
        except Exception as exc:
            log.exception("job %s failed unexpectedly", job.id)
            error = JobError(code="internal_error", message=f"the job failed: {type(exc).__name__}: {exc}")
            self.service.fail(job, error, timings)
        else:
            timings["run_s"] = time.perf_counter() - started
            self.service.complete(job, outputs, timings)

    async def _execute(self, job: Job, timings: dict[str, float]) -> list[OutputAsset]:
        requests = edit_requests(job)
        image_ids = [job.input["image"]] if job.kind == JobKind.ORBIT else job.input["images"]
        records = [self.service.assets.get(job.owner, asset_id) for asset_id in image_ids]
        images = await _in_thread(lambda: [self.service.assets.load_image(r) for r in records])
        info = self.engine.info
        plans = [
            plan_edit(
                request, [image.size for image in images], limits=info.limits, target_area=info.target_area
            )
            for request in requests
        ]
        inference = time.perf_counter()
        rendered = await self._render(job, images, plans)
        timings["inference_s"] = time.perf_counter() - inference
        encoding = time.perf_counter()
        outputs = await _in_thread(lambda: self._store_outputs(job, rendered))
        timings["encode_s"] = time.perf_counter() - encoding
        return outputs

    async def _render(self, job: Job, images: list[Image.Image], plans: list[EditPlan]) -> list[_Rendered]:
        loop = asyncio.get_running_loop()
        stop = self.service.stop_flag(job)
        total = sum(plan.steps for plan in plans)
        rendered: list[_Rendered] = []
        for done_before, plan in zip(_running_sum(plans), plans, strict=True):

            def on_step(step: int, _steps: int, offset: int = done_before) -> None:
                loop.call_soon_threadsafe(self.service.report_progress, job, offset + step, total)

            result = await _in_thread(
                functools.partial(self.engine.edit, images, plan, on_step=on_step, should_stop=stop.is_set),
                on_cancel=stop.set,
            )
            rendered += [
                _Rendered(image=image, seed=result.seed + k, plan=plan)
                for k, image in enumerate(result.images)
            ]
        return rendered

    def _store_outputs(self, job: Job, rendered: Sequence[_Rendered]) -> list[OutputAsset]:
        fmt: OutputFormat = job.input.get("output_format", "png")
        quality = int(job.input.get("quality", 90))
        role = "view" if job.kind == JobKind.ORBIT else "image"
        outputs = [
            self._put(
                job, encode_image(item.image, fmt, quality), MIME_TYPES[fmt], item.image.size, role, item
            )
            for item in rendered
        ]
        if job.kind == JobKind.ORBIT:
            views = [item.image for item in rendered]
            labels = [item.plan.pose.azimuth if item.plan.pose else "" for item in rendered]
            outputs.append(self._put(job, turntable_webp(views), "image/webp", views[0].size, "turntable"))
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
                if pose and role == "view"
                else None
            ),
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


def _running_sum(plans: Sequence[EditPlan]) -> list[int]:
    sums, total = [], 0
    for plan in plans:
        sums.append(total)
        total += plan.steps
    return sums
