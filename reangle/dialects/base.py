"""What every provider dialect shares: a route class that renders errors in the dialect's own shape.

A dialect is a thin translation over JobService: its request shape -> a SubmitRequest, a core Job -> its
response shape, a ReangleError -> its error shape. It knows nothing of torch or SQL.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute, APIRouter
from starlette.requests import ClientDisconnect

from reangle.api.errors import body_refusal, client_gone, complaint, database_refusal, status_for
from reangle.api.request_id import failure_hint, log_failure
from reangle.core.service import STOPPING
from reangle.errors import InternalError, InvalidInput, MethodNotAllowed, NotFound, ReangleError, Unavailable

log = logging.getLogger("reangle.api")

#: Renders an error for this dialect's clients, given the HTTP status reangle's error tree maps it to.
ErrorRenderer = Callable[[Request, ReangleError, int], Response]


def log_server_error(logger: logging.Logger, request: Request, exc: ReangleError, status: int) -> None:
    """A 5xx a dialect answers, logged: an ERROR, but INFO for a job canceled because the server is stopping
    (expected, and its client is told to send the request again), and nothing for another 503 `unavailable`
    (the database or the store is away: the access log has each answer, and the outage is logged where it
    is seen, once, as the native API leaves it)."""
    if isinstance(exc, Unavailable):
        if exc.message == STOPPING:
            logger.info("%s %s: %s", request.method, request.url.path, exc.message)
    elif status >= 500:
        logger.error("%s %s failed: %s", request.method, request.url.path, exc.message)


def validation_error(exc: RequestValidationError) -> InvalidInput:
    """FastAPI's request validation failure as one InvalidInput naming the field."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"] if part not in ("body", "query", "path", "header"))
    if first["type"] == "json_invalid":
        return InvalidInput("the request body is not valid JSON", field="body")
    message = complaint(first)
    return InvalidInput(f"{where}: {message}" if where else message, field=where or None)


def dialect_route(render: ErrorRenderer) -> type[APIRoute]:
    """An APIRoute class whose handler renders ReangleError and request validation errors with `render`."""

    class DialectRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def guarded(request: Request) -> Response:
                try:
                    return await handler(request)
                except RequestValidationError as exc:
                    error = validation_error(exc)
                    return render(request, error, status_for(error))
                except ReangleError as exc:
                    response = render(request, exc, status_for(exc))
                    if isinstance(exc, MethodNotAllowed):
                        response.headers["Allow"] = ", ".join(exc.allow)
                    return response
                except HTTPException as exc:
                    # FastAPI wraps body-reading errors; JSON nested too deeply to parse is the request's
                    cause = exc.__cause__ if isinstance(exc.__cause__, ReangleError) else body_refusal(exc)
                    if cause is None:
                        raise
                    return render(request, cause, status_for(cause))
                except ClientDisconnect:
                    return client_gone(request)
                except Exception as exc:
                    refused = database_refusal(exc)
                    if refused is not None:  # the request's text, not the server, is at fault
                        log.warning("the database refused the text of a request: %s", type(exc).__name__)
                        return render(request, refused, status_for(refused))
                    log_failure(request)
                    response = render(request, InternalError(hint=failure_hint(request)), 500)
                    response.headers["Connection"] = "close"  # the connection's state is unknown
                    return response

            return guarded

    return DialectRoute


ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def add_fallback_routes(router: APIRouter, prefix: str, *, base_url: str) -> None:
    """Routes, added last, that answer every other path and method under `prefix` in the dialect's error
    shape, naming what was asked: 404 for a path the dialect does not serve (saying the client's `base_url`
    when the path is not under it),
    405 (with Allow) for a method a path does not take. A client pointed at the wrong base URL then reads
    why, not a bare "Not Found"."""
    base_path = urlsplit(base_url).path

    async def fallback(request: Request) -> Response:
        path = request.url.path
        allowed = sorted(
            method
            for route in router.routes
            if isinstance(route, APIRoute) and route.endpoint is not fallback and route.path_regex.match(path)
            for method in route.methods or ()
        )
        if allowed:
            raise MethodNotAllowed(
                f"method {request.method} is not allowed on {path}; use {', '.join(allowed)}", allow=allowed
            )
        if path.startswith(base_path + "/"):  # the base URL is right: the route is not one served
            raise NotFound(f"no route {request.method} {path}: this server does not serve it (see /docs)")
        raise NotFound(f"no route {request.method} {path}; point the client at {base_url}")

    for path in (prefix, prefix + "/{path:path}"):
        router.add_api_route(path, fallback, methods=ANY_METHOD, include_in_schema=False)
