"""The native API's error shape, `{"error": {"code", "message", "hint"?}}`, and the one status table."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reangle.api.request_id import HEADER, failure_hint, log_failure, request_id
from reangle.core.inputs import refuse_bad_text_in_body
from reangle.errors import (
    AssetGone,
    Conflict,
    Forbidden,
    InternalError,
    InvalidInput,
    MethodNotAllowed,
    NotFound,
    QueueFull,
    ReangleError,
    RequestTimeout,
    SourceUnavailable,
    TooLarge,
    Unauthorized,
    Unavailable,
    UnsupportedImage,
    bounded,
)

log = logging.getLogger("reangle.api")

#: Most specific first.
STATUS_BY_ERROR: tuple[tuple[type[ReangleError], int], ...] = (
    (UnsupportedImage, 415),
    (TooLarge, 413),
    (InvalidInput, 422),
    (Unauthorized, 401),
    (Forbidden, 403),
    (RequestTimeout, 408),
    (AssetGone, 410),
    (NotFound, 404),
    (MethodNotAllowed, 405),
    (Conflict, 409),
    (QueueFull, 429),
    (Unavailable, 503),
    (SourceUnavailable, 502),
)


def status_for(exc: ReangleError) -> int:
    return next((status for kind, status in STATUS_BY_ERROR if isinstance(exc, kind)), 500)


def error_response(status: int, code: str, message: str, hint: str | None = None) -> JSONResponse:
    body: dict[str, str] = {"code": code, "message": message}
    if hint:
        body["hint"] = hint
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def reangle_error_response(exc: ReangleError) -> JSONResponse:
    status = status_for(exc)
    if status == 500:
        log.error("request failed: %s", exc.message)
    response = error_response(status, exc.code, exc.message, exc.hint)
    if isinstance(exc, QueueFull | Unavailable):
        response.headers["Retry-After"] = str(exc.retry_after_s)
    return response


def _database_data_error() -> type[Exception] | None:
    """PostgreSQL's DataError class where PostgreSQL is the store (the app's store is opened, and psycopg
    imported, before the app is built); None on the embedded store, which never imports psycopg."""
    psycopg = sys.modules.get("psycopg")
    return None if psycopg is None else psycopg.DataError


def database_refusal(exc: Exception) -> InvalidInput | None:
    """A request whose text the database refused to store or compare (PostgreSQL's DataError: a NUL
    character, text it cannot encode) as the request's fault, not the server's; None for any other error.
    The submit checks refuse such text first, naming its field: this is the net under them."""
    data_error = _database_data_error()
    if data_error is None or not isinstance(exc, data_error):
        return None
    return InvalidInput(
        "the request holds text the database cannot store, such as a NUL character",
        hint="remove NUL (\\u0000) characters from the request's text",
    )


def _too_deep() -> InvalidInput:
    """A JSON body nested deeper than the parser goes."""
    return InvalidInput(
        "body: the request body nests arrays or objects too deeply to be read",
        field="body",
        hint="send JSON nested at most a few hundred levels deep",
    )


def body_refusal(exc: Exception) -> InvalidInput | None:
    """A body FastAPI could not parse for a reason that is the request's fault (JSON nested so deeply that
    the parser gives up, bytes that are not UTF-8, an integer of more digits than Python converts, which
    FastAPI reports as a bare 400 "There was an error parsing the body") as InvalidInput; None for any other
    error."""
    cause = exc.__cause__
    if isinstance(exc, RecursionError) or isinstance(cause, RecursionError):
        return _too_deep()
    if isinstance(cause, UnicodeDecodeError):
        return InvalidInput(f"body: the request body is not valid JSON ({cause})", field="body")
    if isinstance(cause, ValueError) and too_many_digits(cause):
        return _many_digits()
    return None


def too_many_digits(exc: ValueError) -> bool:
    """Whether JSON parsing failed at an integer longer than Python converts (its limit on digits)."""
    return "integer string conversion" in str(exc)


def _many_digits() -> InvalidInput:
    return InvalidInput(
        f"body: a number in the request body has more than {sys.get_int_max_str_digits():,} digits",
        field="body",
    )


def json_body(raw: bytes, *, not_json: str) -> Any:
    """The JSON value of a request body a route reads itself; InvalidInput about the body, saying `not_json`
    (in the dialect's words) when it is not JSON, or that it nests too deeply to be read, or naming the text
    in it that no answer or database could hold (a NUL, a lone surrogate)."""
    try:
        value = json.loads(raw)
    except ValueError as exc:  # UnicodeDecodeError is one
        raise (_many_digits() if too_many_digits(exc) else InvalidInput(not_json, field="body")) from None
    except RecursionError:
        raise _too_deep() from None
    refuse_bad_text_in_body(value)
    return value


def client_gone(request: Request) -> Response:
    """The answer to a request whose client went away while its body was being read (an upload aborted): the
    client's doing, logged as such; nobody receives the answer."""
    log.info("%s %s: the client went away before its request was read", request.method, request.url.path)
    return Response(status_code=400)


def _router_refusal(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """The router's own 404 (no such path) and 405 (with its Allow header), saying what was asked."""
    path = bounded(request.url.path)
    if exc.status_code == 404 and exc.detail == "Not Found":
        message = f"no route {request.method} {path}; the API's routes are listed at /docs"
        return error_response(404, "not_found", message)
    if exc.status_code == 405:  # the router's Allow names only the first route of the path
        allow = ", ".join(_methods_taken(request))
        response = error_response(
            405, "method_not_allowed", f"method {request.method} is not allowed on {path}; use {allow}"
        )
        response.headers["Allow"] = allow
        return response
    code = {404: "not_found"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, bounded(str(exc.detail)))


def _methods_taken(request: Request) -> list[str]:
    taken = []
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            taken.append(method)
    return taken


def validation_message(error: Mapping[str, Any], content_type: str) -> str:
    """FastAPI's first complaint about a request as one sentence that starts with the field it is about."""
    loc = tuple(error["loc"])
    if error["type"] == "json_invalid":  # loc is ("body", character offset)
        reason = error.get("ctx", {}).get("error", "")
        return f"body: the request body is not valid JSON ({reason} at character {loc[-1]})"
    if loc == ("body",):
        if "json" not in content_type:
            sent = content_type or "none"
            return f"body: send a JSON object with Content-Type: application/json, not {sent!r}"
        if error["type"] == "missing":
            return "body: the request body is empty; send a JSON object"
        return "body: the request body must be a JSON object"
    where = ".".join(str(part) for part in loc if part != "body")
    message = complaint(error)
    return f"{where}: {message}" if where else message


def complaint(error: Mapping[str, Any]) -> str:
    """What pydantic found wrong with a field, in the words a job's input uses for the same faults."""
    if error["type"] == "missing":
        return "field required"
    if error["type"] == "extra_forbidden":
        return "unknown field"
    return str(error["msg"])


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ReangleError)
    async def _reangle(_request: Request, exc: ReangleError) -> JSONResponse:
        return reangle_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message = validation_message(exc.errors()[0], request.headers.get("content-type", ""))
        return error_response(422, "invalid_input", bounded(message))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, ReangleError):  # FastAPI wraps errors raised while reading the body
            return reangle_error_response(exc.__cause__)
        unreadable = body_refusal(exc)
        if unreadable is not None:
            return reangle_error_response(unreadable)
        return _router_refusal(request, exc)

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, _exc: ClientDisconnect) -> Response:
        return client_gone(request)

    data_error = _database_data_error()
    if data_error is not None:

        @app.exception_handler(data_error)
        async def _database_refused(_request: Request, exc: Exception) -> JSONResponse:
            log.warning("the database refused the text of a request: %s", type(exc).__name__)
            refused = database_refusal(exc)
            assert refused is not None
            return reangle_error_response(refused)

    @app.exception_handler(Exception)  # a failure in a middleware, outside Failures
    async def _unexpected(request: Request, _exc: Exception) -> JSONResponse:
        log_failure(request)
        response = failure_response(request)
        named = request_id(request)
        if named is not None:  # this answer is sent outside the middleware that names the others
            response.headers[HEADER] = named
        return response


def failure_response(request: Request) -> JSONResponse:
    """The 500 of an unexpected error, which names the request as the log line does."""
    failure = InternalError(hint=failure_hint(request))
    response = error_response(500, failure.code, failure.message, failure.hint)
    response.headers["Connection"] = "close"  # the connection's state is unknown after a failure
    return response


class Failures:
    """ASGI middleware: an unexpected error in a route is logged once, with its request id, and answered 500.
    (Starlette's own handler of last resort answers too, but then raises the error again for the server,
    which logs the traceback a second time without the id.) A failure after the answer began is raised."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            if started:
                raise
            request = Request(scope)
            log_failure(request)
            await failure_response(request)(scope, receive, send)
