"""Reading a multipart or urlencoded form: a malformed one is InvalidInput (422 in the dialect's shape), not
Starlette's bare 400. So is a multipart body cut short: Starlette keeps the parts that ended and drops the
rest without a word, so a route would go on to say a field is missing."""

from __future__ import annotations

import re

from fastapi import Request
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.types import Message, Receive

from reangle.errors import InvalidInput

_BOUNDARY = re.compile(r';\s*boundary\s*=\s*(?:"([^"]+)"|([^\s;]+))', re.I)


class _CloseDelimiter:
    """Watches a multipart body stream by for its close delimiter (`--boundary--`, RFC 2046), which every
    complete multipart body holds after its last part; a chunk boundary may split it."""

    def __init__(self, boundary: str) -> None:
        self.delimiter = b"\r\n--" + boundary.encode("latin-1") + b"--"
        self.seen = False
        self._tail = b"\r\n"  # the body may open with its close delimiter (a form without parts)

    def receiving(self, receive: Receive) -> Receive:
        async def watched() -> Message:
            message = await receive()
            if not self.seen and message["type"] == "http.request":
                window = self._tail + message.get("body", b"")
                self.seen = self.delimiter in window
                self._tail = window[-(len(self.delimiter) - 1) :]
            return message

        return watched


def _close_delimiter(content_type: str) -> _CloseDelimiter | None:
    """The watch for a multipart body's end, or None (not multipart, no boundary: Starlette refuses that)."""
    if not content_type.lower().startswith("multipart/form-data"):
        return None
    match = _BOUNDARY.search(content_type)
    if match is None:
        return None
    try:
        return _CloseDelimiter(match[1] or match[2])
    except UnicodeEncodeError:
        return None


async def parse_form(request: Request, *, max_files: int, max_fields: int) -> FormData:
    watch = _close_delimiter(request.headers.get("content-type", ""))
    source = request if watch is None else Request(request.scope, watch.receiving(request.receive))
    try:
        form = await source.form(max_files=max_files, max_fields=max_fields)
    except (HTTPException, MultiPartException) as exc:
        detail = exc.detail if isinstance(exc, HTTPException) else exc.message
        raise InvalidInput(f"body: the multipart form could not be read: {detail}", field="body") from None
    if watch is not None and not watch.seen:
        await form.close()
        raise InvalidInput(
            "body: the multipart form could not be read: it ends before its closing boundary (the body "
            "was cut short)",
            field="body",
            hint="send the whole body; check the Content-Length and the boundary the Content-Type names",
        )
    return form
