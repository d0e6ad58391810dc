"""Reading a multipart or urlencoded form: a malformed one is InvalidInput (422 in the dialect's shape), not
Starlette's bare 400."""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from reangle.errors import InvalidInput


async def parse_form(request: Request, *, max_files: int, max_fields: int) -> FormData:
    try:
        return await request.form(max_files=max_files, max_fields=max_fields)
    except (HTTPException, MultiPartException) as exc:
        detail = exc.detail if isinstance(exc, HTTPException) else exc.message
        raise InvalidInput(f"body: the multipart form could not be read: {detail}", field="body") from None
