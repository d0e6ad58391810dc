"""A cap on request bodies, declared or streamed (chunked), so no request can fill the server's memory, and
a deadline for each piece of a body, so no stalled upload holds a connection (nor a stopping server)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reangle.errors import RequestTimeout, TooLarge, Unavailable

#: Room in an upload's body for the form or JSON around its images (boundaries, headers, text fields).
UPLOAD_OVERHEAD_BYTES = 1024 * 1024
#: The key of the asyncio.Event, in a request's `scope["state"]`, that the server sets when it starts to stop
#: (StoppingServer puts it in the lifespan state, which uvicorn copies into every request's).
STOPPING_EVENT = "reangle.stopping"
#: The most JSON values a JSON body may hold, counted as it arrives by its commas and opening brackets, in
#: strings too: a request's texts, all commas, make at most about 1.2 million (a batch of 64 image sets with
#: 8 set prompts and a negative prompt of 2,000 characters each). Tens of millions of `{}` fit under the size
#: cap, and parsing them took gigabytes and held the event loop for seconds; 2 million take about 150 MB.
MAX_JSON_VALUES = 2_000_000
#: What a request whose body was still arriving when the server started to stop is answered (503).
STOPPED_BODY = "the server is stopping and the request body had not all arrived: send the request again"


class BodyLimit:
    """Raises TooLarge from `receive` once a body passes its cap (or declares a larger Content-Length, or one
    that may be JSON holds more than MAX_JSON_VALUES values), and RequestTimeout when no part of an unfinished
    body arrives for `body_timeout_s`, and Unavailable when the server starts to stop before the body has
    arrived (the stop would otherwise wait for it): the route's own error handling then answers 413, 408 or
    503 in its dialect's shape, and nothing more is read.

    The cap is `max_bytes`, or on an upload route (a path in `upload_limits`) that path's limit: an upload's
    cap then holds while the body streams in, not after the whole body has been read or spooled."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        upload_limits: Mapping[str, int] | None = None,
        body_timeout_s: float | None = None,
    ) -> None:
        self.app, self.max_bytes, self.upload_limits = app, max_bytes, dict(upload_limits or {})
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, what = self._limit(scope)
        declared = _declared_length(scope)
        has_body = bool(declared) or b"chunked" in _header(scope, b"transfer-encoding").lower()
        stopping: asyncio.Event | None = scope.get("state", {}).get(STOPPING_EVENT)
        counts_values = _may_be_json(_header(scope, b"content-type"))
        received = values = 0
        body_done = False

        async def limited() -> Message:
            nonlocal received, values, body_done
            if declared is not None and declared > limit:
                raise TooLarge(
                    f"{what} declares {declared:,} bytes, more than the limit of {limit:,} bytes",
                    field="body",
                )
            if body_done:  # after the body: waiting for a disconnect (SSE)
                message = await receive()
            else:
                message = await _body_piece(receive, self.body_timeout_s, stopping)
            if message["type"] == "http.request":
                body_done = not message.get("more_body", False)
                piece = message.get("body", b"")
                received += len(piece)
                if received > limit:
                    raise TooLarge(f"{what} is larger than the limit of {limit:,} bytes", field="body")
                if counts_values:
                    values += piece.count(b",") + piece.count(b"{") + piece.count(b"[")
                    if values > MAX_JSON_VALUES:
                        many = f"more than {MAX_JSON_VALUES:,} JSON values"
                        raise TooLarge(f"{what} holds {many} (no request takes as many)", field="body")
            return message

        async def closing(message: Message) -> None:
            # an answer before the whole body arrived (413, 408, 422...): the rest of the body is not read
            # for another request on this connection, so the connection ends with this response
            if message["type"] == "http.response.start" and has_body and not body_done:
                message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
            await send(message)

        await self.app(scope, limited, closing)

    def _limit(self, scope: Scope) -> tuple[int, str]:
        upload_limit = self.upload_limits.get(scope["path"])
        if upload_limit is not None and upload_limit < self.max_bytes:  # the request cap still holds
            return upload_limit, "the upload"
        return self.max_bytes, "the request body"


async def _body_piece(receive: Receive, timeout_s: float | None, stopping: asyncio.Event | None) -> Message:
    """The next message of a body still arriving; RequestTimeout when none comes within `timeout_s`, and
    Unavailable once `stopping` is set. A piece that has already arrived is still taken first."""
    piece = asyncio.ensure_future(receive())
    waits = {piece} if stopping is None else {piece, asyncio.ensure_future(stopping.wait())}
    try:
        await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()
    if piece.done():
        return piece.result()
    if stopping is not None and stopping.is_set():
        raise Unavailable(STOPPED_BODY)
    raise RequestTimeout(f"the request body stalled: nothing arrived for {timeout_s:g} s")


def _may_be_json(content_type: bytes) -> bool:
    """Whether a body of this Content-Type may be parsed as JSON: all but forms (FastAPI parses one without a
    Content-Type as JSON, some dialects whatever it says)."""
    kind = content_type.split(b";")[0].strip().lower()
    return not (kind.startswith(b"multipart/") or kind == b"application/x-www-form-urlencoded")


def _header(scope: Scope, name: bytes) -> bytes:
    return next((value for key, value in scope["headers"] if key.lower() == name), b"")


def _declared_length(scope: Scope) -> int | None:
    value = _header(scope, b"content-length")
    return int(value) if value.isdigit() else None
