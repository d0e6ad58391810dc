from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from reangle.client import (
    Client,
    Job,
    JobEvent,
    NotFoundError,
    ProgressEvent,
    ServerError,
    WaitTimeout,
    _base,
)
from tests.client.fakes import API, API_KEY, FakeServer


@pytest.fixture
def fake() -> FakeServer:
    return FakeServer(steps=4)


@pytest.fixture
def client(fake: FakeServer) -> Iterator[Client]:
    with Client(API, API_KEY, transport=fake.transport(), poll_interval=0.01) as client:
        yield client


def submit(client: Client) -> Job:
    return client.submit("qwen-edit-multiangle-2511", {"images": ["asset_1"]})


def test_wait_follows_the_event_stream_with_rising_progress(fake: FakeServer, client: Client) -> None:
    job = submit(client)
    seen: list[JobEvent] = []
    done = client.wait(job.id, on_progress=seen.append)
    assert (done.status, done.progress, done.is_terminal) == ("succeeded", 1.0, True)
    progress = [event.progress for event in seen if isinstance(event, ProgressEvent)]
    assert progress == [0.25, 0.5, 0.75, 1.0]
    statuses = [event.status for event in seen if isinstance(event, Job)]
    assert statuses == ["queued", "processing", "succeeded"]
    assert len(fake.requests_to("GET", f"/v1/jobs/{job.id}/events")) == 1
    assert fake.requests_to("GET", f"/v1/jobs/{job.id}") == []
    (stream,) = fake.requests_to("GET", f"/v1/jobs/{job.id}/events")
    assert stream.headers["authorization"] == f"Bearer {API_KEY}"
    assert stream.headers["accept"] == "text/event-stream"


def test_wait_returns_a_failed_job_without_raising(fake: FakeServer, client: Client) -> None:
    fake.outcome = "failed"
    done = client.wait(submit(client).id)
    assert done.status == "failed"
    assert done.error is not None
    assert done.error.code == "engine_error"


def test_wait_on_a_finished_job_returns_at_the_first_event(fake: FakeServer, client: Client) -> None:
    job = submit(client)
    client.cancel(job.id)
    seen: list[JobEvent] = []
    assert client.wait(job.id, on_progress=seen.append).status == "canceled"
    assert len(seen) == 1


def test_events_yields_the_current_job_first_then_each_step(client: Client) -> None:
    job = submit(client)
    events = list(client.events(job.id))
    assert isinstance(events[0], Job)
    assert events[0].status == "queued"
    assert isinstance(events[-1], Job)
    assert events[-1].status == "succeeded"
    assert sum(isinstance(event, ProgressEvent) for event in events) == 4


def test_events_open_a_broken_stream_again_until_the_job_ends(fake: FakeServer, client: Client) -> None:
    fake.stream_mode = "break"  # as a server restarting under the stream
    job = submit(client)
    events = list(client.events(job.id))
    assert isinstance(events[-1], Job)
    assert events[-1].status == "succeeded"
    assert [event.progress for event in events if isinstance(event, ProgressEvent)] == [0.25, 0.5, 0.75, 1.0]
    assert len(fake.requests_to("GET", f"/v1/jobs/{job.id}/events")) == 4


def test_events_sit_out_a_server_away_then_give_up_once_it_stays_away(
    fake: FakeServer, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_base, "AWAY_POLL_MAX_S", 0.02)
    fake.failing_streams = 5
    events = list(client.events(submit(client).id))
    assert events[-1].status == "succeeded"  # type: ignore[union-attr]

    monkeypatch.setattr(_base, "SERVER_AWAY_S", 0.3)
    fake.failing_streams = 10**6
    with pytest.raises(ServerError, match="restarting"):
        list(client.events(submit(client).id))


def test_when_the_stream_breaks_wait_polls_and_resumes(fake: FakeServer, client: Client) -> None:
    fake.stream_mode = "break"
    job = submit(client)
    seen: list[JobEvent] = []
    done = client.wait(job.id, on_progress=seen.append)
    assert done.status == "succeeded"
    assert len(fake.requests_to("GET", f"/v1/jobs/{job.id}/events")) == 4
    assert len(fake.requests_to("GET", f"/v1/jobs/{job.id}")) >= 3
    progress = [event.progress for event in seen if isinstance(event, ProgressEvent)]
    assert progress == sorted(progress)
    assert progress[-1] == 1.0


def test_without_an_event_stream_wait_polls_only(fake: FakeServer, client: Client) -> None:
    fake.stream_mode = "missing"
    fake.advance_on_get = True
    job = submit(client)
    seen: list[JobEvent] = []
    done = client.wait(job.id, on_progress=seen.append)
    assert done.status == "succeeded"
    assert len(fake.requests_to("GET", f"/v1/jobs/{job.id}/events")) <= 3
    assert [event.progress for event in seen] == [0.25, 0.5, 0.75, 1.0]
    assert all(isinstance(event, Job) for event in seen)


def test_polling_sits_out_a_few_server_errors(fake: FakeServer, client: Client) -> None:
    fake.stream_mode = "missing"
    fake.advance_on_get = True
    fake.failing_gets = 4
    assert client.wait(submit(client).id).status == "succeeded"
    assert fake.failing_gets == 0


def test_polling_sits_out_a_server_away_for_many_polls_backing_off(
    fake: FakeServer, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_base, "AWAY_POLL_MAX_S", 0.04)
    fake.stream_mode = "missing"
    fake.advance_on_get = True
    fake.failing_gets = 20  # a restart that takes a while: the poll interval is 0.01 s
    started = time.monotonic()
    assert client.wait(submit(client).id).status == "succeeded"
    assert fake.failing_gets == 0
    assert time.monotonic() - started >= 16 * 0.04  # backed off to AWAY_POLL_MAX_S


def test_polling_gives_up_when_the_server_stays_away(
    fake: FakeServer, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_base, "SERVER_AWAY_S", 0.3)
    monkeypatch.setattr(_base, "AWAY_POLL_MAX_S", 0.02)
    fake.stream_mode = "missing"
    fake.failing_gets = 10**6
    started = time.monotonic()
    with pytest.raises(ServerError, match="restarting"):
        client.wait(submit(client).id)
    assert 0.3 <= time.monotonic() - started < 5


@pytest.mark.parametrize("stream_mode", ["heartbeat", "close"])
def test_wait_timeout_leaves_the_job_running(fake: FakeServer, client: Client, stream_mode: str) -> None:
    fake.outcome = "never"
    fake.stream_mode = stream_mode
    job = submit(client)
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as caught:
        client.wait(job.id, timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 3
    assert caught.value.job_id == job.id
    assert caught.value.job is not None
    assert caught.value.job.status == "queued"
    assert isinstance(caught.value, TimeoutError)
    assert fake.jobs[job.id]["status"] == "queued"
    assert fake.requests_to("POST", f"/v1/jobs/{job.id}/cancel") == []


def test_an_error_in_the_callback_is_not_taken_for_a_broken_stream(client: Client) -> None:
    def fussy(event: JobEvent) -> None:
        if isinstance(event, ProgressEvent):
            raise ValueError("callback bug")

    with pytest.raises(ValueError, match="callback bug"):
        client.wait(submit(client).id, on_progress=fussy)


def test_a_missing_job_is_reported_not_waited_for(client: Client) -> None:
    with pytest.raises(NotFoundError):
        client.wait("job_missing", timeout=5)
