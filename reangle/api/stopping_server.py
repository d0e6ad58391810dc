"""uvicorn's server, telling the app the moment it starts to stop (before it waits for open requests)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import uvicorn

from reangle.api.body_limit import STOPPING_EVENT


class StoppingServer(uvicorn.Server):
    """Calls `on_stop` first thing in its shutdown: requests held open on purpose (`?wait=`, event streams)
    then answer at once, within the graceful shutdown's time, instead of being cancelled when it runs out.
    It also sets the event every request finds in its state (STOPPING_EVENT): a request whose body is still
    arriving is then answered 503 (BodyLimit) rather than waited for."""

    def __init__(self, config: uvicorn.Config, *, on_stop: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_stop = on_stop
        self._stopping = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self.lifespan.state[STOPPING_EVENT] = self._stopping  # uvicorn copies it into each request's scope
        await super().startup(sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._on_stop()
        self._stopping.set()
        await super().shutdown(sockets)
