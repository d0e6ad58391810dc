"""The reangle error tree. No HTTP here: each API dialect maps these to its own error shape in one place.

ReangleError
+-- InvalidInput          a request field is missing, malformed or out of range (names the field)
|   +-- InvalidImage      an input is not a readable image of a supported format
+-- EngineError           the model failed while running or loading
|   +-- LoraLoadError     a LoRA file could not be read or matched no weights of the model
+-- Canceled              the work was canceled before it produced a result
+-- InternalError         a bug: anything else raised while serving a request (a 500, details in the log)
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import Self

#: An error repeats what the request sent (a model id, a field name, a value) cut to this many characters
#: a word, and its whole message to MAX_MESSAGE_CHARS: a refusal must not echo megabytes back.
MAX_WORD_CHARS = 300
MAX_MESSAGE_CHARS = 2000
_LONG_WORD = re.compile(rf"\S{{{MAX_WORD_CHARS + 1},}}")


def counted(number: int, noun: str) -> str:
    """A number of things as a message says it: `1 job`, `2 jobs`."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def bounded(text: str) -> str:
    """`text` with each word longer than MAX_WORD_CHARS cut, then cut to MAX_MESSAGE_CHARS ("…" marks a
    cut)."""
    text = _LONG_WORD.sub(lambda word: word.group()[: MAX_WORD_CHARS - 1] + "…", text)
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


class ReangleError(Exception):
    """Something went wrong in reangle."""

    code = "error"

    def __init__(self, message: str | None = None, *, hint: str | None = None) -> None:
        self.message = bounded(message) if message else (type(self).__doc__ or self.code).strip()
        self.hint = bounded(hint) if hint else hint
        super().__init__(self.message)

    def reworded(self, message: str) -> Self:
        """This error, of the same kind and with the same details, saying `message`."""
        copied = copy.copy(self)
        message = bounded(message)
        copied.message, copied.args = message, (message,)
        return copied

    def with_hint(self) -> str:
        """The message, and what to do about it when the error says: `message (hint)`."""
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def to_dict(self) -> dict[str, str]:
        out = {"code": self.code, "message": self.message}
        if self.hint:
            out["hint"] = self.hint
        return out


class InvalidInput(ReangleError):
    """The request is invalid."""

    code = "invalid_input"

    def __init__(self, message: str, *, field: str | None = None, hint: str | None = None) -> None:
        self.field = bounded(field) if field else field
        super().__init__(message, hint=hint)

    def about(self, field: str) -> InvalidInput:
        """This error, of the same kind, about `field`: its message starts with that field's name, once."""
        message = self.message
        if self.field and message.startswith(self.field):
            message = field + message.removeprefix(self.field)  # "x: ..." or "x has ..."
        else:
            message = f"{field}: {message}"
        named = self.reworded(message)
        named.field = bounded(field)
        return named


class InvalidImage(InvalidInput):
    """The input is not a readable PNG, JPEG or WebP image."""

    code = "invalid_image"


class UnsupportedImage(InvalidImage):
    """Only PNG, JPEG and WebP images are accepted."""

    code = "unsupported_image"


class TooLarge(InvalidInput):
    """The input is too large."""

    code = "too_large"


class Unauthorized(ReangleError):
    """A valid API key is required."""

    code = "unauthorized"


class Forbidden(ReangleError):
    """The signature of this link is wrong or has expired."""

    code = "forbidden"


class NotFound(ReangleError):
    """Not found."""

    code = "not_found"


class MethodNotAllowed(ReangleError):
    """The path exists, not with this HTTP method."""

    code = "method_not_allowed"

    def __init__(self, message: str, *, allow: Sequence[str]) -> None:
        self.allow = tuple(allow)
        super().__init__(message)


class AssetGone(NotFound):
    """The stored bytes of an asset are gone (expired and swept, or lost from storage)."""

    code = "gone"


class Conflict(ReangleError):
    """The request conflicts with the current state."""

    code = "conflict"


class QueueFull(ReangleError):
    """Too many jobs are waiting; retry later."""

    code = "queue_full"

    def __init__(self, message: str | None = None, *, retry_after_s: int = 5) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message, hint=f"retry in {retry_after_s} s")


class TooManyStreams(QueueFull):
    """This API key holds as many event streams as it may; poll, or close one (429, like a full queue)."""

    code = "too_many_streams"


class Unavailable(ReangleError):
    """A service the server depends on (its database, its object store) cannot be reached; retry later."""

    code = "unavailable"

    def __init__(self, message: str | None = None, *, retry_after_s: int = 5) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message, hint=f"retry in {retry_after_s} s")


class SourceUnavailable(ReangleError):
    """A file a job names (a LoRA URL) could not be fetched when the job ran. Unlike `Unavailable` it ends
    the job: handing it back would put it at the head of the queue again, holding every job behind it."""

    code = "source_unavailable"


class EngineError(ReangleError):
    """The inference engine failed."""

    code = "engine_error"


class LoraLoadError(EngineError):
    """A LoRA file could not be loaded."""

    code = "lora_load_error"


class RequestTimeout(ReangleError):
    """The client stopped sending its request."""

    code = "request_timeout"


class InternalError(ReangleError):
    """The server failed; see its log."""

    code = "internal_error"


class Canceled(ReangleError):
    """The work was canceled."""

    code = "canceled"
