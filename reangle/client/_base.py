"""What `Client` and `AsyncClient` share, with no I/O: URLs, headers, answer parsing, wait bookkeeping."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from reangle.client._errors import (
    APIConnectionError,
    AuthenticationError,
    InvalidAPIKeyError,
    InvalidResponseError,
    InvalidServerURLError,
    ReangleAPIError,
    WaitTimeout,
    error_for_response,
    is_html,
    server_of,
    without_key,
)
from reangle.client._models import Job, JobEvent, ProgressEvent

ModelT = TypeVar("ModelT", bound=BaseModel)

#: Called with each status update and progress tick of a job; the async client also awaits what it returns.
ProgressCallback = Callable[[JobEvent], object]
#: The errors after which `wait` gives up on the event stream for now and asks for the job instead.
STREAM_BREAKS = (ReangleAPIError, APIConnectionError, ValueError)

#: Consecutive event streams that deliver nothing before `wait` polls only.
MAX_STREAM_FAILURES = 3
#: How long `wait` sits out a server it cannot reach or that answers 5xx before it gives up: a GPU server
#: restarting loads its model before it listens again, which takes minutes.
SERVER_AWAY_S = 600.0
#: The longest pause between polls while the server is away (they back off from the poll interval to this).
AWAY_POLL_MAX_S = 5.0


def _user_agent() -> str:
    try:
        return f"reangle-client/{version('reangle')}"
    except PackageNotFoundError:
        return "reangle-client"


USER_AGENT = _user_agent()


def server_root(base_url: str) -> str:
    """The server's root URL: a trailing slash or `/v1` is dropped, since paths start with /v1 or /healthz.
    `InvalidServerURLError` (a ValueError) when it is not a valid http(s) URL, or is a provider API's URL."""
    root = base_url.strip().rstrip("/")
    scheme, _, rest = root.partition("://")
    if scheme.lower() not in ("http", "https") or not rest.split("/")[0]:
        raise InvalidServerURLError(
            f"server URL must start with http:// or https:// (got {_shown_url(base_url)!r})"
        )
    problem = _address_problem(re.split(r"[/?#]", rest, maxsplit=1)[0])
    if problem is None:
        try:
            httpx.URL(root)
        except httpx.InvalidURL as exc:  # what the checks above do not name, e.g. a control character
            problem = str(exc).rstrip(".")
            problem = problem[:1].lower() + problem[1:]
    if problem is not None:
        raise InvalidServerURLError(f"server URL {_shown_url(base_url)!r} is not valid: {problem}")
    _refuse_provider_path(base_url, root)
    return root.removesuffix("/v1")


#: The provider-compatible APIs a server serves beside its own, by path: the dialects' prefixes, listed here
#: since the SDK imports nothing from the server.
PROVIDER_PATHS = {
    "scenario/v1": "Scenario",
    "segmind/v1": "Segmind",
    "segmind/v2": "Segmind",
    "runpod/v2": "RunPod",
    "openai/v1": "OpenAI",
}


def _address_problem(authority: str) -> str | None:
    """What is wrong with `[user@]host[:port]`, in words; None when nothing is."""
    address = authority.rpartition("@")[2]
    if unsendable := next((char for char in address if not char.isprintable() or char.isspace()), None):
        return f"its host holds {_kind_of(unsendable)}"
    if address.startswith("["):
        host, bracket, after = address.partition("]")
        if not bracket:
            return "its IPv6 address has no closing ']'"
        if after and not after.startswith(":"):
            return f"{after!r} follows its IPv6 address (expected ':' and a port)"
        host, port = host + bracket, after[1:]
    else:
        host, _, port = address.partition(":")
    if not host:
        return "it has no host"
    if port and not port.isdecimal():
        return f"its port {port!r} is not a number"
    if port and int(port) > 65535:
        return f"its port {port} is past 65535"
    return None


def _refuse_provider_path(base_url: str, root: str) -> None:
    """A provider-compatible API's URL (/openai/v1, /scenario/v1, ...) is refused, naming the root to give."""
    scheme, _, rest = root.partition("://")
    authority, _, path = rest.partition("/")
    segments = [*path.split("/"), "v1"]  # what the SDK's own paths add: /openai is /openai/v1 too
    for k in range(len(segments) - 1):
        provider = PROVIDER_PATHS.get(f"{segments[k]}/{segments[k + 1]}".lower())
        if provider is not None:
            server = "/".join([f"{scheme}://{authority}", *segments[:k]])
            raise InvalidServerURLError(
                f"server URL {_shown_url(base_url)!r} is the path of the server's {provider}-compatible API; "
                f"give its root URL instead ({server})"
            )


def _shown_url(url: str) -> str:
    """`url` as a message shows it: a password in it (`user:password@host`) masked."""
    return re.sub(r"(://[^/@]*?:)[^/@]*@", r"\1***@", url, count=1)


def idempotency_headers(key: str | None) -> dict[str, str]:
    """The Idempotency-Key header; a ValueError for a key that holds a character a header cannot carry."""
    if not key:
        return {}
    if not all(" " <= char <= "~" for char in key) or key != key.strip():
        raise ValueError(
            "idempotency_key must be printable ASCII without blanks at either end (it is sent as a header)"
        )
    return {"Idempotency-Key": key}


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The Authorization header for `api_key`, blanks around it dropped (a key read from a file ends in a
    newline). `InvalidAPIKeyError` (a ValueError) for a key that holds a character a header cannot carry."""
    given = api_key or ""
    key = given.strip()
    bad = next((k for k, char in enumerate(key) if not "!" <= char <= "~"), None)  # visible ASCII only
    if bad is not None:
        position = bad + 1 + len(given) - len(given.lstrip())
        raise InvalidAPIKeyError(  # never the key, nor the character: the message may end up in a log
            f"api_key holds {_kind_of(key[bad])} at position {position}, which an HTTP header cannot carry; "
            "check the key"
        )
    return {"Authorization": f"Bearer {key}"} if key else {}


def _kind_of(char: str) -> str:
    if char.isspace():
        return "whitespace"
    return "a control character" if char.isascii() else "a non-ASCII character"


#: What a 401 says when the client has no key: the server's own hint is for curl users.
NO_KEY_HINT = "pass api_key=... to the client"


def check_api(response: httpx.Response, *, has_key: bool) -> httpx.Response:
    """`check` for an API call: a 401 to a client without a key says how to give it one."""
    try:
        return check(response)
    except AuthenticationError as exc:
        if not has_key:
            exc.hint = NO_KEY_HINT
        raise


def api_path(*parts: str) -> str:
    """`/v1/jobs/<id>`, each id escaped so that it stays one path segment."""
    return "/" + "/".join(quote(part, safe="") if k else part for k, part in enumerate(parts))


def query(**params: Any) -> dict[str, Any]:
    return {name: value for name, value in params.items() if value is not None}


def check(response: httpx.Response) -> httpx.Response:
    """The response when it is a success; its error as an exception otherwise (the body must be read)."""
    if not response.is_success:
        raise error_for_response(response)
    return response


def parse(response: httpx.Response, model: type[ModelT]) -> ModelT:
    try:
        return model.model_validate(check(response).json())
    except ValueError as exc:  # the body is not JSON (JSONDecodeError), or not this model (ValidationError)
        if is_html(response):  # a web server or a proxy's page, not a reangle server
            raise InvalidResponseError(
                f"{server_of(response)} answered {response.request.method} {response.request.url.path} "
                f"with an HTML page, not JSON; is this a reangle server?",
                response=response,
            ) from exc
        shape = model.__name__.lstrip("_")
        raise InvalidResponseError(
            f"the server's answer to {response.request.method} {response.request.url.path} is not "
            f"a valid {shape} ({first_problem(exc)}); is {server_of(response)} a reangle server's "
            "root URL (not a provider's path such as /scenario/v1)?",
            response=response,
        ) from exc


def first_problem(exc: ValueError) -> str:
    """One line for why a body is not the model: pydantic's first error, not its whole report."""
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return f"{where}: {first['msg']}" if where else first["msg"]
    return str(exc)


def polled_events(before: Job | None, job: Job) -> list[JobEvent]:
    """What the event stream would have sent between two polls of a job: the job when its status changed
    (or at the first poll), a `ProgressEvent` when only its progress did."""
    if before is None or job.status != before.status:
        return [job]
    if job.progress != before.progress:
        return [ProgressEvent(progress=job.progress)]
    return []


def connection_error(exc: httpx.TransportError) -> APIConnectionError:
    request = _request_of(exc)
    where = f" {request.url.scheme}://{request.url.netloc.decode()}" if request is not None else ""
    detail = without_key(str(exc) or type(exc).__name__, request)
    if isinstance(exc, httpx.TimeoutException):
        return APIConnectionError(f"timed out talking to the server{where}: {detail}", request=request)
    if request is not None and request.url.scheme == "https" and _is_tls_to_plain_http(detail):
        detail += " (is the server http://?)"
    return APIConnectionError(f"cannot reach the server{where}: {detail}", request=request)


#: What OpenSSL says when a TLS handshake gets a plain HTTP answer.
_PLAIN_HTTP_SIGNS = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "HTTP_REQUEST")


def _is_tls_to_plain_http(detail: str) -> bool:
    return any(sign in detail for sign in _PLAIN_HTTP_SIGNS)


def _request_of(exc: httpx.TransportError) -> httpx.Request | None:
    try:
        return exc.request
    except RuntimeError:  # raised outside a request
        return None


class WaitState:
    """The bookkeeping of one `wait`: its deadline, the job as last seen, when to stop using the stream."""

    def __init__(self, job_id: str, timeout: float | None, poll_interval: float) -> None:
        self.job_id = job_id
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.poll_interval = poll_interval
        self.job: Job | None = None
        self._stream_failures = 0
        self._poll_failures = 0
        self._away_since: float | None = None

    @property
    def use_stream(self) -> bool:
        return self._stream_failures < MAX_STREAM_FAILURES

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def check_deadline(self) -> None:
        remaining = self.remaining()
        if remaining is not None and remaining <= 0:
            raise WaitTimeout(self.job_id, self.timeout or 0.0, self.job)

    def stream_timeout(self, timeout: float) -> httpx.Timeout:
        """Reads wait at most `timeout` and never past the deadline (a silent stream falls back to a poll)."""
        remaining = self.remaining()
        read = timeout if remaining is None else max(0.01, min(timeout, remaining))
        return httpx.Timeout(timeout, read=read)

    def poll_delay(self) -> float:
        """The poll interval; backing off to AWAY_POLL_MAX_S while polls fail; never past the deadline."""
        delay = self.poll_interval
        if self._poll_failures:
            delay = min(delay * 2 ** (self._poll_failures - 1), max(delay, AWAY_POLL_MAX_S))
        remaining = self.remaining()
        return delay if remaining is None else max(0.0, min(delay, remaining))

    def seen(self, job: Job) -> bool:
        """Record a job state; True when its status or progress changed since the last one."""
        changed = self.job is None or (job.status, job.progress) != (self.job.status, self.job.progress)
        self.job = job
        return changed

    def stream_ended(self, events: int) -> None:
        """A stream closed or broke before the job ended; `events` is how many it delivered."""
        self._stream_failures = 0 if events else self._stream_failures + 1

    def streams_refused(self) -> None:
        """The key holds as many event streams as the server allows (429): poll from now on."""
        self._stream_failures = MAX_STREAM_FAILURES

    def poll_succeeded(self) -> None:
        self._poll_failures, self._away_since = 0, None

    def poll_failed(self, exc: Exception) -> None:
        """Sit out a server away (restarting); re-raise the failure once it has been away SERVER_AWAY_S."""
        now = time.monotonic()
        if self._away_since is None:
            self._away_since = now
        self._poll_failures += 1
        if now - self._away_since >= SERVER_AWAY_S:
            raise exc
