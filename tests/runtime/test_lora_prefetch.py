"""The embedded server's LoRA prefetch: a queued job's request LoRA URLs are downloaded into the runner's
cache while the job waits, from a real HTTP server on 127.0.0.1, with the runner's own LoraSources; at most so
many at once, never for a job canceled before its turn, and a failure is left to the runner to report."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from reangle.compose import build_service, open_runtime
from reangle.core.edit import EditPlan
from reangle.core.jobs import Job, JobStatus
from reangle.core.models import CAMERA_EDIT
from reangle.engine.base import EditResult, StepCallback, StopCheck
from reangle.engine.fake import FakeEngine
from reangle.engine.lora_sources import LoraSources
from reangle.errors import Unavailable
from reangle.runtime.embedded import EmbeddedRuntime
from reangle.runtime.lora_prefetch import LoraPrefetch
from reangle.settings import Settings
from reangle.store.sqlite import SqliteStore
from tests.conftest import serving
from tests.engine.lora_support import lora_bytes
from tests.runtime.test_local_runner import (
    LORA_SHAPES,
    OWNER,
    WAIT_S,
    FakeRecordingEngine,
    Rig,
    ended,
    happens,
    lora_preparer,
    rig_on,
    run,
)


class _LoraHostHandler(BaseHTTPRequestHandler):
    server: LoraHost

    def log_message(self, *_args: Any) -> None:
        pass

    def do_GET(self) -> None:
        host = self.server
        with host.lock:
            host.seen.append(self.path)
            host.active += 1
            host.most_active = max(host.most_active, host.active)
        try:
            if self.path.startswith("/held/"):
                host.release.wait(WAIT_S)
            if self.path.startswith("/missing/"):
                self.send_error(404)
                return
            body = lora_bytes(LORA_SHAPES, seed=sum(self.path.encode()))  # one file per path
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except ConnectionError:  # the client left: a download that was stopped
            pass
        finally:
            with host.lock:
                host.active -= 1


class LoraHost(ThreadingHTTPServer):
    """Serves a small LoRA at any path; under /held/ only once `release` is set, under /missing/ a 404.
    Remembers every request and the most it served at once."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _LoraHostHandler)
        self.lock = threading.Lock()
        self.seen: list[str] = []
        self.active = 0
        self.most_active = 0
        self.release = threading.Event()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def requests_for(self, path: str) -> int:
        with self.lock:
            return self.seen.count(path)


@pytest.fixture
def host() -> Iterator[LoraHost]:
    server = LoraHost()
    with serving(server, server.release.set):
        yield server


class FakeHeldEngine(FakeRecordingEngine):
    """The recording fake engine; the render of seed 1 waits until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def edit(
        self,
        images: Sequence[Any],
        plan: EditPlan,
        *,
        on_step: StepCallback | None = None,
        should_stop: StopCheck | None = None,
    ) -> EditResult:
        if plan.seed == 1:
            self.render_started(1).set()
            assert self.release.wait(WAIT_S), "the first render was never let through"
        return super().edit(images, plan, on_step=on_step, should_stop=should_stop)


def prefetch_rig(tmp_path: Path, store: SqliteStore, engine: FakeRecordingEngine) -> tuple[Rig, LoraSources]:
    rig = rig_on(tmp_path, store, engine)
    rig.preparer = lora_preparer(rig, tmp_path)
    assert rig.preparer.loras is not None
    return rig, rig.preparer.loras


@asynccontextmanager
async def prefetching(prefetch: LoraPrefetch) -> AsyncIterator[None]:
    task = asyncio.create_task(prefetch.run())
    await asyncio.sleep(0)  # it hooks into the service as it starts
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.01)


#: A canceled job's prefetch has stopped well within this (far less than the download's own limit, WAIT_S).
STOPPED_S = 5.0


def camera_input(rig: Rig, seed: int, *urls: str) -> dict[str, Any]:
    return {
        "images": [rig.image_id],
        "width": 32,
        "height": 32,
        "seed": seed,
        "loras": [{"url": url} for url in urls],
    }


def test_a_queued_jobs_lora_is_fetched_while_the_job_before_it_runs_and_the_runner_fetches_nothing(
    tmp_path: Path, store: SqliteStore, host: LoraHost
) -> None:
    engine = FakeHeldEngine()
    rig, loras = prefetch_rig(tmp_path, store, engine)
    prefetch = LoraPrefetch(rig.service, loras)

    async def scenario() -> None:
        async with rig.runner(), prefetching(prefetch):
            first = await rig.submit(seed=1)
            assert await happens(engine.render_started(1))
            second = await rig.submit(seed=2, loras=[{"url": host.url("/style.safetensors")}])
            await until(lambda: len(loras.cached_files()) == 1, "the LoRA file is in the cache")
            assert host.seen == ["/style.safetensors"]
            assert rig.job(first.id).status == JobStatus.PROCESSING  # all while the first job rendered
            assert rig.job(second.id).status == JobStatus.QUEUED
            engine.release.set()
            done = await ended(rig, second)
        assert done.status == JobStatus.SUCCEEDED, done.error
        assert host.seen == ["/style.safetensors"]  # the runner found the file cached: no second request

    run(scenario())


def test_a_job_canceled_before_its_turn_has_nothing_fetched(
    tmp_path: Path, store: SqliteStore, host: LoraHost
) -> None:
    rig, loras = prefetch_rig(tmp_path, store, FakeRecordingEngine())
    prefetch = LoraPrefetch(rig.service, loras, concurrency=1)

    async def scenario() -> None:
        async with prefetching(prefetch):  # no runner: the jobs stay queued
            await rig.submit(seed=1, loras=[{"url": host.url("/held/a.safetensors")}])
            await until(lambda: host.requests_for("/held/a.safetensors") == 1, "the first download starts")
            canceled = await rig.submit(seed=2, loras=[{"url": host.url("/b.safetensors")}])
            await rig.submit(seed=3, loras=[{"url": host.url("/c.safetensors")}])
            rig.service.cancel(OWNER, canceled.id)
            host.release.set()
            # one slot, taken in order: once c is asked for, b's turn has passed
            await until(lambda: host.requests_for("/c.safetensors") == 1, "the third job's download")
        assert host.requests_for("/b.safetensors") == 0

    run(scenario())


def test_a_download_only_canceled_jobs_wanted_is_stopped(
    tmp_path: Path, store: SqliteStore, host: LoraHost
) -> None:
    rig, loras = prefetch_rig(tmp_path, store, FakeRecordingEngine())
    prefetch = LoraPrefetch(rig.service, loras, concurrency=1)
    url = host.url("/held/a.safetensors")

    async def scenario() -> None:
        async with prefetching(prefetch):
            first = await rig.submit(seed=1, loras=[{"url": url}])
            await until(lambda: host.requests_for("/held/a.safetensors") == 1, "the first download starts")
            canceled_at = time.monotonic()
            rig.service.cancel(OWNER, first.id)
            # had the first download gone on, this job's prefetch would wait for it (one slot), then find the
            # file cached and send no request: a second request comes at once only if the first stopped
            await rig.submit(seed=2, loras=[{"url": url}])
            await until(lambda: host.requests_for("/held/a.safetensors") == 2, "a new download starts")
            assert time.monotonic() - canceled_at < STOPPED_S

    run(scenario())


def test_the_operators_registered_loras_are_not_prefetched(
    tmp_path: Path, store: SqliteStore, host: LoraHost
) -> None:
    rig = rig_on(tmp_path, store, FakeRecordingEngine())
    rig.preparer = lora_preparer(rig, tmp_path, registered={"house": host.url("/house.safetensors")})
    assert rig.preparer.loras is not None
    prefetch = LoraPrefetch(rig.service, rig.preparer.loras, concurrency=1)

    async def scenario() -> None:
        async with prefetching(prefetch):
            await rig.submit(seed=1, loras=[{"id": "house"}, {"url": host.url("/own.safetensors")}])
            # one slot, in the request's order: the id, were it prefetched, would have been asked for first
            await until(lambda: host.requests_for("/own.safetensors") == 1, "the request's own URL")
        assert host.seen == ["/own.safetensors"]

    run(scenario())


def test_a_failed_prefetch_is_only_logged_and_the_job_fails_as_usual_when_it_runs(
    tmp_path: Path, store: SqliteStore, host: LoraHost, caplog: pytest.LogCaptureFixture
) -> None:
    rig, loras = prefetch_rig(tmp_path, store, FakeRecordingEngine())
    prefetch = LoraPrefetch(rig.service, loras)
    caplog.set_level(logging.WARNING, logger="reangle.loras")

    def logged() -> list[str]:
        return [r.getMessage() for r in caplog.records if "could not be fetched ahead" in r.getMessage()]

    async def scenario() -> None:
        async with prefetching(prefetch):
            job = await rig.submit(seed=1, loras=[{"url": host.url("/missing/x.safetensors?sig=secret")}])
            await until(lambda: logged(), "the prefetch failure is logged")
            assert rig.job(job.id).status == JobStatus.QUEUED
            async with rig.runner():
                done = await ended(rig, job)
        assert done.status == JobStatus.FAILED
        assert done.error is not None
        assert done.error.message.startswith("input.loras.0.url: ")
        assert "404" in done.error.message
        assert host.requests_for("/missing/x.safetensors?sig=secret") == 2  # the runner fetched again
        assert job.id in logged()[0]
        assert "sig=secret" not in logged()[0]

    run(scenario())


def test_at_most_so_many_downloads_run_at_once_and_urls_past_the_queue_are_left_to_the_runner(
    tmp_path: Path, store: SqliteStore, host: LoraHost
) -> None:
    rig, loras = prefetch_rig(tmp_path, store, FakeRecordingEngine())
    prefetch = LoraPrefetch(rig.service, loras, concurrency=2, max_pending=3)
    paths = [f"/held/{index}.safetensors" for index in range(6)]

    async def scenario() -> None:
        async with prefetching(prefetch):
            inputs = [camera_input(rig, index, host.url(path)) for index, path in enumerate(paths)]
            await rig.service.submit_batch(OWNER, CAMERA_EDIT, inputs)
            await until(lambda: len(host.seen) == 2, "two downloads start")
            await asyncio.sleep(0.3)  # a third, were it let through, would have started by now
            assert host.most_active == 2
            host.release.set()
            await until(lambda: len(loras.cached_files()) == 3, "the queued URLs are fetched")
        assert host.most_active == 2
        assert sorted(host.seen) == paths[:3]  # three waited their turn; the other three were dropped

    run(scenario())


def test_a_store_error_while_prefetching_leaves_that_url_to_the_runner_and_prefetching_goes_on(
    tmp_path: Path, store: SqliteStore, host: LoraHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig, loras = prefetch_rig(tmp_path, store, FakeRecordingEngine())
    prefetch = LoraPrefetch(rig.service, loras, concurrency=1)
    read_job = store.get_job
    failures = [Unavailable("the fake store is unavailable")]

    def get_job_failing_once(job_id: str) -> Job | None:
        if failures:
            raise failures.pop()
        return read_job(job_id)

    monkeypatch.setattr(store, "get_job", get_job_failing_once)

    async def scenario() -> None:
        async with prefetching(prefetch):
            await rig.submit(seed=1, loras=[{"url": host.url("/a.safetensors")}])
            await rig.submit(seed=2, loras=[{"url": host.url("/b.safetensors")}])
            await until(lambda: host.requests_for("/b.safetensors") == 1, "the second job's download")
        assert not failures  # the store did fail once, for the first job's URL
        assert host.seen == ["/b.safetensors"]

    run(scenario())


def test_jobs_queued_before_the_prefetch_starts_are_prefetched_when_it_starts(
    tmp_path: Path, store: SqliteStore, host: LoraHost
) -> None:
    rig, loras = prefetch_rig(tmp_path, store, FakeRecordingEngine())

    async def scenario() -> None:
        # queued by the server's last run: no prefetch heard of them
        await rig.submit(seed=1, loras=[{"url": host.url("/a.safetensors")}])
        canceled = await rig.submit(seed=2, loras=[{"url": host.url("/b.safetensors")}])
        await rig.submit(seed=3, loras=[{"url": host.url("/c.safetensors")}])
        rig.service.cancel(OWNER, canceled.id)
        async with prefetching(LoraPrefetch(rig.service, loras, concurrency=1)):
            await until(lambda: len(loras.cached_files()) == 2, "the queued jobs' LoRAs are fetched")
        assert host.seen == ["/a.safetensors", "/c.safetensors"]  # in queue order, none for the canceled job

    run(scenario())


def test_at_start_jobs_without_loras_do_not_take_the_places_of_those_with(
    tmp_path: Path, store: SqliteStore, host: LoraHost
) -> None:
    rig, loras = prefetch_rig(tmp_path, store, FakeRecordingEngine())

    async def scenario() -> None:
        for seed in range(3):
            await rig.submit(seed=seed)
        await rig.submit(seed=3, loras=[{"url": host.url("/late.safetensors")}])
        async with prefetching(LoraPrefetch(rig.service, loras, max_pending=2)):
            await until(lambda: len(loras.cached_files()) == 1, "the fourth job's LoRA is fetched")
        assert host.seen == ["/late.safetensors"]

    run(scenario())


def test_the_embedded_server_prefetches_with_its_runners_lora_sources(tmp_path: Path) -> None:
    settings = Settings(engine="fake", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    engine = FakeEngine(settings)
    service = build_service(settings, engine)
    try:
        runtime = open_runtime(settings, service, engine)
        assert isinstance(runtime, EmbeddedRuntime)
        assert runtime.prefetch is not None
        assert runtime.prefetch.loras is runtime.runner.preparer.loras
    finally:
        service.store.close()
