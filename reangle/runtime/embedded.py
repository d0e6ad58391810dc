"""What the single-box server runs beside its API: at start, the recovery of interrupted jobs and the failure
of queued jobs whose model it no longer serves; one runner on the engine, the periodic retention sweep and
the webhook sender; and the download of queued jobs' LoRA URLs (`lora_prefetch`). Its heartbeat also stops
the job in hand once a cancel of it is in the store, written there by another process (`reangle admin
cancel`)."""

from __future__ import annotations

import asyncio
import logging

from reangle.core.models import MODELS
from reangle.core.service import JobService
from reangle.engine.base import Engine
from reangle.errors import Unavailable
from reangle.runtime.heartbeat import Heartbeat, JobStops
from reangle.runtime.local import LocalRunner
from reangle.runtime.lora_prefetch import LoraPrefetch
from reangle.runtime.webhook_sender import WebhookSender

log = logging.getLogger("reangle.server")

#: Waits between tries of the recovery at start while the store is unavailable (a lock another process
#: holds on the SQLite file, a full disk): 15 s in all; then the server stops (exit 1): it could run no job.
START_RETRY_S = (1.0, 2.0, 4.0, 8.0)


class EmbeddedRuntime:
    def __init__(
        self,
        service: JobService,
        engine: Engine,
        runner: LocalRunner,
        *,
        sweep_interval_s: float,
        webhooks: WebhookSender | None = None,
        prefetch: LoraPrefetch | None = None,
    ) -> None:
        self.service, self.engine, self.sweep_interval_s = service, engine, sweep_interval_s
        self.runner, self.webhooks, self.prefetch = runner, webhooks, prefetch
        stops = JobStops(service.events, runner.jobs_in_hand)
        self.heartbeat = Heartbeat(service.store, engine, MODELS, runner.job_in_hand, stops=stops)
        #: Why no job runs yet: the recovery at start has not succeeded (the heartbeat starts after it).
        self.not_ready: str | None = "the interrupted jobs of the last run are being recovered"

    async def run(self) -> None:
        """Until cancelled."""
        for wait in (*START_RETRY_S, None):
            try:
                await asyncio.to_thread(self.recover)
                self.not_ready = None
                break
            except Unavailable as exc:
                if wait is None:
                    raise
                log.warning("could not recover the interrupted jobs (%s); again in %g s", exc, wait)
                self.not_ready = (
                    f"no job runs until the interrupted jobs of the last run are recovered: {exc}"
                )
                await asyncio.sleep(wait)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.runner.run_forever(), name="runner")
            tasks.create_task(sweep_forever(self.service, self.sweep_interval_s), name="sweeper")
            tasks.create_task(self.heartbeat.run(), name="heartbeat")
            if self.webhooks is not None:
                tasks.create_task(self.webhooks.run(), name="webhooks")
            if self.prefetch is not None:
                tasks.create_task(self.prefetch.run(), name="lora prefetch")

    def store_trouble(self) -> str | None:
        return self.not_ready or self.heartbeat.store_trouble()

    def recover(self) -> None:
        """Re-queue (or end) the jobs the last run of the server left running; fail the queued jobs of
        models it no longer serves."""
        requeued, ended = self.service.recover()
        if requeued or ended:
            log.warning(
                "recovered %d interrupted jobs (%d re-queued, %d ended: out of attempts, or canceled)",
                len(requeued) + len(ended),
                len(requeued),
                len(ended),
            )
        unserved = self.service.fail_unserved(MODELS)
        if unserved:
            models = ", ".join(sorted({job.model for job in unserved}))
            log.warning("failed %d queued jobs of models no longer served: %s", len(unserved), models)


async def sweep_forever(service: JobService, interval_s: float) -> None:
    while True:
        try:
            jobs, files = await asyncio.to_thread(service.sweep)
            if jobs or files:
                log.info("retention sweep: deleted %d jobs and %d files", jobs, files)
        except Unavailable as exc:  # a passing state of the store (a lock another process holds, a full disk)
            log.warning("retention sweep skipped: %s; trying again in %g s", exc, interval_s)
        except Exception:
            log.exception("retention sweep failed")
        await asyncio.sleep(interval_s)
