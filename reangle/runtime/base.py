"""What a server process runs beside its API, chosen by `reangle.compose.open_runtime`."""

from __future__ import annotations

from typing import Protocol


class Runtime(Protocol):
    async def run(self) -> None:
        """Run jobs (and periodic upkeep) until cancelled; a graceful stop when cancelled."""
        ...


class NoRuntime:
    """An API replica of a scale-out deployment: the workers run the jobs and the upkeep."""

    async def run(self) -> None:
        return None
