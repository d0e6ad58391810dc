"""Restarts: a job caught mid-run by kill -9 runs again as attempt 2; jobs behind it keep their place; a job
interrupted max_attempts times fails; a graceful stop does not wait for a long job to finish."""

from __future__ import annotations

import signal
import time

import pytest

from tests.api.conftest import (
    ServerFactory,
    download,
    edit_input,
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
