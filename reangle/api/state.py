"""Everything a running server holds, built once from Settings: store, services, engine, keys, signer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from reangle.api.auth import KeyRing
from reangle.api.lora_urls import lora_url_check
from reangle.api.metrics import Metrics
from reangle.api.own_links import own_links_first
from reangle.api.signing import UrlSigner
from reangle.api.stream_slots import StreamSlots
from reangle.compose import build_service, open_runtime
from reangle.core.ports import JobStore
from reangle.core.service import JobService
from reangle.engine.base import Engine
from reangle.runtime.base import Runtime
from reangle.settings import Settings
from reangle.store.url_fetch import FetchPolicy

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
    runtime: Runtime
    streams: StreamSlots
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    #: Why the server cannot go on: its runtime or event listener failed (no job would ever run again).
    failure: str | None = None
    #: Called once on such a failure: `reangle serve` stops the HTTP server there.
    on_failure: Callable[[], None] | None = None

    @classmethod
    def build(cls, settings: Settings, engine: Engine) -> AppState:
        service = build_service(settings, engine)
        service.check_url = lora_url_check(
            FetchPolicy(allow_private=settings.allow_private_urls, timeout_s=settings.url_fetch_timeout_s)
        )
        store = service.store
        signer = url_signer(settings, store)
        service.fetch = own_links_first(service.fetch, signer, service.assets)
        metrics = Metrics(service)
        return cls(
            settings=settings,
            store=store,
            service=service,
            engine=engine,
            keys=KeyRing(store, enabled=settings.auth == "on", env_keys=settings.api_keys),
            signer=signer,
            metrics=metrics,
            runtime=open_runtime(settings, service, engine),
            streams=StreamSlots(settings.max_streams_per_key),
        )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Load the engine (an API replica runs none), then run the event listener and the runtime
        (runners, sweeps) until shutdown."""
        if self.settings.role != "api":
            await asyncio.to_thread(self.engine.load)
        self.tasks = [
            asyncio.create_task(self.service.events.listen(), name="events"),
            asyncio.create_task(self.runtime.run(), name="runtime"),
        ]
        for task in self.tasks:
            task.add_done_callback(self._task_ended)
        try:
            yield
        finally:
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            self.service.events.close()
            self.store.close()

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None or self.failure is not None:
            return
        error = task.exception()
        self.failure = f"the {task.get_name()} task failed: {type(error).__name__}: {error}"
        log.critical("%s; the server stops", self.failure, exc_info=error)
        if self.on_failure is not None:
            self.on_failure()


def url_signer(settings: Settings, store: JobStore) -> UrlSigner:
    """The configured secret; else, on a shared database, one kept in it, so that every API replica signs
    alike; else (SQLite) the key file in the data directory, which keeps existing links valid."""
    if settings.database_url and not settings.signing_secret:
        return UrlSigner(store.shared_secret("url_signing").encode())
    return UrlSigner.from_setting_or_file(settings.signing_secret, settings.data_dir)
