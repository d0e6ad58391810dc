"""Prometheus metrics: jobs by status and queue depth (read at scrape time), run and queue time histograms."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from reangle.core.jobs import Job, JobStatus
from reangle.core.models import MODELS
from reangle.runtime.heartbeat import LISTED_FOR_S

if TYPE_CHECKING:
    from reangle.core.service import JobService

_SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 600)
METRICS_PATH = "/metrics"


class _StoreCollector(Collector):
    def __init__(self, service: JobService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        counts = self.service.store.count_by_status()
        by_status = GaugeMetricFamily("reangle_jobs", "Jobs currently stored, by status", labels=["status"])
        for status in JobStatus:
            by_status.add_metric([status.value], counts.get(status.value, 0))
        yield by_status
        yield GaugeMetricFamily(
            "reangle_queue_depth", "Jobs waiting for a runner", value=counts.get(JobStatus.QUEUED.value, 0)
        )
        by_model = GaugeMetricFamily(
            "reangle_queue_depth_by_model", "Jobs waiting for a runner, by model", labels=["model"]
        )
        # every model this server lists, at 0 when none of its jobs waits: a dashboard gets 0, not no data
        depths = dict.fromkeys(MODELS, 0) | self.service.store.queued_by_model()
        for model, waiting in sorted(depths.items()):
            by_model.add_metric([model], waiting)
        yield by_model
        now = time.time()
        silent = GaugeMetricFamily(
            "reangle_worker_heartbeat_age_seconds",
            "Seconds since each worker last reported (those heard from in the last 30 s)",
            labels=["worker", "device", "engine"],
        )
        busy = GaugeMetricFamily(
            "reangle_worker_busy", "1 while the worker holds a job, else 0", labels=["worker"]
        )
        for worker in self.service.store.list_workers(seen_since=now - LISTED_FOR_S):
            silent.add_metric([worker.name, worker.device, worker.engine], now - worker.seen_at)
            busy.add_metric([worker.name], 1 if worker.job_id else 0)
        yield silent
        yield busy


class Metrics:
    """The jobs ended in this process (counted and timed as they end) and, with `store_gauges`, the store's
    gauges read at scrape time (an API replica's; a worker leaves them to the replicas)."""

    def __init__(self, service: JobService, *, store_gauges: bool = True) -> None:
        self.registry = CollectorRegistry()
        if store_gauges:
            self.registry.register(_StoreCollector(service))
        service.finished_hooks.append(self.observe_finished)
        self.finished = Counter(
            "reangle_jobs_finished", "Jobs that reached a terminal status", ["status"], registry=self.registry
        )
        self.run_seconds = Histogram(
            "reangle_job_run_seconds",
            "Time from start to end of a job",
            ["model"],
            buckets=_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.queue_seconds = Histogram(
            "reangle_job_queue_seconds",
            "Time a job waited in the queue",
            ["model"],
            buckets=_SECONDS_BUCKETS,
            registry=self.registry,
        )

    def observe_finished(self, job: Job) -> None:
        self.finished.labels(job.status.value).inc()
        if job.started_at is not None:
            self.queue_seconds.labels(job.model).observe(job.started_at - job.created_at)
            if job.finished_at is not None:
                self.run_seconds.labels(job.model).observe(job.finished_at - job.started_at)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def serve(self, listener: socket.socket) -> WSGIServer:
        """Serve these metrics at /metrics on `listener`, a bound socket, from a thread of its own until
        `shutdown()`. Any other path answers 404: prometheus_client's app alone answers every path with the
        metrics, and a health check sent to /healthz there would always find the worker healthy."""
        server = _ListenerServer(listener)
        server.set_app(_at_metrics_path(make_wsgi_app(self.registry)))
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
        return server


def _at_metrics_path(metrics_app: WSGIApplication) -> WSGIApplication:
    """`metrics_app` for GET and HEAD of METRICS_PATH alone."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != METRICS_PATH:
            return _plain(start_response, "404 Not Found", f"not found: this port serves {METRICS_PATH} only")
        method = environ["REQUEST_METHOD"]
        if method == "GET":
            return metrics_app(environ, start_response)
        if method != "HEAD":
            allow = ("Allow", "GET, HEAD")
            return _plain(start_response, "405 Method Not Allowed", "use GET or HEAD", allow)
        # prometheus_client refuses HEAD (405): it gets GET's status and headers, without the body
        answer: list[tuple[str, list[tuple[str, str]]]] = []

        def keep(
            status: str, headers: list[tuple[str, str]], exc_info: object = None
        ) -> Callable[[bytes], None]:
            answer.append((status, headers))
            return lambda data: None

        body = b"".join(metrics_app({**environ, "REQUEST_METHOD": "GET"}, keep))
        [(status, headers)] = answer
        start_response(status, [*headers, ("Content-Length", str(len(body)))])
        return []

    return app


def _plain(start_response: StartResponse, status: str, text: str, *headers: tuple[str, str]) -> list[bytes]:
    body = f"{text}\n".encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), *headers])
    return [body]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Scrapes are not logged: one every few seconds would drown the worker's own lines."""


class _ListenerServer(WSGIServer):
    """A WSGI server on a socket bound beforehand (so that a port in use stops the start at once)."""

    def __init__(self, listener: socket.socket) -> None:
        self.address_family = listener.family
        super().__init__(listener.getsockname()[:2], _QuietHandler, bind_and_activate=False)
        self.socket.close()
        self.socket = listener
        self.server_bind()
        self.server_activate()

    def server_bind(self) -> None:  # the listener is bound already
        self.server_address = self.socket.getsockname()
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])
        self.setup_environ()
