"""Everything a running server holds, built once from Settings: store, services, engine, keys, signer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from reangle.api.auth import KeyRing
from reangle.api.metrics import Metrics
from reangle.api.signing import UrlSigner
from reangle.compose import open_blob_store, open_event_bus, open_job_store
from reangle.core.assets import AssetService
from reangle.core.ports import JobStore
from reangle.core.service import JobService, ServiceLimits
from reangle.engine.base import Engine
from reangle.runtime.local import LocalRunner
from reangle.settings import Settings
from reangle.store.url_fetch import FetchPolicy, fetch_url

log = logging.getLogger("reangle.server")


@dataclass(kw_only=True)
class AppState:
    settings: Settings
    store: JobStore
    service: JobService
    engine: Engine
    keys: KeyRing
    signer: UrlSigner
    metrics: Metrics
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def build(cls, settings: Settings, engine: Engine) -> AppState:
        data_dir = settings.data_dir
        store = open_job_store(settings)
        assets = AssetService(
            store,
            open_blob_store(settings),
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_upload_pixels,
            upload_ttl_s=settings.upload_ttl_s,
            result_ttl_s=settings.result_ttl_s,
            max_concurrent_decodes=settings.max_concurrent_decodes,
        )
        policy = FetchPolicy(
            allow_private=settings.allow_private_urls,
            max_bytes=settings.max_upload_bytes,
            timeout_s=settings.url_fetch_timeout_s,
        )

        async def fetch(url: str, where: str) -> bytes:
            return await fetch_url(url, policy, field=where)

        limits = ServiceLimits(
            max_queue=settings.max_queue,
            max_attempts=settings.max_attempts,
            result_ttl_s=settings.result_ttl_s,
            sizes=engine.info.limits,
            target_area=engine.info.target_area,
        )
        service = JobService(store, assets, fetch, limits, events=open_event_bus(settings, store))
        metrics = Metrics(service)
        service.finished_hooks.append(metrics.observe_finished)
        return cls(
            settings=settings,
            store=store,
            service=service,
            engine=engine,
            keys=KeyRing(store, enabled=settings.auth == "on", env_keys=settings.api_keys),
            signer=UrlSigner.from_setting_or_file(settings.signing_secret, data_dir),
            metrics=metrics,
        )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Load the engine, recover interrupted jobs, then run the runner and the sweeper until shutdown."""
        await asyncio.to_thread(self.engine.load)
        requeued, failed = self.service.recover()
        if requeued or failed:
            log.warning(
                "recovered %d interrupted jobs (%d re-queued, %d failed)",
                len(requeued) + len(failed),
                len(requeued),
                len(failed),
            )
        self.tasks = [
            asyncio.create_task(self.service.events.listen(), name="events"),
            asyncio.create_task(LocalRunner(self.service, self.engine).run_forever(), name="runner"),
            asyncio.create_task(self._sweep_forever(), name="sweeper"),
        ]
        try:
            yield
        finally:
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            self.service.events.close()
            self.store.close()

    async def _sweep_forever(self) -> None:
        while True:
            try:
                jobs, files = await asyncio.to_thread(self.service.sweep)
                if jobs or files:
                    log.info("retention sweep: deleted %d jobs and %d files", jobs, files)
            except Exception:
                log.exception("retention sweep failed")
            await asyncio.sleep(self.settings.sweep_interval_s)
