"""DashScope's error answers, and the one table that maps them onto reangle's error tree.

Vendor code (or HTTP status)                          reangle error
InvalidParameter*, other 400s about the request    -> InvalidInput, naming the Scenario field where the
                                                      vendor's message names a parameter
DataInspectionFailed, IPInfringementSuspect, ...   -> ContentRefused (an InvalidInput)
InvalidApiKey, AccessDenied*, Arrearage, 401, 403,
ModelNotFound, Model.AccessDenied                  -> ProviderConfigError (an EngineError: fix the settings)
Throttling*, 429, 5xx, connection failures         -> retried by the client, then Unavailable (retry_after_s)
UnsupportedOperation (canceling a running task)     -> Conflict
anything else (a FAILED task's own code included)  -> EngineError

The reangle error's message carries the vendor's code, message and request id, and the `DashScopeAPIError` it
came from is chained as its `__cause__`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import httpx

from reangle.errors import Conflict, EngineError, InvalidInput, ReangleError, Unavailable
from reangle.remote.errors import ContentRefused, ProviderConfigError

CONFIG_HINT = (
    "check REANGLE_DASHSCOPE_API_KEY, and that REANGLE_DASHSCOPE_BASE_URL is the endpoint of the key's "
    "region (Beijing and Singapore keys are not interchangeable)"
)
_CONFIG_CODES = frozenset(
    {"InvalidApiKey", "AccessDenied", "Arrearage", "ModelNotFound", "Model.AccessDenied", "Unauthorized"}
)
_CONTENT_CODES = frozenset({"DataInspectionFailed", "IPInfringementSuspect", "InappropriateContent"})
#: The vendor's parameter names, as its messages spell them, -> the Scenario field that sets them.
_FIELDS_IN_MESSAGES = (
    (re.compile(r"enable_sequential"), "imageSetMode"),
    (re.compile(r"thinking_mode"), "thinkingMode"),
    (re.compile(r"\bseed\b", re.I), "seed"),
    (re.compile(r"\bsize\b", re.I), "size"),
    (re.compile(r"(parameters\.n\b|\bparameter `?n`?\b|\bn (should|must|is)\b)", re.I), "numOutputs"),
    (re.compile(r"\bimages?\b|\bimg\b", re.I), "images"),
    (re.compile(r"\b(text|prompt)\b", re.I), "prompt"),
)
_SHOWN_CHARS = 300


@dataclass(eq=False)
class DashScopeAPIError(Exception):
    """One error answer of DashScope (or a failure to get one), as the vendor said it."""

    code: str
    message: str
    status: int | None = None  # the HTTP status; None for a task that FAILED or a connection failure
    request_id: str | None = None
    #: Worth retrying the same call: throttling, a server error, a connection failure before sending.
    transient: bool = False
    retry_after_s: float | None = None  # the vendor's Retry-After, when it sent one

    def __str__(self) -> str:
        where = f" (HTTP {self.status})" if self.status else ""
        request = f", request {self.request_id}" if self.request_id else ""
        return f"{self.code}{where}: {self.message}{request}"

    @classmethod
    def from_response(cls, response: httpx.Response) -> DashScopeAPIError:
        """The error a non-2xx answer carries in its `{code, message, request_id}` body (or its status)."""
        status = response.status_code
        code, message, request_id = f"HTTP{status}", _short(response.text) or response.reason_phrase, None
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            code = str(body.get("code") or code)
            message = _short(str(body.get("message") or message))
            request_id = str(body["request_id"]) if body.get("request_id") else None
        transient = status == 429 or status >= 500 or code.startswith("Throttling")
        return cls(code, message, status, request_id, transient, _retry_after(response))

    @classmethod
    def from_transport(cls, exc: httpx.TransportError, *, sent: bool) -> DashScopeAPIError:
        """A connection-level failure. One that happened before the request left is always safe to retry;
        after, only a request that changes nothing (the caller decides)."""
        detail = _short(str(exc)) or "no detail"
        return cls(type(exc).__name__, detail, transient=not sent)


def sent_before_failing(exc: httpx.TransportError) -> bool:
    """Whether the request may have reached the vendor before `exc` (so that a POST may have taken effect)."""
    return not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


def to_reangle(error: DashScopeAPIError, *, doing: str, retries: int = 0) -> ReangleError:
    """`error`, met while `doing` ("creating a task", ...), as the reangle error a caller can act on."""
    mapped = _mapped(error, doing, retries)
    mapped.__cause__ = error
    return mapped


def _mapped(error: DashScopeAPIError, doing: str, retries: int) -> ReangleError:
    said = str(error)
    code = error.code
    if code in _CONTENT_CODES or code.startswith("DataInspection") or "DataInspection" in code:
        return ContentRefused(
            f"DashScope's content moderation refused this request ({said})",
            field=None,
            hint="rephrase the prompt or use other input images",
        )
    if code in _CONFIG_CODES or code.startswith("AccessDenied") or error.status in (401, 403):
        return ProviderConfigError(
            f"the server's DashScope setup was refused while {doing} ({said})", hint=CONFIG_HINT
        )
    if code == "UnsupportedOperation":  # e.g. canceling a task that already runs
        return Conflict(f"DashScope refused {doing} ({said})")
    if code.startswith("InvalidParameter") or code == "MissingParameter" or (error.status == 400):
        return InvalidInput(f"DashScope rejected the request ({said})", field=field_named_in(error.message))
    if error.transient:
        tried = f" after {retries + 1} attempts" if retries else ""
        return Unavailable(
            f"DashScope is unavailable{tried} while {doing} ({said})", retry_after_s=retry_after(error)
        )
    return EngineError(f"DashScope failed while {doing} ({said})")


def field_named_in(message: str) -> str | None:
    """The Scenario field behind the first vendor parameter that `message` names, or None."""
    for pattern, field in _FIELDS_IN_MESSAGES:
        if pattern.search(message):
            return field
    return None


def retry_after(error: DashScopeAPIError, fallback_s: float = 5.0) -> int:
    """Whole seconds for a client to wait: the vendor's Retry-After when it gave one."""
    return max(1, math.ceil(error.retry_after_s if error.retry_after_s is not None else fallback_s))


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return None  # absent, or an HTTP date: the client's own backoff decides
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


#: Credentials a vendor's message may echo (a refused key, the Authorization header): never passed on to the
#: job's error, which every caller reads.
_CREDENTIALS = re.compile(r"(?i)\b(bearer|basic)\s+\S+|\bsk-[A-Za-z0-9_-]{4,}")


def _short(text: str) -> str:
    text = _CREDENTIALS.sub(lambda found: f"{found[1]} ***" if found[1] else "sk-***", " ".join(text.split()))
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."
