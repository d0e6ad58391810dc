"""uvicorn's server, telling the app the moment it starts to stop (before it waits for open requests)."""

from __future__ import annotations

import socket
from collections.abc import Callable

import uvicorn


class StoppingServer(uvicorn.Server):
    """Calls `on_stop` first thing in its shutdown: requests held open on purpose (`?wait=`, event streams)
    then answer at once, within the graceful shutdown's time, instead of being cancelled when it runs out."""

    def __init__(self, config: uvicorn.Config, *, on_stop: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_stop = on_stop

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._on_stop()
        await super().shutdown(sockets)
