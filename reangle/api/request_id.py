"""Every response names its request in `X-Request-Id`, so that a failure a user reports can be found in the
server's log: a 500's log line and its error's hint carry the same id.

The id is the caller's own `X-Request-Id` when it is a plain token (a proxy in front, such as nginx or Envoy,
sets one, which ties the proxy's log to ours), else a new one. A route that names its own request id (the
OpenAI dialect names the job) keeps it when the caller sent none.
"""

from __future__ import annotations

import logging
import re
import secrets

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("reangle.api")

HEADER = "x-request-id"
_SCOPE_KEY = "reangle.request_id"
_TOKEN = re.compile(r"[A-Za-z0-9._:/+=-]{1,200}")


class RequestIds:
    """ASGI middleware: gives each HTTP request its id and puts it on the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _given(scope)
        request_id = scope[_SCOPE_KEY] = given or f"req_{secrets.token_hex(12)}"
        header = (HEADER.encode(), request_id.encode())

        async def named(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", [])
                routes_own = [(name, value) for name, value in headers if name.lower() == header[0]]
                if given is not None:
                    message["headers"] = [*(item for item in headers if item not in routes_own), header]
                elif not routes_own:
                    message["headers"] = [*headers, header]
            await send(message)

        await self.app(scope, receive, named)


def request_id(request: Request) -> str | None:
    """The id RequestIds gave the request; None in an app without it."""
    found = request.scope.get(_SCOPE_KEY)
    return found if isinstance(found, str) else None


def log_failure(request: Request) -> None:
    """Log the exception being handled, a bug, with the traceback, the route and the request's id."""
    log.exception(
        "unexpected error in %s %s (request id %s)", request.method, request.url.path, request_id(request)
    )


def failure_hint(request: Request) -> str | None:
    """What a 500 tells the caller to do, naming the request as the server's log does."""
    named = request_id(request)
    return None if named is None else f"report it with request id {named}, which the server's log names"


def _given(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == HEADER.encode():
            text = value.decode("latin-1")
            return text if _TOKEN.fullmatch(text) else None
    return None
