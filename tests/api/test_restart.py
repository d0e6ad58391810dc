"""Restarts: a job caught mid-run by kill -9 runs again as attempt 2; jobs behind it keep their place; a job
interrupted max_attempts times fails; a graceful stop does not wait for a long job to finish; a second server
on the same data folder refuses to start instead of re-queuing the first one's running job."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from reangle.core.models import CAMERA_EDIT
from tests.api.conftest import (
    REPO,
    ServerFactory,
    cancel,
    download,
    edit_input,
    free_port,
    get_job,
    running,
    slow_input,
    submit,
    succeeded,
    upload,
    wait_job,
)


def test_a_killed_job_runs_again_as_attempt_2_and_the_queue_keeps_its_order(serve: ServerFactory) -> None:
    server = serve()
    with server.client() as api:
        asset = upload(api)
        first = submit(api, slow_input(asset["id"]))
        wait_job(api, first["id"], running)
        second = submit(api, edit_input(asset["id"]))
        assert get_job(api, second["id"])["status"] == "queued"
        server.kill()

    server.start()
    with server.client() as api:
        redone = succeeded(api, first["id"])
        behind = succeeded(api, second["id"])
        assert redone["attempt"] == 2
        assert [change["status"] for change in redone["history"]] == [
            "queued",
            "processing",
            "queued",
            "processing",
            "succeeded",
        ]
        assert behind["attempt"] == 1
        assert behind["started_at"] > redone["started_at"]
        # the server's log says which job ran when, and how it ended
        log = server.full_log()
        assert f"INFO reangle.jobs: job {first['id']} started: {CAMERA_EDIT}, attempt 2" in log
        assert f"INFO reangle.jobs: job {first['id']} succeeded after " in log
        for job in (redone, behind):
            [output] = job["output"]["assets"]
            assert download(output["url"]).status_code == 200


def test_a_job_interrupted_max_attempts_times_fails_with_a_clear_error(serve: ServerFactory) -> None:
    server = serve(max_attempts=1)
    with server.client() as api:
        job = submit(api, slow_input(upload(api)["id"]))
        wait_job(api, job["id"], running)
    server.kill()

    server.start()
    with server.client() as api:
        failed = get_job(api, job["id"])
        assert failed["status"] == "failed"
        assert failed["attempt"] == 1
        assert failed["error"]["code"] == "interrupted"
        assert "server stopped" in failed["error"]["message"]
        assert failed["output"]["assets"] == []
        assert failed["finished_at"] is not None
        # the runner is not stuck on it: new work still runs
        succeeded(api, submit(api, edit_input(upload(api)["id"]))["id"])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_graceful_stop_does_not_wait_and_costs_no_attempt(
    serve: ServerFactory, sig: signal.Signals
) -> None:
    server = serve(fake_step_seconds=0.5)  # 100 steps: 50 s if the stop waited for the job
    with server.client() as api:
        job = submit(api, slow_input(upload(api)["id"]))
        wait_job(api, job["id"], running)
    started = time.monotonic()
    server.stop(timeout=10, sig=sig)
    assert time.monotonic() - started < 10

    server.start()
    with server.client() as api:
        resumed = get_job(api, job["id"])
        # a clean stop hands the job back to the queue: it costs none of the job's attempts
        assert resumed["attempt"] == 1
        assert resumed["status"] in ("queued", "processing")
        assert [change["status"] for change in resumed["history"]][:3] == ["queued", "processing", "queued"]


def test_a_second_server_on_the_same_data_folder_refuses_and_leaves_the_running_job_alone(
    serve: ServerFactory,
) -> None:
    server = serve(fake_step_seconds=0.3)  # 100 steps: 30 s, still running when the second one gives up
    assert server.process is not None
    with server.client() as api:
        job = submit(api, slow_input(upload(api)["id"]))
        wait_job(api, job["id"], running)
        second = subprocess.run(
            [
                *(sys.executable, "-m", "reangle", "serve", "--engine", "fake"),
                *("--port", str(free_port()), "--data-dir", str(server.data_dir)),
            ],
            cwd=REPO,
            env=server.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2, second.stderr
        assert second.stderr.splitlines()[-1] == (
            f"reangle: error: another reangle server (pid {server.process.pid}) is running on the data "
            f"folder {server.data_dir}: stop it, or give this one its own --data-dir"
        )
        untouched = get_job(api, job["id"])
        assert untouched["status"] == "processing"
        assert untouched["attempt"] == 1
        assert [change["status"] for change in untouched["history"]] == ["queued", "processing"]
        cancel(api, job["id"])


def test_a_stop_answers_waiting_requests_and_ends_event_streams_at_once(serve: ServerFactory) -> None:
    """`?wait=` and an event stream are held open on purpose: a stop answers the one with the job as it
    stands and ends the other cleanly, instead of leaving them to be cut when the graceful time runs out."""
    server = serve(fake_step_seconds=0.5)  # 100 steps: 50 s
    with server.client() as api, ThreadPoolExecutor(2) as pool:
        asset = upload(api)["id"]
        running_job = submit(api, slow_input(asset))
        wait_job(api, running_job["id"], running)

        def wait_for_a_job() -> httpx.Response:
            return api.post("/v1/jobs?wait=60", json={"model": CAMERA_EDIT, "input": slow_input(asset)})

        def stream_events() -> list[str]:
            with api.stream("GET", f"/v1/jobs/{running_job['id']}/events") as stream:
                return [line for line in stream.iter_lines() if line.startswith("event:")]

        waiting, streaming = pool.submit(wait_for_a_job), pool.submit(stream_events)
        time.sleep(1)  # both are held open by now
        started = time.monotonic()
        server.stop(timeout=10)
        stopped_after = time.monotonic() - started
        answer, events = waiting.result(timeout=5), streaming.result(timeout=5)
    assert stopped_after < 4  # not the 5 s graceful limit, and more
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] in ("queued", "processing")
    assert events[0] == "event: status"
    assert "Traceback" not in server.log()
