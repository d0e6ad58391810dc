"""The embedded server's LoRA prefetch: a queued job's own LoRA URLs are downloaded into the LoRA cache as
soon as the job is accepted, so that the runner, when it reaches the job, finds the file cached (or joins its
download in flight) instead of holding the GPU while a slow host sends it.

It works through the runner's own `LoraSources`, which downloads one URL once however many ask for it and
caches by content: a prefetch and the runner never fetch the same URL twice at once. Bounded: at most
`concurrency` downloads at once and `max_pending` URLs waiting their turn; a URL beyond that is dropped (the
runner fetches it when it runs the job). Only a request's `url` LoRAs: the operator's registered ids and
catalog LoRAs follow their own rules, and local paths need no download. A job no longer queued when its
URL's turn comes (canceled, or already taken by the runner) is skipped, and a job that ends stops its
prefetches. Failures are logged only: the runner fetches again when it runs the job, and reports the error to
the user then, as without a prefetch.

Jobs left queued by the server's last run are prefetched when it starts, in queue order for each model.
A prefetched file is not held in the cache: a cache too small for the LoRAs of the queue may evict it before
its job runs, and the runner then downloads it again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from reangle.core.jobs import Job, JobStatus
from reangle.core.lora_refs import without_query
from reangle.core.models import WanImageInput
from reangle.core.service import JobService, model_spec
from reangle.engine.lora_sources import LoraSources
from reangle.errors import ReangleError

log = logging.getLogger("reangle.loras")
T = TypeVar("T")

#: Prefetch downloads at once (the runner's own downloads come on top).
CONCURRENCY = 2
#: URLs waiting for a prefetch slot; one more is left to the runner.
MAX_PENDING = 64
#: At start, queued jobs read per pending place, for the LoRA URLs to fill them (most jobs have none).
SCANNED_PER_PLACE = 10


@dataclass(frozen=True)
class _Wanted:
    """One LoRA URL of one queued job."""

    job_id: str
    url: str
    field: str


class LoraPrefetch:
    """Downloads queued jobs' LoRA URLs ahead of the runner. `run` on the runtime's event loop."""

    def __init__(
        self,
        service: JobService,
        loras: LoraSources,
        *,
        concurrency: int = CONCURRENCY,
        max_pending: int = MAX_PENDING,
    ) -> None:
        if concurrency < 1 or max_pending < 1:
            raise ValueError("a LoRA prefetch needs at least one download slot and one pending place")
        self.service, self.loras, self.concurrency = service, loras, concurrency
        self._pending: asyncio.Queue[_Wanted] = asyncio.Queue(max_pending)
        self._loop: asyncio.AbstractEventLoop | None = None
        #: job id -> its prefetch downloads in progress (stopped when the job ends)
        self._downloads: defaultdict[str, set[asyncio.Future[None]]] = defaultdict(set)

    async def run(self) -> None:
        """Prefetch the URLs of the jobs queued already and from now on, until cancelled."""
        self._loop = asyncio.get_running_loop()
        self.service.queued_hooks.append(self.queued)
        self.service.finished_hooks.append(self.ended)
        try:
            try:
                self._enqueue(await asyncio.to_thread(self._queued_before))
            except Exception:  # the store: those jobs' LoRAs are left to the runner
                log.exception(
                    "could not read the jobs queued before the server started to prefetch their LoRAs"
                )
            async with asyncio.TaskGroup() as tasks:
                for slot in range(self.concurrency):
                    tasks.create_task(self._prefetch_forever(), name=f"lora prefetch {slot}")
        finally:
            self.service.queued_hooks.remove(self.queued)
            self.service.finished_hooks.remove(self.ended)
            self._loop = None

    def _queued_before(self) -> list[_Wanted]:
        """The LoRA URLs of the jobs already queued when the prefetch starts (left by the server's last run),
        in queue order for each model, up to as many as the prefetch can hold."""
        store, wanted, room = self.service.store, [], self._pending.maxsize
        for model in store.queued_by_model():
            for job_id in store.queued_job_ids(model, room * SCANNED_PER_PLACE):
                job = store.get_job(job_id)
                if job is None:
                    continue
                try:
                    wanted.extend(_lora_urls(job))
                except Exception:  # an input the service accepted: the runner will tell
                    log.exception("could not read the LoRAs of queued job %s to prefetch them", job_id)
                if len(wanted) >= room:
                    return wanted[:room]
        return wanted

    def queued(self, jobs: Sequence[Job]) -> None:
        """The service's hook: `jobs` were just queued. Never raises (the jobs are queued already)."""
        try:
            wanted = [item for job in jobs for item in _lora_urls(job)]
        except Exception:  # an input the service accepted: nothing to prefetch, the runner will tell
            log.exception("could not read the LoRAs of queued jobs to prefetch them")
            return
        if wanted:
            self._on_loop(self._enqueue, wanted)

    def ended(self, job: Job) -> None:
        """The service's hook: `job` reached a terminal status; its prefetches in progress stop (a download
        another job waits for goes on for that job). Safe from any thread."""
        self._on_loop(self._stop, job.id)

    def _on_loop(self, call: Callable[[T], None], argument: T) -> None:
        """`call(argument)` on the prefetch's event loop: now when this is it, else soon; not once stopped."""
        loop = self._loop
        if loop is None:
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            call(argument)
        else:
            loop.call_soon_threadsafe(call, argument)

    def _stop(self, job_id: str) -> None:
        for download in self._downloads.pop(job_id, ()):
            download.cancel()

    def _enqueue(self, wanted: list[_Wanted]) -> None:
        for item in wanted:
            try:
                self._pending.put_nowait(item)
            except asyncio.QueueFull:
                log.info(
                    "LoRA prefetch queue full: %s of job %s is left to the runner",
                    without_query(item.url),
                    item.job_id,
                )

    async def _prefetch_forever(self) -> None:
        while True:
            item = await self._pending.get()
            try:
                await self._prefetch(item)
            except Exception:  # the store, say: left to the runner; an error here must not end the runtime
                log.exception("LoRA prefetch for job %s failed", item.job_id)
            finally:
                self._pending.task_done()

    async def _prefetch(self, item: _Wanted) -> None:
        job = self.service.store.get_job(item.job_id)
        if job is None or job.status != JobStatus.QUEUED:
            return  # canceled, or the runner has it and fetches it itself
        download = asyncio.ensure_future(self.loras.prefetch(item.url, item.field))
        self._downloads[item.job_id].add(download)
        try:
            await asyncio.wait([download])
        except asyncio.CancelledError:
            download.cancel()
            raise
        finally:
            self._forget(item.job_id, download)
        if download.cancelled():
            log.info("LoRA prefetch of %s stopped: job %s ended", without_query(item.url), item.job_id)
            return
        exc = download.exception()
        if isinstance(exc, ReangleError):
            log.warning(
                "%s of job %s could not be fetched ahead (the runner tries again): %s",
                without_query(item.url),
                item.job_id,
                exc.message.replace(item.url, without_query(item.url)),  # the user's signed query stays out
            )
        elif exc is not None:
            log.error("LoRA prefetch of %s failed", without_query(item.url), exc_info=exc)

    def _forget(self, job_id: str, download: asyncio.Future[None]) -> None:
        downloads = self._downloads.get(job_id)
        if downloads is not None:
            downloads.discard(download)
            if not downloads:
                del self._downloads[job_id]


def _lora_urls(job: Job) -> list[_Wanted]:
    """The job's own LoRA URLs: not its model's (the catalog's), nor registered ids, nor local paths."""
    spec = model_spec(job.model)
    if spec.remote:
        return []
    validated = spec.validate_stored(job.kind, job.input)
    if isinstance(validated, WanImageInput):
        return []
    return [
        _Wanted(job_id=job.id, url=ref.value, field=ref.field)
        for ref in validated.lora_refs()
        if ref.kind == "url" and not ref.private
    ]
