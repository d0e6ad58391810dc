"""Every error the SDK raises, and the one mapping from an HTTP error answer to its exception.

ReangleClientError
+-- ReangleAPIError               the server answered with a non-2xx status
|   +-- BadRequestError           400, 422: the request was invalid
|   +-- AuthenticationError       401: no API key, or an unknown one
|   +-- PermissionDeniedError     403
|   +-- NotFoundError             404
|   +-- ConflictError             409
|   +-- PayloadTooLargeError      413
|   +-- UnsupportedMediaTypeError 415
|   +-- RateLimitError            429 (`retry_after` in seconds)
|   +-- ServerError               5xx
+-- APIConnectionError            no answer: the server could not be reached, or it did not answer in time
+-- InvalidServerURLError         the server URL given to the client is not http(s)://... (also a ValueError)
+-- InvalidAPIKeyError            the API key holds a character a header cannot carry (also a ValueError)
+-- InvalidResponseError          a success answer that is not the documented JSON (not a reangle server?)
+-- WaitTimeout                   `wait` gave up; the job goes on running on the server
+-- JobFailed                     the job ended with status `failed` (its error code and message)
+-- JobCanceled                   the job ended with status `canceled`
"""

from __future__ import annotations

import json
import re
import time
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from reangle.client._models import Job

#: How much of a body that is not the documented error JSON goes into the message.
_BODY_EXCERPT = 200


class ReangleClientError(Exception):
    """Base of everything the reangle SDK raises."""


class ReangleAPIError(ReangleClientError):
    """The server answered with an error status; `code`, `message` and `hint` come from its error body."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        code: str,
        hint: str | None = None,
        response: httpx.Response | None = None,
    ) -> None:
        self.message = message
        self.status_code = status_code
        self.code = code
        self.hint = hint
        self.response = response
        super().__init__(message)

    @property
    def request_id(self) -> str | None:
        """The server's id for the failed request, when it sent one (quote it in a bug report)."""
        return None if self.response is None else self.response.headers.get("x-request-id")

    def __str__(self) -> str:
        hint = f" ({self.hint})" if self.hint else ""
        if self.code == _fallback_code(self.status_code):  # the message already says "HTTP <status> ..."
            return f"{self.message}{hint}"
        return f"{self.status_code} {self.code}: {self.message}{hint}"


class BadRequestError(ReangleAPIError):
    """400 or 422: the request is invalid (a field is missing, malformed or out of range)."""


class AuthenticationError(ReangleAPIError):
    """401: the API key is missing or not known to the server."""


class PermissionDeniedError(ReangleAPIError):
    """403: the API key may not do this."""


class NotFoundError(ReangleAPIError):
    """404: no such job, asset, batch or model (or it belongs to another key)."""


class ConflictError(ReangleAPIError):
    """409: the request conflicts with the current state (an idempotency key reused with another body)."""


class PayloadTooLargeError(ReangleAPIError):
    """413: the upload or request body is larger than the server accepts."""


class UnsupportedMediaTypeError(ReangleAPIError):
    """415: the upload is not an image type the server reads."""


class RateLimitError(ReangleAPIError):
    """429: too many requests; `retry_after` is how many seconds the server asks to wait (None if unsaid)."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ServerError(ReangleAPIError):
    """5xx: the server (or a proxy in front of it) failed."""


class APIConnectionError(ReangleClientError):
    """The server could not be reached, or the connection failed or timed out before an answer."""

    def __init__(self, message: str, *, request: httpx.Request | None = None) -> None:
        self.message = message
        self.request = request
        super().__init__(message)


class InvalidServerURLError(ReangleClientError, ValueError):
    """The server URL given to `Client` or `AsyncClient` is not an http(s) URL of a reangle server's root."""


class InvalidAPIKeyError(ReangleClientError, ValueError):
    """The API key given to `Client` or `AsyncClient` cannot go in a header; the message does not show it."""


class InvalidResponseError(ReangleClientError):
    """The server answered with success, but the body is not what the API documents."""

    def __init__(self, message: str, *, response: httpx.Response) -> None:
        self.message = message
        self.response = response
        super().__init__(message)


class WaitTimeout(ReangleClientError, TimeoutError):
    """`wait` ran out of time. The job was not canceled: it goes on, and `job` is its last known state."""

    def __init__(self, job_id: str, timeout: float, job: Job | None = None) -> None:
        self.job_id = job_id
        self.timeout = timeout
        self.job = job
        status = f" (last seen {job.status})" if job is not None else ""
        super().__init__(f"job {job_id} did not finish within {timeout:g} s{status}")


class JobFailed(ReangleClientError):
    """The job ended with status `failed`; `code`, `message` and `hint` are the job's error."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.code = job.error.code if job.error else "failed"
        self.message = job.error.message if job.error else "the job failed"
        self.hint = job.error.hint if job.error else None
        hint = f" ({self.hint})" if self.hint else ""
        super().__init__(f"job {job.id} failed: {self.code}: {self.message}{hint}")


class JobCanceled(ReangleClientError):
    """The job ended with status `canceled` before it produced its outputs."""

    def __init__(self, job: Job) -> None:
        self.job = job
        super().__init__(f"job {job.id} was canceled")


_STATUS_ERRORS: dict[int, type[ReangleAPIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    422: BadRequestError,
    429: RateLimitError,
}


def error_for_response(response: httpx.Response) -> ReangleAPIError:
    """The exception for an error answer. The body must already be read (call `read()` on a stream first)."""
    status = response.status_code
    code, message, hint = _error_fields(response)
    message = without_key(message, _request_of(response))
    hint = None if hint is None else without_key(hint, _request_of(response))
    kwargs: dict[str, Any] = {"status_code": status, "code": code, "hint": hint, "response": response}
    if status == 429:
        return RateLimitError(
            message, retry_after=parse_retry_after(response.headers.get("retry-after")), **kwargs
        )
    cls = _STATUS_ERRORS.get(status, ServerError if status >= 500 else ReangleAPIError)
    return cls(message, **kwargs)


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` in seconds from now (delay-seconds or an HTTP date); None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _error_fields(response: httpx.Response) -> tuple[str, str, str | None]:
    """(code, message, hint) from `{"error": {...}}`; any other body still gives a readable message."""
    fallback_code = _fallback_code(response.status_code)
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        hint = error.get("hint")
        return (
            str(error.get("code") or fallback_code),
            error["message"],
            hint if isinstance(hint, str) else None,
        )
    if isinstance(error, str):  # {"error": "..."}, as some proxies answer
        return fallback_code, error, None
    if isinstance(body, dict) and "detail" in body:  # a framework's default error body
        detail = body["detail"]
        return fallback_code, detail if isinstance(detail, str) else json.dumps(detail), None
    return fallback_code, _plain_message(response), None


def _fallback_code(status: int) -> str:
    return f"http_{status}"


#: Statuses a proxy answers (with its own HTML page) when the reangle server behind it is down or slow.
_GATEWAY_ERRORS = (502, 503, 504)
_HIDDEN = re.compile(r"<(script|style|head)\b.*?</\1\s*>", re.S | re.I)
_TAG = re.compile(r"<[^>]*>")


def is_html(response: httpx.Response) -> bool:
    """Whether the body is an HTML page (a plain web server's or a proxy's, not the API's JSON)."""
    if "html" in response.headers.get("content-type", "").lower():
        return True
    start = response.content[:256].lstrip().lower()
    return start.startswith((b"<!doctype html", b"<html"))


def server_of(response: httpx.Response) -> str:
    """`the server at http://host:port`, or `the server` when the response has no request."""
    if not _has_request(response):
        return "the server"
    url = response.request.url
    return f"the server at {url.scheme}://{url.netloc.decode()}"


def _plain_message(response: httpx.Response) -> str:
    reason = response.reason_phrase or "error"
    if is_html(response) and response.status_code not in _GATEWAY_ERRORS:  # a web server's page, not the API
        return (
            f"{server_of(response)} answered {response.status_code} {reason} with an HTML page, not the "
            "API's JSON; is this a reangle server?"
        )
    text = response.text if response.content else ""
    if is_html(response):  # a proxy's error page: its words, without the markup
        text = _TAG.sub(" ", _HIDDEN.sub(" ", text))
    text = without_key(" ".join(text.split()), _request_of(response))
    if len(text) > _BODY_EXCERPT:  # after the key is masked: a cut key would show its start
        text = text[:_BODY_EXCERPT] + "..."
    # not the query: a signed download link's signature would end up in logs
    where = f" from {response.request.url.copy_with(query=None)}" if _has_request(response) else ""
    return f"HTTP {response.status_code} {reason}{where}" + (f": {text}" if text else "")


def without_key(text: str, request: httpx.Request | None) -> str:
    """`text` with the request's API key (its Authorization header's token) masked, as an error body or a
    connection error may repeat the header."""
    authorization = request.headers.get("authorization", "") if request is not None else ""
    token = authorization.partition(" ")[2].strip()
    if not token:
        return text
    for shown in (token, repr(token.encode())[2:-1]):  # as is, and as a bytes repr shows it
        text = text.replace(shown, "***")
    return text


def _request_of(response: httpx.Response) -> httpx.Request | None:
    return response.request if _has_request(response) else None


def _has_request(response: httpx.Response) -> bool:
    try:
        response.request  # noqa: B018 (raises RuntimeError when the response was built without one)
    except RuntimeError:
        return False
    return True
