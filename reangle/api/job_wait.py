"""A job waited for on behalf of a client holding its request open (`?wait=`, a synchronous dialect call):
the wait ends when the job does, when its time is up, or when the client goes away, whichever comes first."""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request

from reangle.core.jobs import Job
from reangle.core.service import JobService

log = logging.getLogger("reangle.api")


async def wait_unless_gone(
    request: Request, service: JobService, owner: str, job_id: str, budget_s: float
) -> Job | None:
    """The job when it ends or `budget_s` runs out; None if the client disconnected first (nobody would read
    the answer, and an abandoned wait would hold its memory until then)."""
    waiter = asyncio.ensure_future(service.wait(owner, job_id, budget_s))
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({waiter, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if waiter in done:
            return waiter.result()
        if watcher.exception() is None:
            return None
        log.warning("cannot watch for a disconnect: %r", watcher.exception())
        return await waiter
    finally:
        for task in (waiter, watcher):
            task.cancel()
        await asyncio.gather(waiter, watcher, return_exceptions=True)


async def _disconnected(request: Request) -> None:
    """Returns once the client has closed the connection (the body has been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.05)
