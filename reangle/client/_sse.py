"""Server-Sent Events: a line decoder (the WHATWG event-stream rules) and the mapping to typed job events."""

from __future__ import annotations

from dataclasses import dataclass

from reangle.client._models import Job, JobEvent, ProgressEvent


@dataclass(frozen=True, kw_only=True)
class ServerSentEvent:
    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Feed it the stream's lines (without their line ends); it returns an event at each blank line."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._retry: int | None = None

    def feed(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):  # a comment, e.g. a keep-alive
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        if not self._data and not self._event:
            self._retry = None
            return None
        event = ServerSentEvent(
            event=self._event or "message", data="\n".join(self._data), id=self._id, retry=self._retry
        )
        self._event, self._data, self._retry = "", [], None
        return event


def decode_job_event(sse: ServerSentEvent) -> JobEvent | None:
    """The typed event for `status` and `progress`; None for other event names (newer servers may add some).

    Raises pydantic's ValidationError (a ValueError) when the data is not the documented JSON.
    """
    if sse.event == "status":
        return Job.model_validate_json(sse.data)
    if sse.event == "progress":
        return ProgressEvent.model_validate_json(sse.data)
    return None
