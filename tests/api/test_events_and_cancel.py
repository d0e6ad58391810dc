"""Server-Sent Events of a job, and canceling jobs while queued, while processing and once finished."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from reangle.core.models import CAMERA_EDIT, INSTRUCTION_EDIT
from tests.api.conftest import (
    ServerProcess,
    assert_error,
    cancel,
    download,
    edit_input,
    get_job,
    hold_input,
    running,
    slow_input,
    submit,
    succeeded,
    upload,
    wait_job,
)


@dataclass(frozen=True)
class Event:
    kind: str
    data: Any


def events(response: httpx.Response) -> Iterator[Event]:
    """Parse an SSE stream (comments such as pings skipped) until the server closes it."""
    kind, data = "message", list[str]()
    for line in response.iter_lines():
        if line == "":
            if data:
                yield Event(kind, json.loads("\n".join(data)))
            kind, data = "message", list[str]()
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                kind = value
            elif name == "data":
                data.append(value)


def test_events_stream_status_then_progress_to_the_last_step_then_the_end(api: httpx.Client) -> None:
    job = submit(api, edit_input(upload(api)["id"], num_inference_steps=10))
    with api.stream("GET", f"/v1/jobs/{job['id']}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        received = list(events(response))  # ends only when the server closes the stream

    first, last = received[0], received[-1]
    assert first.kind == "status"
    assert first.data["id"] == job["id"]
    assert first.data["status"] in ("queued", "processing")
    assert last.kind == "status"
    assert last.data["status"] == "succeeded"
    assert last.data["output"]["assets"][0]["url"]
    progress = [event.data for event in received if event.kind == "progress"]
    assert progress, [event.kind for event in received]
    fractions = [p["progress"] for p in progress]
    assert fractions == sorted(fractions)
    assert [p["step"] for p in progress] == sorted({p["step"] for p in progress})
    assert progress[-1] == {"progress": 1.0, "step": 10, "steps": 10}
    assert {event.kind for event in received} == {"status", "progress"}
    assert received.index(last) == len(received) - 1


def test_events_of_a_finished_job_are_its_final_status_alone(api: httpx.Client) -> None:
    job = succeeded(api, submit(api, edit_input(upload(api)["id"]))["id"])
    with api.stream("GET", f"/v1/jobs/{job['id']}/events") as response:
        received = list(events(response))
    assert [(event.kind, event.data["status"]) for event in received] == [("status", "succeeded")]


def test_events_of_an_unknown_job_are_404_before_any_stream(api: httpx.Client) -> None:
    assert_error(api.get("/v1/jobs/job_nope/events"), 404, "not_found", "job_nope")


def test_cancel_while_queued_ends_it_at_once_and_it_never_runs(api: httpx.Client) -> None:
    asset = upload(api)
    holder = submit(api, hold_input(asset["id"]), kind="orbit")
    wait_job(api, holder["id"], running)
    queued = submit(api, edit_input(asset["id"]))
    assert get_job(api, queued["id"])["status"] == "queued"

    canceled = cancel(api, queued["id"])
    assert canceled["status"] == "canceled"
    assert canceled["finished_at"] is not None

    assert cancel(api, holder["id"])["id"] == holder["id"]
    assert wait_job(api, holder["id"])["status"] == "canceled"
    # the runner is free now and has had its chance to pick up the canceled job: it must not have
    later = succeeded(api, submit(api, edit_input(asset["id"]))["id"])
    job = get_job(api, queued["id"])
    assert job["status"] == "canceled"
    assert job["started_at"] is None
    assert [change["status"] for change in job["history"]] == ["queued", "canceled"]
    assert job["output"]["assets"] == []
    assert later["status"] == "succeeded"


def test_cancel_while_processing_stops_at_the_next_step_and_drops_the_output(api: httpx.Client) -> None:
    job = submit(api, edit_input(upload(api)["id"], num_inference_steps=100))
    seen = wait_job(api, job["id"], running)
    assert cancel(api, job["id"])["id"] == job["id"]
    ended = wait_job(api, job["id"])
    assert ended["status"] == "canceled"
    assert ended["output"]["assets"] == []
    assert seen["progress"] <= ended["progress"] < 1
    assert [change["status"] for change in ended["history"]] == ["queued", "processing", "canceled"]


def test_cancel_of_a_finished_job(api: httpx.Client) -> None:
    asset = upload(api)
    done = succeeded(api, submit(api, edit_input(asset["id"]))["id"])
    assert_error(api.post(f"/v1/jobs/{done['id']}/cancel"), 409, "conflict", done["id"], "succeeded")
    assert get_job(api, done["id"])["status"] == "succeeded"
    assert download(done["output"]["assets"][0]["url"]).status_code == 200

    job = submit(api, edit_input(asset["id"], num_inference_steps=100))
    wait_job(api, job["id"], running)
    cancel(api, job["id"])
    ended = wait_job(api, job["id"])
    assert ended["status"] == "canceled"
    again = cancel(api, job["id"])
    assert (again["status"], again["finished_at"], again["history"]) == (
        "canceled",
        ended["finished_at"],
        ended["history"],
    )


def test_cancel_of_an_unknown_job_is_404(api: httpx.Client) -> None:
    assert_error(api.post("/v1/jobs/job_nope/cancel"), 404, "not_found", "job_nope")


def test_events_of_a_canceled_job_end_with_canceled(shared_server: ServerProcess, api: httpx.Client) -> None:
    job = submit(api, edit_input(upload(api)["id"], num_inference_steps=100))
    with api.stream("GET", f"/v1/jobs/{job['id']}/events") as response:
        stream = events(response)
        for event in stream:
            if event.kind == "progress":
                break
        with shared_server.client(None) as anonymous:
            assert anonymous.post(f"/v1/jobs/{job['id']}/cancel").status_code == 401
        cancel(api, job["id"])
        rest = list(stream)
    assert rest[-1].kind == "status"
    assert rest[-1].data["status"] == "canceled"
    assert all(event.kind == "progress" for event in rest[:-1])


# time limits -----------------------------------------------------------------------------------------------


def test_a_job_past_its_time_limit_ends_failed_as_timed_out(api: httpx.Client) -> None:
    asset = upload(api)
    body = {"model": CAMERA_EDIT, "input": slow_input(asset["id"]), "time_limits": {"run_s": 0.3}}
    accepted = api.post("/v1/jobs", json=body)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["time_limits"] == {"run_s": 0.3, "total_s": None}
    ended = wait_job(api, accepted.json()["id"])  # 100 steps: about 2 s, had it run to its end
    assert ended["status"] == "failed"
    assert ended["error"]["code"] == "timed_out"
    assert ended["error"]["message"] == "the job ran longer than its run time limit (0.3 s)"
    assert ended["output"]["assets"] == []
    plain = submit(api, edit_input(asset["id"]))
    assert plain["time_limits"] is None
    succeeded(api, plain["id"])


def test_time_limits_go_to_every_job_of_a_batch_and_into_the_idempotency_check(api: httpx.Client) -> None:
    asset = upload(api)
    batch = {
        "model": INSTRUCTION_EDIT,
        "items": [{"input": {"images": [asset["id"]], "prompt": "x"}}] * 2,
        "time_limits": {"total_s": 600},
    }
    jobs = api.post("/v1/batches", json=batch).json()["jobs"]
    assert [job["time_limits"] for job in jobs] == [{"run_s": None, "total_s": 600}] * 2
    body = {"model": CAMERA_EDIT, "input": edit_input(asset["id"]), "time_limits": {"run_s": 60}}
    key = {"Idempotency-Key": "limited"}
    first = api.post("/v1/jobs", json=body, headers=key).json()
    assert api.post("/v1/jobs", json=body, headers=key).json()["id"] == first["id"]
    other = api.post("/v1/jobs", json={**body, "time_limits": {"run_s": 30}}, headers=key)
    assert_error(other, 409, "conflict", "limited")


@pytest.mark.parametrize(
    ("time_limits", "words"),
    [
        ({"run_s": 0}, "time_limits.run_s"),
        ({"total_s": 8 * 24 * 3600}, "time_limits.total_s"),
        ({"run_s": "soon"}, "time_limits.run_s"),
        ({"timeout_s": 5}, "time_limits.timeout_s"),
    ],
)
def test_a_time_limit_out_of_bounds_is_refused(api: httpx.Client, time_limits: Any, words: str) -> None:
    body = {"model": CAMERA_EDIT, "input": edit_input(upload(api)["id"]), "time_limits": time_limits}
    assert_error(api.post("/v1/jobs", json=body), 422, "invalid_input", words)
