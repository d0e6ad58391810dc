"""Marks each HTTP request's work as a waiting client's (reangle.core.ports.client_waiting), for the store's
waits in the worker threads the request uses."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from reangle.core.ports import client_waiting


class ClientWaits:
    """ASGI middleware: sets `client_waiting` while an HTTP request is answered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = client_waiting.set(True)
        try:
            await self.app(scope, receive, send)
        finally:
            client_waiting.reset(token)
