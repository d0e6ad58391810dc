"""A cap on request bodies, declared or streamed (chunked), so no request can fill the server's memory."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reangle.errors import TooLarge


class BodyLimit:
    """Raises TooLarge from `receive` once a body passes `max_bytes`: the route's own error handling then
    answers 413 in its dialect's shape."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise TooLarge(
                        f"the request body is larger than the limit of {self.max_bytes:,} bytes", field="body"
                    )
            return message

        await self.app(scope, limited, send)
