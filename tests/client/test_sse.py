from __future__ import annotations

import pytest

from reangle.client import Job, ProgressEvent
from reangle.client._sse import ServerSentEvent, SSEDecoder, decode_job_event


def decode(lines: list[str]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    return [event for line in lines if (event := decoder.feed(line)) is not None]


def test_an_event_ends_at_a_blank_line_and_multi_line_data_is_joined() -> None:
    events = decode(["event: status", 'data: {"a":', "data: 1}", "id: 7", "", "data:x", ""])
    assert events == [
        ServerSentEvent(event="status", data='{"a":\n1}', id="7"),
        ServerSentEvent(event="message", data="x", id="7"),
    ]


def test_comments_and_unknown_fields_are_ignored_and_empty_blocks_dispatch_nothing() -> None:
    assert decode([": keep-alive", "", "", "retry: 1000", "foo: bar", ""]) == []
    assert decode(["retry: 1500", "data: y", ""]) == [ServerSentEvent(data="y", retry=1500)]


def test_status_and_progress_events_become_typed_and_others_are_skipped() -> None:
    job = decode_job_event(
        ServerSentEvent(
            event="status",
            data='{"id": "job_1", "model": "m", "status": "processing", "created_at": "2026-01-01T00:00Z"}',
        )
    )
    assert isinstance(job, Job)
    assert (job.id, job.status, job.is_terminal) == ("job_1", "processing", False)
    progress = decode_job_event(
        ServerSentEvent(event="progress", data='{"progress": 0.5, "step": 2, "steps": 4}')
    )
    assert progress == ProgressEvent(progress=0.5, step=2, steps=4)
    assert decode_job_event(ServerSentEvent(event="log", data="anything")) is None


def test_a_malformed_status_event_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="validation error"):
        decode_job_event(ServerSentEvent(event="status", data='{"id": "job_1"}'))
