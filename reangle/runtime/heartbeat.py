"""Each process running jobs says, every few seconds, that it is alive, what it runs and which job it holds;
/healthz and /metrics read it back from the store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Collection

from reangle.core.ports import JobStore, WorkerStatus
from reangle.engine.base import Engine

log = logging.getLogger("reangle.worker")

HEARTBEAT_S = 2.0
#: /healthz lists the workers heard from within this many seconds.
LISTED_FOR_S = 30.0


def process_name() -> str:
    """Unique per process (host and pid), so a restarted worker never takes over an old one's name."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Heartbeat:
    def __init__(
        self,
        store: JobStore,
        engine: Engine,
        models: Collection[str],
        job_in_hand: Callable[[], str | None],
        *,
        name: str | None = None,
        interval_s: float = HEARTBEAT_S,
    ) -> None:
        self.store, self.engine, self.job_in_hand = store, engine, job_in_hand
        self.models = tuple(sorted(models))
        self.name = name or process_name()
        self.interval_s = interval_s
        self.started_at = time.time()

    def status(self) -> WorkerStatus:
        info = self.engine.info
        return WorkerStatus(
            name=self.name,
            device=info.device,
            engine=info.name,
            models=self.models,
            started_at=self.started_at,
            seen_at=time.time(),
            job_id=self.job_in_hand(),
        )

    async def run(self) -> None:
        """Until cancelled; then the worker's row is removed (a killed worker's row just ages out)."""
        try:
            while True:
                try:
                    await asyncio.to_thread(self.store.record_worker, self.status())
                except Exception as exc:  # the database away for a while: keep beating
                    log.warning("heartbeat of %s not recorded: %s", self.name, exc)
                await asyncio.sleep(self.interval_s)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.store.forget_worker, self.name)
