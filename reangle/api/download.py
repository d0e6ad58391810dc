"""Signed downloads of the embedded file store: a FileResponse whose Range header is read as RFC 9110
says."""

from __future__ import annotations

import re

from fastapi.responses import FileResponse
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from reangle.api.errors import error_response

#: More byte ranges than this in one Range header are ignored (the whole file is sent), as Starlette does.
MAX_BYTE_RANGES = 100
#: A byte position past any file: longer digit strings are read as this, not parsed.
BEYOND_ANY_FILE = 10**18
_BYTE_RANGE_SPEC = re.compile(r"([0-9]*)-([0-9]*)")


class DownloadResponse(FileResponse):
    """A file whose Range header is read as RFC 9110 (14.2) says: ignored when its unit or syntax is not one
    this server understands (the whole file, 200), a 416 in the native error shape when none of its ranges
    overlaps the file, else the ranges asked for (206). Starlette's own answers to the first two are a
    text/plain 400 and an empty 416."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_headers = Headers(scope=scope)
        requested = request_headers.get("range")
        if requested is not None and self.stat_result is not None:
            size = self.stat_result.st_size
            ranges = byte_ranges(requested, size) if self._if_range_holds(request_headers) else None
            if ranges == []:
                refusal = error_response(
                    416,
                    "range_not_satisfiable",
                    f"no range of the Range header lies within the file's {size} bytes",
                    hint=f"ask for bytes 0 to {size - 1}, or leave out the Range header for the whole file",
                )
                refusal.headers["Content-Range"] = f"bytes */{size}"
                await refusal(scope, receive, send)
                return
            kept = [(name, value) for name, value in scope["headers"] if name.lower() != b"range"]
            if ranges:
                spec = ",".join(f"{first}-{last}" for first, last in ranges)
                kept.append((b"range", f"bytes={spec}".encode()))
            scope = {**scope, "headers": kept}
        await super().__call__(scope, receive, send)

    def _if_range_holds(self, request_headers: Headers) -> bool:
        """No If-Range, or one naming this file's strong ETag or Last-Modified (RFC 9110 13.1.5)."""
        condition = request_headers.get("if-range")
        if condition is None:
            return True
        return not condition.startswith("W/") and condition in (
            self.headers["etag"],
            self.headers["last-modified"],
        )


def byte_ranges(header: str, size: int) -> list[tuple[int, int]] | None:
    """The (first, last) byte positions, within `size` bytes, of each range of a Range header that overlaps
    them: [] when none does (unsatisfiable); None when the header is not a byte range set (another unit, bad
    syntax, `last` before `first`, too many ranges), which is to be ignored."""
    unit, equals, range_set = header.partition("=")
    if not equals or unit.strip().lower() != "bytes":
        return None
    specs = [spec.strip() for spec in range_set.split(",") if spec.strip()]
    if not specs or len(specs) > MAX_BYTE_RANGES:
        return None
    ranges = []
    for spec in specs:
        match = _BYTE_RANGE_SPEC.fullmatch(spec)
        if match is None or match[0] == "-":
            return None
        first, last = (_position(digits) if digits else None for digits in match.groups())
        if first is None:  # a suffix: the last `last` bytes; none at all for -0
            assert last is not None
            if last > 0 and size > 0:
                ranges.append((max(size - last, 0), size - 1))
        elif last is not None and last < first:
            return None
        elif first < size:
            ranges.append((first, size - 1 if last is None else min(last, size - 1)))
    return ranges


def _position(digits: str) -> int:
    significant = digits.lstrip("0")
    return int(significant or "0") if len(significant) < len(str(BEYOND_ANY_FILE)) else BEYOND_ANY_FILE
