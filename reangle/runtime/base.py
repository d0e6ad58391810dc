"""What a server process runs beside its API, chosen by `reangle.compose.open_runtime`."""

from __future__ import annotations

from typing import Protocol

#: Waits between tries to record a job's end while the store is unavailable (about 15 s in all): long enough
#: for a database restart, short enough that the job is soon run again elsewhere if it stays down.
COMPLETE_RETRY_S = (0.5, 1.0, 2.0, 4.0, 8.0)
#: How long a runner waits after the store could not give it a job (another process holds the database):
#: each try holds the event loop up to the store's wait for that lock.
UNAVAILABLE_RETRY_S = 5.0


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
