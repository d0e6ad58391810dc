"""What a server process runs beside its API, chosen by `reangle.compose.open_runtime`."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

#: Waits between the first tries to record a job's end while the store is unavailable (about 15 s in all:
#: a database restart); then it is tried every UNRECORDED_RETRY_S until the store takes it or the process
#: stops. A job whose end is given up on would stay processing until the next start (the embedded default), or
#: be rendered again (and a remote one paid for again).
COMPLETE_RETRY_S = (0.5, 1.0, 2.0, 4.0, 8.0)
UNRECORDED_RETRY_S = 15.0
#: How long a runner waits after the store could not give it a job (another process holds the database):
#: each try holds the event loop up to the store's wait for that lock.
UNAVAILABLE_RETRY_S = 5.0


async def wait_to_record_again(tries: int, stopping: asyncio.Event | None = None) -> bool:
    """Wait before the next try to record a job's end, after `tries` refused ones: COMPLETE_RETRY_S, then
    UNRECORDED_RETRY_S each. False when there is to be none: `stopping` is set and the first tries are spent
    (the job stays processing and runs again at the next start; scaled out, on another worker)."""
    if tries < len(COMPLETE_RETRY_S):
        await asyncio.sleep(COMPLETE_RETRY_S[tries])
        return True
    if stopping is None:
        await asyncio.sleep(UNRECORDED_RETRY_S)
        return True
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), UNRECORDED_RETRY_S)
    return not stopping.is_set()


class Runtime(Protocol):
    async def run(self) -> None:
        """Run jobs (and periodic upkeep) until cancelled; a graceful stop when cancelled."""
        ...

    def store_trouble(self) -> str | None:
        """Why the store refuses this process's writes (see Heartbeat.store_trouble), for /healthz."""
        ...


class NoRuntime:
    """An API replica of a scale-out deployment: the workers run the jobs and the upkeep."""

    async def run(self) -> None:
        return None

    def store_trouble(self) -> str | None:
        return None
