"""A worker's own metrics: the jobs it ends, counted and timed, served over HTTP at /metrics (any other path
is 404) on a socket bound before the engine loads (a port in use stops the start in one line); the store's
gauges stay with the API replicas."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from reangle.api.metrics import Metrics
from reangle.cli.main import main
from reangle.core.jobs import Job, JobKind, JobStatus
from reangle.core.service import JobService
from tests.conftest import error_lines


def ended_job() -> Job:
    """A camera edit that waited 2 s and ran 3 s, then succeeded (as a store would read it back)."""
    return Job(
        id="job_1",
        owner="owner",
        model="qwen-edit-multiangle-2511",
        kind=JobKind.EDIT,
        input={},
        status=JobStatus.SUCCEEDED,
        created_at=100.0,
        started_at=102.0,
        finished_at=105.0,
    )


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_workers_metrics_count_and_time_the_jobs_it_ends(tmp_path: Path) -> None:
    service: Any = SimpleNamespace(finished_hooks=[])
    metrics = Metrics(cast(JobService, service), store_gauges=False)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = metrics.serve(listener)
    try:
        for hook in service.finished_hooks:  # as the worker's service calls them when a job ends
            hook(ended_job())
        scraped = httpx.get(f"http://127.0.0.1:{listener.getsockname()[1]}/metrics", timeout=10)
    finally:
        server.shutdown()
        server.server_close()
    assert scraped.status_code == 200
    found = samples(scraped.text)
    model = (("model", "qwen-edit-multiangle-2511"),)
    assert found[("reangle_jobs_finished_total", (("status", "succeeded"),))] == 1
    assert found[("reangle_job_queue_seconds_sum", model)] == 2
    assert found[("reangle_job_run_seconds_sum", model)] == 3
    assert not any(name.startswith("reangle_queue_depth") or name == "reangle_jobs" for name, _ in found)


def test_a_metrics_port_in_use_stops_the_worker_before_its_engine_loads(
    tmp_path: Path, no_engine: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REANGLE_DATABASE_URL", "postgresql://db.invalid/reangle")  # never reached
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["worker", "--engine", "fake", "--metrics-port", str(port), "--data-dir", str(tmp_path)]
        assert main(argv) == 2
    assert error_lines(capsys.readouterr().err)[-1] == (
        f"reangle: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert no_engine == []


@contextmanager
def metrics_port(metrics: Metrics) -> Iterator[httpx.Client]:
    """`metrics` served on a free port, and a client of it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = metrics.serve(listener)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=10) as client:
            yield client
    finally:
        server.shutdown()
        server.server_close()


def test_a_workers_metrics_port_serves_the_metrics_at_metrics_and_nothing_elsewhere() -> None:
    service: Any = SimpleNamespace(finished_hooks=[])
    with metrics_port(Metrics(cast(JobService, service), store_gauges=False)) as client:
        scraped = client.get("/metrics")
        head = client.head("/metrics")
        # a health check pointed at the worker's port must not find it healthy there
        elsewhere = {path: client.get(path) for path in ("/healthz", "/", "/metrics/", "/favicon.ico")}
        head_elsewhere = client.head("/healthz")
        posted = client.post("/metrics")
    for path, answer in elsewhere.items():
        assert answer.status_code == 404, path
        assert answer.headers["content-type"] == "text/plain; charset=utf-8"
        assert answer.text == "not found: this port serves /metrics only\n"
    assert head_elsewhere.status_code == 404
    assert scraped.status_code == 200
    assert "reangle_jobs_finished_total" in scraped.text
    assert head.status_code == 200
    assert head.content == b""
    for header in ("content-type", "content-encoding", "content-length"):  # as GET's (gzipped, for httpx)
        assert head.headers.get(header) == scraped.headers.get(header), header
    assert int(head.headers["content-length"]) > 0
    assert posted.status_code == 405
    assert posted.headers["allow"] == "GET, HEAD"
