"""The embedded runner's pipelining: a job's outputs are encoded and stored in the background while the next
job renders, without losing, mixing up or half-finishing any job.

The runner runs against a real JobService on a temporary SQLite store. Its asset service is a fake that can
hold a job's output writes at a gate, so each test decides exactly when a store finishes."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from reangle.core.assets import AssetService
from reangle.core.edit import EditPlan, SizeLimits
from reangle.core.jobs import Job, JobKind, JobStatus
from reangle.core.models import CAMERA_EDIT
from reangle.core.ports import AssetRecord
from reangle.core.service import JobService, ServiceLimits, SubmitRequest
from reangle.engine.base import EditResult, StepCallback, StopCheck
from reangle.engine.fake import FakeEngine, qwen_image_layer_names
from reangle.engine.lora import load_lora, read_lora_file
from reangle.engine.lora_sources import LoraSources, LoraSourcesConfig
from reangle.engine.rewriter import Rewrite, RewriteTask, kept
from reangle.errors import Unavailable
from reangle.runtime import base as runtime_base
from reangle.runtime import local
from reangle.runtime.job_prep import JobPreparer
from reangle.runtime.local import LocalRunner
from reangle.runtime.local_bus import LocalEventBus
from reangle.settings import Settings
from reangle.store.files import FileBlobStore
from reangle.store.sqlite import SqliteStore
from reangle.store.url_fetch import FetchPolicy
from tests.conftest import image_bytes, make_image, serving
from tests.engine.lora_support import lora_bytes, write_lora

OWNER = "owner-1"
WAIT_S = 20.0  # only reached when a test is about to fail


class FakeGatedAssets(AssetService):
    """Output writes of the jobs in `gated` wait until `open_gate`; `fail_for` jobs' writes raise."""

    def __init__(self, store: SqliteStore, root: Path) -> None:
        super().__init__(
            store,
            FileBlobStore(root),
            max_bytes=1 << 20,
            max_pixels=1 << 20,
            upload_ttl_s=600,
            result_ttl_s=600,
        )
        self.gated: set[str] = set()
        self.fail_for: dict[str, Exception] = {}
        self.unavailable_writes = 0  # so many output writes, from now on, find the store unavailable
        self.unavailable_loads = 0  # so many input loads, from now on, find the store unavailable
        self.gate = threading.Event()
        self.storing = threading.Event()  # a gated write is waiting at the gate
        self.writes: list[tuple[str | None, str]] = []  # (job id, thread name) of every write started
        self.stored: list[str | None] = []  # job ids of the writes that completed

    def open_gate(self) -> None:
        self.gate.set()

    def load_image(self, record: AssetRecord) -> Image.Image:
        if self.unavailable_loads > 0:
            self.unavailable_loads -= 1
            raise Unavailable("the fake store is unavailable")
        return super().load_image(record)

    def put_output(
        self, owner: str, data: bytes, mime_type: str, width: int, height: int, *, job_id: str | None = None
    ) -> AssetRecord:
        self.writes.append((job_id, threading.current_thread().name))
        if job_id in self.fail_for:
            raise self.fail_for[job_id]
        if self.unavailable_writes > 0:
            self.unavailable_writes -= 1
            raise Unavailable("the fake store is unavailable")
        if job_id in self.gated:
            self.storing.set()
            assert self.gate.wait(WAIT_S), "the gate was never opened"
        record = super().put_output(owner, data, mime_type, width, height, job_id=job_id)
        self.stored.append(job_id)
        return record


class FakeRecordingEngine(FakeEngine):
    """The fake engine, remembering each render's images by seed and signalling when each render starts."""

    def __init__(self, step_seconds: float = 0.0) -> None:
        super().__init__(Settings(fake_step_seconds=step_seconds))
        self.started: dict[int, threading.Event] = {}  # seed -> its render has started
        self.images: dict[int, list[Image.Image]] = {}

    def render_started(self, seed: int) -> threading.Event:
        return self.started.setdefault(seed, threading.Event())

    def edit(
        self,
        images: Sequence[Image.Image],
        plan: EditPlan,
        *,
        on_step: StepCallback | None = None,
        should_stop: StopCheck | None = None,
    ) -> EditResult:
        assert plan.seed is not None
        self.render_started(plan.seed).set()
        result = super().edit(images, plan, on_step=on_step, should_stop=should_stop)
        self.images[plan.seed] = result.images
        return result


@dataclass
class Rig:
    store: SqliteStore
    assets: FakeGatedAssets
    service: JobService
    engine: FakeRecordingEngine
    image_id: str
    preparer: JobPreparer | None = None

    async def submit(self, seed: int, **fields: Any) -> Job:
        data = {"images": [self.image_id], "width": 32, "height": 32, "seed": seed} | fields
        return await self.service.submit(OWNER, SubmitRequest(model=CAMERA_EDIT, input=data))

    def job(self, job_id: str) -> Job:
        return self.service.get(OWNER, job_id)

    def output_pixels(self, job: Job) -> list[bytes]:
        pictures = []
        for output in job.outputs:
            found = self.assets.read_bytes(output.asset_id)
            assert found is not None, f"output {output.asset_id} of {job.id} is not stored"
            pictures.append(Image.open(io.BytesIO(found[0])).tobytes())
        return pictures

    @asynccontextmanager
    async def runner(self) -> AsyncIterator[None]:
        runner = LocalRunner(self.service, self.engine, preparer=self.preparer)
        task = asyncio.create_task(runner.run_forever(retry_s=0.01))
        try:
            yield
        finally:
            task.cancel()
            self.assets.open_gate()
            await asyncio.gather(task, return_exceptions=True)


def rig_on(tmp_path: Path, store: SqliteStore, engine: FakeRecordingEngine) -> Rig:
    assets = FakeGatedAssets(store, tmp_path / "assets")

    async def fake_fetch_refused(url: str, field: str) -> bytes:
        raise AssertionError("no URL is fetched here")

    limits = ServiceLimits(sizes=SizeLimits(min_side=16))
    service = JobService(store, assets, fake_fetch_refused, limits, events=LocalEventBus())
    image = assets.ingest(OWNER, image_bytes(make_image(48, 48), "PNG"))
    return Rig(store=store, assets=assets, service=service, engine=engine, image_id=image.id)


@pytest.fixture
def rig(tmp_path: Path, store: SqliteStore) -> Rig:
    return rig_on(tmp_path, store, FakeRecordingEngine())


async def happens(event: threading.Event) -> bool:
    return await asyncio.to_thread(event.wait, WAIT_S)


async def ended(rig: Rig, job: Job) -> Job:
    return await rig.service.wait(OWNER, job.id, timeout=WAIT_S)


def run(scenario: Coroutine[Any, Any, None]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(4 * WAIT_S):
            await scenario

    asyncio.run(bounded())


def test_the_next_job_renders_while_the_previous_one_is_stored(rig: Rig) -> None:
    async def scenario() -> None:
        first, second = await rig.submit(seed=1), await rig.submit(seed=2)
        rig.assets.gated.add(first.id)
        async with rig.runner():
            assert await happens(rig.assets.storing)
            assert await happens(rig.engine.render_started(2))
            # the second render has started while the first job's output is still being written, and the
            # first job is not succeeded before that write is done
            assert rig.job(first.id).status == JobStatus.PROCESSING
            assert rig.assets.stored == []
            rig.assets.open_gate()
            done = [await ended(rig, first), await ended(rig, second)]

        assert [job.status for job in done] == [JobStatus.SUCCEEDED, JobStatus.SUCCEEDED]
        for job, seed in zip(done, (1, 2), strict=True):
            [output] = job.outputs
            assert output.seed == seed
            record = rig.store.get_asset(output.asset_id)
            assert record is not None
            assert record.job_id == job.id
            assert rig.output_pixels(job) == [image.tobytes() for image in rig.engine.images[seed]]
        assert rig.engine.images[1][0].tobytes() != rig.engine.images[2][0].tobytes()
        assert set(done[0].timings) >= {"queue_s", "inference_s", "encode_s", "run_s"}
        # encoding and writes never ran on the event loop's thread
        assert threading.current_thread().name not in {thread for _, thread in rig.assets.writes}

    run(scenario())


def test_every_output_lands_in_its_own_job_and_jobs_complete_in_render_order(rig: Rig) -> None:
    async def scenario() -> None:
        jobs = [await rig.submit(seed=seed, num_outputs=2) for seed in (1, 2, 3)]
        finished: list[str] = []
        rig.service.finished_hooks.append(lambda job: finished.append(job.id))
        async with rig.runner():
            done = [await ended(rig, job) for job in jobs]

        assert finished == [job.id for job in jobs]
        for job, seed in zip(done, (1, 2, 3), strict=True):
            assert job.status == JobStatus.SUCCEEDED
            assert [output.seed for output in job.outputs] == [seed, seed + 1]
            assert rig.output_pixels(job) == [image.tobytes() for image in rig.engine.images[seed]]
        assert rig.assets.stored == [jobs[0].id] * 2 + [jobs[1].id] * 2 + [jobs[2].id] * 2

    run(scenario())


def test_a_store_unavailable_for_a_while_delays_the_end_but_fails_nothing(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(runtime_base, "COMPLETE_RETRY_S", (0.01, 0.01, 0.01))

    async def scenario() -> None:
        job = await rig.submit(seed=1)
        rig.assets.unavailable_writes = 2
        async with rig.runner():
            done = await ended(rig, job)

        assert (done.status, done.attempt, len(done.outputs)) == (JobStatus.SUCCEEDED, 1, 1)
        assert rig.output_pixels(done) == [image.tobytes() for image in rig.engine.images[1]]
        assert len(rig.assets.writes) == 3
        assert caplog.text.count(f"could not store the outputs of job {job.id}") == 2

    run(scenario())


def test_a_store_away_past_the_first_retries_is_tried_until_it_takes_the_end(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime_base, "COMPLETE_RETRY_S", (0.01, 0.01))
    monkeypatch.setattr(runtime_base, "UNRECORDED_RETRY_S", 0.02)

    async def scenario() -> None:
        job = await rig.submit(seed=1)
        rig.assets.unavailable_writes = 6  # past the first retries: it had stayed processing until a restart
        async with rig.runner():
            async with asyncio.timeout(WAIT_S):
                while len(rig.assets.writes) < 4:
                    await asyncio.sleep(0.01)
            assert rig.job(job.id).status == JobStatus.PROCESSING  # not failed: it is not the job's fault
            done = await ended(rig, job)

        assert (done.status, done.attempt, len(done.outputs)) == (JobStatus.SUCCEEDED, 1, 1)
        assert len(rig.assets.writes) == 7  # the first write, and one per retry until the store took it

    run(scenario())


def test_a_stop_while_the_store_stays_away_gives_up_after_the_first_retries_and_the_job_stays_processing(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime_base, "COMPLETE_RETRY_S", (0.01, 0.01))
    monkeypatch.setattr(runtime_base, "UNRECORDED_RETRY_S", 60.0)  # a stop must not wait this out

    async def scenario() -> None:
        job = await rig.submit(seed=1)
        rig.assets.unavailable_writes = 1000
        started = time.monotonic()
        async with rig.runner():
            async with asyncio.timeout(WAIT_S):
                while len(rig.assets.writes) < 3:  # the first write and the first retries
                    await asyncio.sleep(0.01)
        assert time.monotonic() - started < 30  # the stop did not wait for the store to come back
        assert rig.job(job.id).status == JobStatus.PROCESSING  # left to run again at the next start
        assert len(rig.assets.writes) == 3

    run(scenario())


def test_outputs_stored_once_are_not_stored_again_while_the_end_is_retried(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(runtime_base, "COMPLETE_RETRY_S", (0.01, 0.01, 0.01))
    complete, refusals = rig.service.complete, [Unavailable("database is locked")] * 2

    def flaky_complete(job: Job, *args: Any, **kwargs: Any) -> Any:
        if refusals:
            raise refusals.pop()
        return complete(job, *args, **kwargs)

    monkeypatch.setattr(rig.service, "complete", flaky_complete)

    async def scenario() -> None:
        job = await rig.submit(seed=1)
        async with rig.runner():
            done = await ended(rig, job)

        assert (done.status, len(done.outputs)) == (JobStatus.SUCCEEDED, 1)
        assert len(rig.assets.writes) == 1  # stored once, though its end was recorded at the third try
        assert caplog.text.count(f"could not record the end of job {job.id}") == 2

    run(scenario())


def test_inputs_unavailable_keep_the_job_in_hand_and_it_runs_once_they_are_back(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local, "UNAVAILABLE_RETRY_S", 0.01)

    async def scenario() -> None:
        job = await rig.submit(seed=1)
        rig.assets.unavailable_loads = 2
        async with rig.runner():
            done = await ended(rig, job)

        assert (done.status, done.attempt) == (JobStatus.SUCCEEDED, 1)  # neither failed nor retried
        statuses = [change.status for change in done.history]
        assert statuses == [JobStatus.QUEUED, JobStatus.PROCESSING, JobStatus.SUCCEEDED]  # not handed back
        assert rig.assets.unavailable_loads == 0

    run(scenario())


def test_inputs_unavailable_past_the_hold_hand_the_job_back_and_it_runs_once_they_are_back(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local, "RETRY_S", 0.01)
    monkeypatch.setattr(local, "UNAVAILABLE_RETRY_S", 0.01)
    monkeypatch.setattr(local, "HOLD_UNAVAILABLE_S", 0.0)

    async def scenario() -> None:
        job = await rig.submit(seed=1)
        rig.assets.unavailable_loads = 2
        async with rig.runner():
            done = await ended(rig, job)

        assert (done.status, done.attempt) == (JobStatus.SUCCEEDED, 1)  # handed back, not failed or retried
        assert [change.status for change in done.history].count(JobStatus.QUEUED) == 3
        assert rig.assets.unavailable_loads == 0

    run(scenario())


def test_an_error_while_storing_fails_that_job_alone(rig: Rig) -> None:
    async def scenario() -> None:
        broken, after = await rig.submit(seed=1), await rig.submit(seed=2)
        rig.assets.fail_for[broken.id] = OSError(28, "No space left on device")
        async with rig.runner():
            failed, succeeded = await ended(rig, broken), await ended(rig, after)

        assert failed.status == JobStatus.FAILED
        assert failed.outputs == ()
        assert failed.error is not None
        assert failed.error.code == "internal_error"
        assert "storing its outputs" in failed.error.message
        assert "No space left on device" in failed.error.message
        assert succeeded.status == JobStatus.SUCCEEDED
        assert len(rig.output_pixels(succeeded)) == 1

    run(scenario())


def test_a_cancel_during_the_store_wins_and_skips_the_outputs_not_yet_encoded(rig: Rig) -> None:
    async def scenario() -> None:
        job, after = await rig.submit(seed=1, num_outputs=3), await rig.submit(seed=5)
        rig.assets.gated.add(job.id)
        async with rig.runner():
            assert await happens(rig.assets.storing)
            accepted = rig.service.cancel(OWNER, job.id)
            assert (accepted.status, accepted.cancel_requested) == (JobStatus.PROCESSING, True)
            rig.assets.open_gate()
            canceled, succeeded = await ended(rig, job), await ended(rig, after)

        assert (canceled.status, canceled.outputs) == (JobStatus.CANCELED, ())
        assert [job_id for job_id, _ in rig.assets.writes].count(job.id) == 1  # outputs 2 and 3 never written
        assert succeeded.status == JobStatus.SUCCEEDED

    run(scenario())


def test_a_graceful_stop_waits_for_the_store_in_flight_and_requeues_the_render(
    tmp_path: Path, store: SqliteStore
) -> None:
    rig = rig_on(tmp_path, store, FakeRecordingEngine(step_seconds=0.05))

    async def scenario() -> None:
        stored = await rig.submit(seed=1, num_inference_steps=1)
        rendering = await rig.submit(seed=2, num_inference_steps=100)  # 5 s: still rendering at the stop
        rig.assets.gated.add(stored.id)
        runner = asyncio.create_task(LocalRunner(rig.service, rig.engine).run_forever())
        assert await happens(rig.assets.storing)
        assert await happens(rig.engine.render_started(2))
        runner.cancel()
        # the runner does not end while the first job's store is still under way
        finished, _ = await asyncio.wait({runner}, timeout=0.3)
        assert not finished
        rig.assets.open_gate()
        await asyncio.gather(runner, return_exceptions=True)
        assert runner.cancelled()

        first, second = rig.job(stored.id), rig.job(rendering.id)
        assert first.status == JobStatus.SUCCEEDED
        assert rig.output_pixels(first) == [image.tobytes() for image in rig.engine.images[1]]
        assert (second.status, second.attempt, second.outputs) == (JobStatus.QUEUED, 1, ())
        assert [change.status for change in second.history] == [
            JobStatus.QUEUED,
            JobStatus.PROCESSING,
            JobStatus.QUEUED,
        ]

    run(scenario())


def test_a_stop_that_cancels_every_task_still_completes_the_job_being_stored(rig: Rig) -> None:
    """As asyncio.run does on exit: the runner and the finish it started are canceled together."""

    async def scenario() -> None:
        job = await rig.submit(seed=1)
        rig.assets.gated.add(job.id)
        runner = asyncio.create_task(LocalRunner(rig.service, rig.engine).run_forever())
        assert await happens(rig.assets.storing)
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        assert len(tasks) == 2  # the runner and its finish
        for task in tasks:
            task.cancel()
        rig.assets.open_gate()
        await asyncio.gather(*tasks, return_exceptions=True)

        assert runner.cancelled()
        done = rig.job(job.id)
        assert done.status == JobStatus.SUCCEEDED
        assert rig.output_pixels(done) == [image.tobytes() for image in rig.engine.images[1]]

    run(scenario())


def test_a_store_that_outlives_its_attempt_changes_nothing(tmp_path: Path, store: SqliteStore) -> None:
    """As after kill -9: the job is re-queued as attempt 2 while attempt 1's store is still under way."""
    rig = rig_on(tmp_path, store, FakeRecordingEngine())

    async def scenario() -> None:
        job = await rig.submit(seed=1)
        rig.assets.gated.add(job.id)
        runner = asyncio.create_task(LocalRunner(rig.service, rig.engine).run_forever())
        assert await happens(rig.assets.storing)
        runner.cancel()  # no runner claims the job again in this test
        requeued, failed = rig.service.recover()
        assert ([again.id for again in requeued], failed) == ([job.id], [])
        rig.assets.open_gate()
        await asyncio.gather(runner, return_exceptions=True)

        late = rig.job(job.id)
        assert (late.status, late.attempt, late.outputs) == (JobStatus.QUEUED, 2, ())
        assert rig.assets.stored == [job.id]  # the late write landed, but no job refers to it

    run(scenario())


class FakeViewsCountingEngine(FakeRecordingEngine):
    """Counts `edit_views` calls and the plans of each, so a test sees how the runner hands work over."""

    def __init__(self) -> None:
        super().__init__()
        self.views_calls: list[list[str]] = []

    def edit_views(
        self,
        images: Sequence[Image.Image],
        plans: Sequence[EditPlan],
        *,
        on_step: StepCallback | None = None,
        should_stop: StopCheck | None = None,
    ) -> list[EditResult]:
        self.views_calls.append([plan.prompt for plan in plans])
        return super().edit_views(images, plans, on_step=on_step, should_stop=should_stop)


def test_an_orbit_is_one_engine_call_with_every_pose(tmp_path: Path, store: SqliteStore) -> None:
    engine = FakeViewsCountingEngine()
    rig = rig_on(tmp_path, store, engine)

    async def scenario() -> None:
        data = {"image": rig.image_id, "azimuths": [0, 90, 180, 270], "width": 32, "height": 32, "seed": 3}
        job = await rig.service.submit(
            OWNER, SubmitRequest(model=CAMERA_EDIT, input=data, kind=JobKind.ORBIT)
        )
        async with rig.runner():
            done = await ended(rig, job)

        assert done.status == JobStatus.SUCCEEDED
        [prompts] = engine.views_calls  # the engine got all four poses at once (it shares their encodings)
        assert len(set(prompts)) == 4
        views = [output for output in done.outputs if output.role == "view"]
        assert [output.pose["azimuth_deg"] for output in views if output.pose] == [0, 90, 180, 270]

    run(scenario())


# Preparation: LoRA downloads and prompt rewrites ----------------------------------------------------------

LORA_SHAPES = {"transformer_blocks.0.attn.to_q": (16, 16)}
#: A cancel must end a job being prepared within this (the runner looks every STOP_CHECK_S).
CANCEL_S = 5.0


class _SlowLoraHandler(BaseHTTPRequestHandler):
    """Answers a LoRA only once the test opens its gate: a download that takes as long as the test wants."""

    server: SlowLoraServer

    def log_message(self, *_args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.asked.set()
        self.server.gate.wait(WAIT_S)
        body = lora_bytes(LORA_SHAPES, seed=1)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class SlowLoraServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SlowLoraHandler)
        self.asked = threading.Event()
        self.gate = threading.Event()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/style.safetensors"


@pytest.fixture
def slow_lora_server() -> Iterator[SlowLoraServer]:
    server = SlowLoraServer()
    with serving(server, server.gate.set):
        yield server


def lora_preparer(rig: Rig, tmp_path: Path, **config: Any) -> JobPreparer:
    policy = FetchPolicy(allow_private=True, timeout_s=WAIT_S, max_bytes=1 << 20)
    sources = LoraSources(LoraSourcesConfig(cache_dir=tmp_path / "lora-cache", fetch=policy, **config))
    return JobPreparer(rig.service, loras=sources, layers=lambda _t2i: qwen_image_layer_names())


async def canceled_quickly(rig: Rig, job: Job) -> float:
    """Cancel `job` and return how long it took to end canceled."""
    started = time.monotonic()
    rig.service.cancel(OWNER, job.id)
    done = await ended(rig, job)
    assert done.status == JobStatus.CANCELED, done.error
    return time.monotonic() - started


def test_a_cancel_while_the_lora_downloads_ends_the_job_at_once_and_the_next_runs(
    tmp_path: Path, store: SqliteStore, slow_lora_server: SlowLoraServer
) -> None:
    rig = rig_on(tmp_path, store, FakeRecordingEngine())
    rig.preparer = lora_preparer(rig, tmp_path)

    async def scenario() -> None:
        downloading = await rig.submit(seed=1, loras=[{"url": slow_lora_server.url()}])
        following = await rig.submit(seed=2)
        async with rig.runner():
            assert await happens(slow_lora_server.asked)
            assert await canceled_quickly(rig, downloading) < CANCEL_S  # the download would take WAIT_S
            assert (await ended(rig, following)).status == JobStatus.SUCCEEDED
            assert not slow_lora_server.gate.is_set()  # all while the download was still held up
        assert 1 not in rig.engine.started  # the canceled job never reached the engine

    run(scenario())


class FakeBlockedRewriter:
    """A rewriter that holds every rewrite until its gate opens or its `should_stop()` is true."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.gate = threading.Event()
        self.stopped = threading.Event()

    def rewrite(
        self,
        instruction: str,
        images: Sequence[Image.Image],
        *,
        task: RewriteTask = "edit",
        should_stop: StopCheck | None = None,
    ) -> Rewrite:
        self.started.set()
        deadline = time.monotonic() + WAIT_S
        while not self.gate.wait(0.01):
            if should_stop is not None and should_stop():
                self.stopped.set()
                return kept(instruction, "canceled", "stopped")
            assert time.monotonic() < deadline, "the rewrite was never let through"
        return Rewrite(original=instruction, prompt=instruction, rewritten=True)


def test_a_cancel_while_the_prompt_is_rewritten_ends_the_job_at_once(rig: Rig) -> None:
    rewriter = FakeBlockedRewriter()
    rig.preparer = JobPreparer(rig.service, rewriter=rewriter)

    async def scenario() -> None:
        rewriting = await rig.submit(seed=1, prompt="add snow", rewrite_prompt=True)
        following = await rig.submit(seed=2)
        try:
            async with rig.runner():
                assert await happens(rewriter.started)
                assert await canceled_quickly(rig, rewriting) < CANCEL_S
                assert await happens(rewriter.stopped)  # the rewrite's thread was told to stop, too
                assert (await ended(rig, following)).status == JobStatus.SUCCEEDED
        finally:
            rewriter.gate.set()

    run(scenario())


class FakeLoraLoadingEngine(FakeRecordingEngine):
    """Loads each request LoRA with reangle's real loader into a transformer that has no layers at all."""

    def edit(
        self,
        images: Sequence[Image.Image],
        plan: EditPlan,
        *,
        on_step: StepCallback | None = None,
        should_stop: StopCheck | None = None,
    ) -> EditResult:
        import torch

        class EmptyPipe:
            transformer = torch.nn.Module()

        for lora in plan.loras:
            if lora.path is not None:
                load_lora(EmptyPipe(), lora.adapter, read_lora_file(lora.path))
        return super().edit(images, plan, on_step=on_step, should_stop=should_stop)


def test_an_engine_lora_error_names_a_registered_lora_by_its_id_not_its_file(
    tmp_path: Path, store: SqliteStore
) -> None:
    operator_file = write_lora(tmp_path / "operator-secrets" / "client-x.safetensors", LORA_SHAPES, seed=3)
    rig = rig_on(tmp_path, store, FakeLoraLoadingEngine())
    rig.preparer = lora_preparer(rig, tmp_path, registered={"house": str(operator_file)})

    async def scenario() -> None:
        job = await rig.submit(seed=1, loras=[{"id": "house"}])
        async with rig.runner():
            done = await ended(rig, job)
        assert done.status == JobStatus.FAILED
        assert done.error is not None
        assert "the LoRA id 'house' matched no weights" in done.error.message
        assert "operator-secrets" not in done.error.message
        assert "client-x" not in done.error.message

    run(scenario())
