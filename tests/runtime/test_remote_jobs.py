"""Jobs of the remote model (Wan 2.7 image through DashScope) run by `RemoteJobs` beside the local runner,
against the DashScope stand-in (tests/dashscope_standin.py) over real HTTP on 127.0.0.1, with a real
JobService on a temporary SQLite store and the file blob store.

The clients are built here with short poll and retry intervals (the server builds them from its settings);
tests wait on the stand-in's steps and the jobs' statuses, not on time."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from reangle.core import models
from reangle.core.assets import AssetService
from reangle.core.edit import EditPlan, SizeLimits
from reangle.core.jobs import Job, JobStatus
from reangle.core.models import CAMERA_EDIT, WAN_IMAGE, install_catalog, shipped_catalog
from reangle.core.service import JobService, ServiceLimits, SubmitRequest
from reangle.engine.base import EditResult, StepCallback, StopCheck
from reangle.engine.fake import FakeEngine
from reangle.engine.fake_rewriter import REFUSE, FakeRewriter
from reangle.errors import InvalidInput, TooLarge, Unavailable
from reangle.remote.dashscope import DashScopeClient, DashScopeConfig
from reangle.runtime import base as runtime_base
from reangle.runtime import remote_jobs
from reangle.runtime.job_prep import JobPreparer
from reangle.runtime.local import LocalRunner
from reangle.runtime.remote_jobs import RemoteJobs
from reangle.settings import Settings
from reangle.store.sqlite import SqliteStore
from reangle.store.url_fetch import FetchPolicy
from tests.conftest import image_bytes, job_service, make_image
from tests.dashscope_standin import CREATE_PATH, RESULT_SIZE, Behavior, DashScopeStandIn

OWNER = "owner-1"
KEY = "sk-test"
WAIT_S = 15.0  # only reached when a test is about to fail
HELD = 10**6  # polls a task stays in its status until the test advances it


@pytest.fixture(autouse=True)
def wan_available() -> Iterator[None]:
    """The catalog as a server with a DashScope key serves it (the import-time catalog has no settings)."""
    install_catalog(shipped_catalog(), {"dashscope_api_key": KEY})
    yield
    install_catalog(shipped_catalog(), {})


@pytest.fixture
def standin() -> Iterator[DashScopeStandIn]:
    server = DashScopeStandIn(Behavior(api_key=KEY))
    yield server
    server.close()


def client_factory(base_url: str, key: str = KEY) -> Callable[[str], DashScopeClient]:
    def make(model: str) -> DashScopeClient:
        config = DashScopeConfig(
            api_key=key,
            base_url=base_url,
            model=model,
            request_timeout_s=5.0,
            poll_interval_s=0.01,
            max_poll_interval_s=0.02,
            task_timeout_s=WAIT_S,
            max_retries=3,
            retry_base_s=0.01,
            retry_max_wait_s=0.05,
            stop_check_s=0.01,
            download=FetchPolicy(allow_private=True, timeout_s=5.0),  # the stand-in lives on loopback
        )
        return DashScopeClient(config)

    return make


class GatedEngine(FakeEngine):
    """The fake engine; an edit whose seed is in `held` waits at the gate until the test opens it."""

    def __init__(self) -> None:
        super().__init__(Settings(fake_step_seconds=0))
        self.held: set[int] = set()
        self.gate = threading.Event()
        self.rendering = threading.Event()

    def edit(
        self,
        images: Sequence[Image.Image],
        plan: EditPlan,
        *,
        on_step: StepCallback | None = None,
        should_stop: StopCheck | None = None,
    ) -> EditResult:
        if plan.seed in self.held:
            self.rendering.set()
            assert self.gate.wait(WAIT_S), "the gate was never opened"
        return super().edit(images, plan, on_step=on_step, should_stop=should_stop)


@dataclass
class Rig:
    store: SqliteStore
    assets: AssetService
    service: JobService
    standin: DashScopeStandIn
    engine: GatedEngine
    concurrency: int = 4
    clients: Callable[[str], DashScopeClient] | None = None
    rewriter: FakeRewriter | None = None
    progress: list[tuple[str, float]] = field(default_factory=list)

    def upload(self, width: int = 256, height: int = 256, color: tuple[int, int, int] = (200, 40, 40)) -> str:
        data = image_bytes(make_image(width, height, color=color), "PNG")
        return self.assets.ingest(OWNER, data).id

    async def submit(self, **fields: Any) -> Job:
        data = {"prompt": "A flower shop with a wooden door", "size": "1K"} | fields
        return await self.service.submit(OWNER, SubmitRequest(model=WAN_IMAGE, input=data))

    async def submit_local(self, seed: int) -> Job:
        data = {"images": [self.upload(48, 48)], "width": 32, "height": 32, "seed": seed}
        return await self.service.submit(OWNER, SubmitRequest(model=CAMERA_EDIT, input=data))

    def job(self, job_id: str) -> Job:
        return self.service.get(OWNER, job_id)

    async def ended(self, job: Job) -> Job:
        done = await self.service.wait(OWNER, job.id, timeout=WAIT_S)
        assert done.status.is_terminal, f"job {job.id} is still {done.status.value}"
        return done

    def remote(self) -> RemoteJobs:
        clients = self.clients or client_factory(self.standin.base_url)
        return RemoteJobs(
            self.service,
            JobPreparer(self.service, rewriter=self.rewriter),
            clients,
            concurrency=self.concurrency,
            unavailable="no key",
        )

    def output_images(self, job: Job) -> list[Image.Image]:
        images: list[Image.Image] = []
        for output in job.outputs:
            found = self.assets.read_bytes(output.asset_id)
            assert found is not None, f"output {output.asset_id} of {job.id} is not stored"
            image = Image.open(io.BytesIO(found[0]))
            image.load()
            images.append(image)
        return images

    @asynccontextmanager
    async def runner(self) -> AsyncIterator[RemoteJobs]:
        """The local runner with its remote jobs, as the embedded server runs them."""
        remote = self.remote()
        task = asyncio.create_task(LocalRunner(self.service, self.engine, remote=remote).run_forever(0.01))
        try:
            yield remote
        finally:
            self.engine.gate.set()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
def rig(tmp_path: Path, store: SqliteStore, standin: DashScopeStandIn) -> Rig:
    service = job_service(store, tmp_path, ServiceLimits(sizes=SizeLimits(min_side=16)), max_bytes=1 << 22)
    return Rig(store=store, assets=service.assets, service=service, standin=standin, engine=GatedEngine())


async def until(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)
    assert condition(), what


async def advance_until_ended(rig: Rig, jobs: Sequence[Job]) -> list[Job]:
    """Let the stand-in's held tasks go on, until every one of `jobs` has ended."""

    def all_ended() -> bool:
        return all(rig.job(job.id).status.is_terminal for job in jobs)

    async with asyncio.timeout(WAIT_S):
        while not all_ended():
            rig.standin.advance()
            await asyncio.sleep(0.01)
    return [rig.job(job.id) for job in jobs]


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(3 * WAIT_S):
            await scenario()

    asyncio.run(bounded())


def polls(rig: Rig) -> int:
    return rig.standin.count("GET", "/api/v1/tasks/")


def sent_body(rig: Rig, k: int = -1) -> dict[str, Any]:
    body = rig.standin.creates()[k].body
    assert isinstance(body, dict)
    return body


# -- success -------------------------------------------------------------------------------------------------


def test_text_to_image_lands_in_reangles_store_and_outlives_the_vendor_urls(rig: Rig) -> None:
    async def scenario() -> None:
        job = await rig.submit(num_outputs=2, seed=42, thinking_mode=False)
        async with rig.runner():
            done = await rig.ended(job)

        assert done.status == JobStatus.SUCCEEDED, done.error
        rig.standin.expire_results()  # the vendor's URLs are gone: the outputs are reangle's own
        images = rig.output_images(done)
        assert [(image.format, image.size) for image in images] == [("PNG", RESULT_SIZE)] * 2
        assert images[0].tobytes() != images[1].tobytes()
        for output in done.outputs:
            assert (output.role, output.mime_type, output.seed) == ("image", "image/png", 42)
            assert (output.width, output.height) == RESULT_SIZE
            assert output.plan is not None
            assert {key: output.plan[key] for key in ("provider", "model", "prompt")} == {
                "provider": "dashscope",
                "model": "wan2.7-image",
                "prompt": "A flower shop with a wooden door",
            }
            assert output.plan["usage"] == {"image_count": 2, "size": "1K"}
            record = rig.store.get_asset(output.asset_id)
            assert record is not None
            assert (record.job_id, record.owner) == (done.id, OWNER)
        assert len({output.plan["task_id"] for output in done.outputs if output.plan}) == 1  # one task
        body = sent_body(rig)
        assert body["model"] == "wan2.7-image"
        assert body["parameters"] == {
            "size": "1K",
            "n": 2,
            "watermark": False,
            "thinking_mode": False,
            "seed": 42,
        }
        assert body["input"]["messages"][0]["content"] == [{"text": "A flower shop with a wooden door"}]
        assert rig.standin.creates()[-1].headers["x-dashscope-async"] == "enable"
        assert {"queue_s", "inference_s", "run_s"} <= set(done.timings)

    run(scenario)


def test_editing_with_two_images_sends_them_as_data_urls(rig: Rig) -> None:
    async def scenario() -> None:
        first, second = rig.upload(256, 256), rig.upload(320, 240, color=(10, 200, 10))
        job = await rig.submit(
            prompt="Put the cup of image 2 on the table of image 1", images=[first, second]
        )
        async with rig.runner():
            done = await rig.ended(job)

        assert done.status == JobStatus.SUCCEEDED, done.error
        content = sent_body(rig)["input"]["messages"][0]["content"]
        assert content[0] == {"text": "Put the cup of image 2 on the table of image 1"}
        sent = [item["image"] for item in content[1:]]
        assert [url.split(",")[0] for url in sent] == ["data:image/png;base64"] * 2
        stored = [rig.assets.read_bytes(asset_id) for asset_id in (first, second)]
        assert [base64.b64decode(url.split(",", 1)[1]) for url in sent] == [s[0] for s in stored if s]
        assert "thinking_mode" not in sent_body(rig)["parameters"]  # text-to-image only
        assert len(done.outputs) == 1

    run(scenario)


def test_an_image_set_of_six(rig: Rig) -> None:
    async def scenario() -> None:
        job = await rig.submit(prompt="A comic strip of a cat's day", num_outputs=6, image_set_mode=True)
        async with rig.runner():
            done = await rig.ended(job)

        assert done.status == JobStatus.SUCCEEDED, done.error
        parameters = sent_body(rig)["parameters"]
        assert (parameters["n"], parameters["enable_sequential"]) == (6, True)
        assert len(done.outputs) == 6
        assert len({image.tobytes() for image in rig.output_images(done)}) == 6

    run(scenario)


def test_a_rewritten_prompt_is_what_the_vendor_gets_and_the_plan_records_both(rig: Rig) -> None:
    rig.rewriter = FakeRewriter()

    async def scenario() -> None:
        image = rig.upload(320, 240)
        asked = await rig.submit(prompt="make it night", images=[image], rewrite_prompt=True)
        refused = await rig.submit(prompt=f"make it night {REFUSE}", rewrite_prompt=True)
        async with rig.runner():
            done = [await rig.ended(asked), await rig.ended(refused)]

        assert [job.status for job in done] == [JobStatus.SUCCEEDED] * 2
        sent = {
            body["input"]["messages"][0]["content"][0]["text"]
            for body in (sent_body(rig, 0), sent_body(rig, 1))
        }
        assert sent == {"make it night (precisely, for 320x240)", f"make it night {REFUSE}"}
        plan, kept_plan = done[0].outputs[0].plan or {}, done[1].outputs[0].plan or {}
        rewrite = plan["rewrite"]
        assert (rewrite["original_prompt"], rewrite["prompt"], rewrite["rewritten"]) == (
            "make it night",
            "make it night (precisely, for 320x240)",
            True,
        )
        assert plan["prompt"] == rewrite["prompt"]
        kept = kept_plan["rewrite"]
        assert (kept["rewritten"], kept["fallback_reason"]) == (False, "refused")
        assert "rewrite_s" in done[0].timings

    run(scenario)


def test_without_a_rewriter_the_prompt_is_sent_as_given_and_the_plan_says_why(rig: Rig) -> None:
    async def scenario() -> None:
        job = await rig.submit(prompt="make it night", rewrite_prompt=True)
        async with rig.runner():
            done = await rig.ended(job)

        assert done.status == JobStatus.SUCCEEDED, done.error
        assert sent_body(rig)["input"]["messages"][0]["content"] == [{"text": "make it night"}]
        rewrite = (done.outputs[0].plan or {})["rewrite"]
        assert (rewrite["rewritten"], rewrite["fallback_reason"]) == (False, "skipped")
        assert "REANGLE_REWRITER_MODEL=off" in rewrite["detail"]

    run(scenario)


def test_outputs_are_reencoded_to_the_jobs_format(rig: Rig) -> None:
    async def scenario() -> None:
        job = await rig.submit(output_format="webp", quality=80)
        async with rig.runner():
            done = await rig.ended(job)

        assert done.status == JobStatus.SUCCEEDED, done.error
        [output] = done.outputs
        assert output.mime_type == "image/webp"
        assert [(image.format, image.size) for image in rig.output_images(done)] == [("WEBP", RESULT_SIZE)]

    run(scenario)


def test_progress_follows_the_vendor_task(rig: Rig) -> None:
    rig.standin.behavior.pending_polls = HELD
    rig.standin.behavior.running_polls = HELD

    async def scenario() -> None:
        job = await rig.submit()
        async with rig.runner():
            await until(lambda: polls(rig) >= 1, "the task was never polled")
            assert rig.job(job.id).status == JobStatus.PROCESSING
            await asyncio.sleep(0.3)  # the service writes progress at most every 0.25 s
            rig.standin.advance()  # RUNNING
            await until(lambda: rig.job(job.id).progress > 0, "no progress while the task ran")
            assert rig.job(job.id).progress == pytest.approx(1 / 3)
            rig.standin.advance()  # SUCCEEDED
            done = await rig.ended(job)
        assert done.status == JobStatus.SUCCEEDED

    run(scenario)


# -- the vendor's failures -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("behavior", "prompt", "code", "words"),
    [
        ({}, "a forbidden picture", "content_refused", ["content moderation", "DataInspectionFailed"]),
        ({"outcome": "moderate"}, "a picture", "content_refused", ["content moderation", "Output data"]),
        ({"outcome": "fail"}, "a picture", "engine_error", ["InternalError.Algo", "Algorithm failed"]),
        ({"outcome": "expire"}, "a picture", "engine_error", ["UNKNOWN", "24 h"]),
        ({"outcome": "not_image"}, "a picture", "engine_error", ["not a usable image"]),
    ],
)
def test_vendor_failures_fail_the_job_with_the_reason(
    rig: Rig, behavior: dict[str, Any], prompt: str, code: str, words: list[str]
) -> None:
    for name, value in behavior.items():
        setattr(rig.standin.behavior, name, value)

    async def scenario() -> None:
        job = await rig.submit(prompt=prompt)
        async with rig.runner():
            done = await rig.ended(job)

        assert done.status == JobStatus.FAILED
        assert done.error is not None
        assert done.error.code == code
        for word in words:
            assert word in done.error.message
        assert done.outputs == ()
        assert len(rig.standin.creates()) <= 1  # never sent twice

    run(scenario)


def test_an_invalid_key_is_the_operators_problem(rig: Rig) -> None:
    rig.clients = client_factory(rig.standin.base_url, key="sk-wrong")

    async def scenario() -> None:
        job = await rig.submit()
        async with rig.runner():
            done = await rig.ended(job)

        assert done.status == JobStatus.FAILED
        assert done.error is not None
        assert done.error.code == "provider_config"
        assert "InvalidApiKey" in done.error.message
        assert done.error.hint is not None
        assert "REANGLE_DASHSCOPE_API_KEY" in done.error.hint
        assert rig.standin.count("POST", CREATE_PATH) == 1  # not retried

    run(scenario)


def test_a_runner_without_a_key_fails_the_job_clearly(rig: Rig) -> None:
    async def scenario() -> None:
        job = await rig.submit()
        remote = RemoteJobs(
            rig.service, JobPreparer(rig.service), None, concurrency=1, unavailable="set the key"
        )
        claimed = await rig.service.next_job(poll_s=0.01)
        assert claimed is not None
        await remote.run(claimed)
        done = rig.job(job.id)
        assert done.status == JobStatus.FAILED
        assert done.error is not None
        assert (done.error.code, done.error.message) == (
            "provider_config",
            f"model {WAN_IMAGE} is unavailable: set the key",
        )
        assert rig.standin.creates() == []

    run(scenario)


def test_transient_vendor_errors_are_retried(rig: Rig) -> None:
    behavior = rig.standin.behavior
    behavior.throttle_creates, behavior.server_error_creates, behavior.drop_polls = 2, 1, 2

    async def scenario() -> None:
        job = await rig.submit()
        async with rig.runner():
            done = await rig.ended(job)

        assert done.status == JobStatus.SUCCEEDED, done.error
        assert rig.standin.count("POST", CREATE_PATH) == 4  # 429, 429, 500, then the task
        assert len(rig.standin.tasks) == 1
        assert len(rig.output_images(done)) == 1

    run(scenario)


def test_throttling_past_the_retries_fails_the_job_as_unavailable(rig: Rig) -> None:
    rig.standin.behavior.throttle_creates = 100

    async def scenario() -> None:
        job = await rig.submit()
        async with rig.runner():
            done = await rig.ended(job)

        assert done.status == JobStatus.FAILED
        assert done.error is not None
        assert done.error.code == "unavailable"
        assert "Throttling.RateQuota" in done.error.message
        assert rig.standin.count("POST", CREATE_PATH) == 4  # max_retries 3
        assert rig.standin.tasks == {}

    run(scenario)


# -- cancel --------------------------------------------------------------------------------------------------


def test_cancel_while_pending_cancels_the_vendor_task(rig: Rig) -> None:
    rig.standin.behavior.pending_polls = HELD

    async def scenario() -> None:
        job = await rig.submit()
        async with rig.runner():
            await until(lambda: polls(rig) >= 1, "the task was never polled")
            rig.service.cancel(OWNER, job.id)
            done = await rig.ended(job)

        assert done.status == JobStatus.CANCELED
        assert rig.standin.statuses() == ["CANCELED"]
        assert rig.standin.count("POST", "/api/v1/tasks/") == 1  # the cancel
        assert done.outputs == ()

    run(scenario)


def test_cancel_while_running_stops_following_the_task(rig: Rig) -> None:
    rig.standin.behavior.pending_polls = 0
    rig.standin.behavior.running_polls = HELD

    async def scenario() -> None:
        job = await rig.submit()
        async with rig.runner():
            await until(lambda: rig.job(job.id).progress > 0, "the job never saw its task run")
            rig.service.cancel(OWNER, job.id)
            done = await rig.ended(job)
            seen = polls(rig)
            await asyncio.sleep(0.05)
            assert polls(rig) == seen  # no longer followed

        assert done.status == JobStatus.CANCELED
        assert rig.standin.statuses() == ["RUNNING"]  # the vendor does not cancel a running task
        assert rig.standin.count("POST", "/api/v1/tasks/") == 0  # so no cancel was asked for
        assert done.outputs == ()

    run(scenario)


def test_a_job_canceled_while_queued_never_reaches_the_vendor(rig: Rig) -> None:
    async def scenario() -> None:
        job = await rig.submit()
        rig.service.cancel(OWNER, job.id)
        async with rig.runner():
            done = await rig.ended(job)
            await asyncio.sleep(0.05)
        assert done.status == JobStatus.CANCELED
        assert rig.standin.creates() == []

    run(scenario)


def test_the_vendor_task_is_recorded_on_the_job_as_soon_as_it_is_created(rig: Rig) -> None:
    rig.standin.behavior.pending_polls = HELD

    async def scenario() -> None:
        job = await rig.submit()
        assert rig.job(job.id).vendor_task is None
        async with rig.runner():
            await until(lambda: polls(rig) >= 1, "the task was never polled")
            [task_id] = rig.standin.tasks
            assert rig.job(job.id).vendor_task == task_id
            rig.standin.finish()
            done = await rig.ended(job)
        assert done.status == JobStatus.SUCCEEDED, done.error
        assert done.vendor_task == task_id == (done.outputs[0].plan or {})["task_id"]

    run(scenario)


def test_a_vendor_task_the_store_could_not_record_is_recorded_at_the_next_status(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig.standin.behavior.pending_polls = HELD
    set_vendor_task = rig.store.set_vendor_task
    calls: list[str] = []

    def flaky_set_vendor_task(job_id: str, attempt: int, task_id: str) -> bool:
        calls.append(task_id)
        if len(calls) == 1:
            raise Unavailable("database is locked")
        return set_vendor_task(job_id, attempt, task_id)

    monkeypatch.setattr(rig.store, "set_vendor_task", flaky_set_vendor_task)

    async def scenario() -> None:
        job = await rig.submit()
        async with rig.runner():
            await until(lambda: rig.job(job.id).vendor_task is not None, "the vendor task was never recorded")
            [task_id] = rig.standin.tasks
            assert calls == [task_id, task_id]  # at creation (refused), then at the first status (PENDING)
            rig.standin.finish()
            done = await rig.ended(job)
        assert done.status == JobStatus.SUCCEEDED, done.error
        assert done.vendor_task == task_id
        assert len(calls) == 2

    run(scenario)


def test_a_server_stop_while_pending_cancels_the_vendor_task_and_the_next_run_makes_one_task(
    rig: Rig,
) -> None:
    rig.standin.behavior.pending_polls = HELD

    async def scenario() -> None:
        job = await rig.submit()
        async with rig.runner():
            await until(lambda: polls(rig) >= 1, "the task was never polled")
        # the runner has stopped: the job runs again at the next start, and its first task is not billed
        assert rig.job(job.id).status == JobStatus.QUEUED
        assert rig.standin.statuses() == ["CANCELED"]

        rig.standin.behavior.pending_polls = 1
        async with rig.runner():
            done = await rig.ended(job)
        assert done.status == JobStatus.SUCCEEDED, done.error
        # the recorded task was CANCELED (never ran): a new one was made, and only it ran
        assert rig.standin.statuses() == ["CANCELED", "SUCCEEDED"]
        assert done.vendor_task == list(rig.standin.tasks)[1]

    run(scenario)


def test_a_server_stop_while_running_follows_the_same_task_on_the_next_run(rig: Rig) -> None:
    rig.standin.behavior.pending_polls = 0
    rig.standin.behavior.running_polls = HELD

    async def scenario() -> None:
        job = await rig.submit()
        async with rig.runner():
            await until(lambda: rig.job(job.id).progress > 0, "the job never saw its task run")
        stopped = rig.job(job.id)
        assert stopped.status == JobStatus.QUEUED
        assert rig.standin.statuses() == ["RUNNING"]
        assert rig.standin.count("POST", "/api/v1/tasks/") == 0  # the vendor cancels PENDING tasks only
        [task_id] = rig.standin.tasks
        assert stopped.vendor_task == task_id

        rig.standin.finish()  # the vendor finished the task while the server was down
        async with rig.runner():
            done = await rig.ended(job)
        assert done.status == JobStatus.SUCCEEDED, done.error
        assert len(rig.standin.creates()) == 1  # one vendor task, billed once
        assert (done.outputs[0].plan or {})["task_id"] == task_id
        assert len(rig.output_images(done)) == 1

    run(scenario)


def test_a_store_outage_after_the_task_succeeded_hands_the_job_back_without_a_second_task(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    put_output = rig.assets.put_output
    calls: list[str] = []

    def flaky_put_output(*args: Any, **kwargs: Any) -> Any:
        calls.append("put")
        if len(calls) == 1:
            raise Unavailable("the bucket is unavailable")
        return put_output(*args, **kwargs)

    monkeypatch.setattr(rig.assets, "put_output", flaky_put_output)

    async def scenario() -> None:
        job = await rig.submit()
        async with rig.runner():
            done = await rig.ended(job)
        assert done.status == JobStatus.SUCCEEDED, done.error
        assert calls == ["put", "put"]  # handed back once, then run again
        assert len(rig.standin.creates()) == 1
        assert rig.standin.count("GET", "/results/") == 2  # the same task's images, downloaded again

    run(scenario)


def test_a_cancel_while_following_a_recorded_running_task_stops_following_it(rig: Rig) -> None:
    rig.standin.behavior.pending_polls = 0
    rig.standin.behavior.running_polls = HELD

    async def scenario() -> None:
        job = await rig.submit()
        async with rig.runner():
            await until(lambda: rig.job(job.id).progress > 0, "the job never saw its task run")
        assert rig.job(job.id).status == JobStatus.QUEUED
        async with rig.runner():
            await until(lambda: rig.job(job.id).status == JobStatus.PROCESSING, "the job never ran again")
            await until(lambda: rig.job(job.id).progress > 0, "the second run never saw the task run")
            rig.service.cancel(OWNER, job.id)
            done = await rig.ended(job)
        assert done.status == JobStatus.CANCELED
        assert rig.standin.statuses() == ["RUNNING"]  # the vendor finishes (and bills) it, as before
        assert rig.standin.count("POST", "/api/v1/tasks/") == 0
        assert len(rig.standin.creates()) == 1

    run(scenario)


def test_a_recorded_task_the_vendor_has_forgotten_fails_the_job_without_a_second_task(rig: Rig) -> None:
    rig.standin.behavior.pending_polls = 0
    rig.standin.behavior.running_polls = HELD

    async def scenario() -> None:
        job = await rig.submit()
        async with rig.runner():
            await until(lambda: rig.job(job.id).progress > 0, "the job never saw its task run")
        rig.standin.expire_results()  # the server stayed down past the vendor's 24 h
        async with rig.runner():
            done = await rig.ended(job)
        assert done.status == JobStatus.FAILED
        assert done.error is not None
        assert done.error.code == "engine_error"
        assert "no longer knows task" in done.error.message
        assert "no second task was created" in done.error.message
        assert done.error.hint == "submit the job again to have a new task created"
        assert len(rig.standin.creates()) == 1

    run(scenario)


# -- validation at submit ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"size": "3K"}, "input.size", "1K, 2K or WxH"),
        ({"size": "4096x4096"}, "input.size", "2048x2048"),
        ({"num_outputs": 9}, "input.num_outputs", "without image_set_mode"),
        ({"num_outputs": 13, "image_set_mode": True}, "input.num_outputs", "between 1 and 12"),
        ({"prompt": ""}, "input.prompt", ""),
        ({"seed": -1}, "input.seed", ""),
        ({"images": ["small"]}, "input.images.0", "240 to 8000"),
        ({"negative_prompt": "x"}, "input.negative_prompt", "unknown field"),
    ],
)
def test_bad_fields_are_refused_at_submit_naming_the_field(
    rig: Rig, fields: dict[str, Any], field: str, words: str
) -> None:
    if fields.get("images") == ["small"]:
        fields = {"images": [rig.upload(200, 300)]}

    async def scenario() -> None:
        with pytest.raises(InvalidInput) as caught:
            await rig.submit(**fields)
        assert caught.value.field == field
        assert words in caught.value.message

    run(scenario)
    assert rig.standin.creates() == []


def test_a_store_outage_at_the_end_is_waited_out_and_the_vendor_is_not_asked_twice(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime_base, "COMPLETE_RETRY_S", (0.01, 0.01))
    complete = rig.service.complete
    calls: list[str] = []

    def flaky_complete(job: Job, *args: Any, **kwargs: Any) -> Any:
        calls.append(job.id)
        if len(calls) == 1:
            raise Unavailable("database is locked")
        return complete(job, *args, **kwargs)

    monkeypatch.setattr(rig.service, "complete", flaky_complete)

    async def scenario() -> None:
        job = await rig.submit()
        async with rig.runner():
            done = await rig.ended(job)
        assert done.status == JobStatus.SUCCEEDED
        assert calls == [job.id, job.id]
        assert len(rig.standin.creates()) == 1

    run(scenario)


def test_an_image_over_the_vendors_byte_limit_is_refused_at_submit(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    small, image = rig.upload(240, 240), rig.upload(600, 600)
    size = rig.assets.get(OWNER, image).bytes
    assert rig.assets.get(OWNER, small).bytes < size
    monkeypatch.setattr(models, "WAN_MAX_IMAGE_BYTES", size - 1)  # the vendor's 20 MB, scaled to this image

    async def scenario() -> None:
        with pytest.raises(TooLarge) as caught:
            await rig.submit(images=[small, image])
        assert caught.value.field == "input.images.1"
        assert f"{size:,} bytes" in caught.value.message

    run(scenario)
    assert rig.standin.creates() == []


def test_without_a_key_the_model_is_unavailable_and_refused_at_submit(rig: Rig) -> None:
    install_catalog(shipped_catalog(), {})

    async def scenario() -> None:
        with pytest.raises(InvalidInput) as caught:
            await rig.submit()
        assert caught.value.field == "model"
        assert "REANGLE_DASHSCOPE_API_KEY" in caught.value.message

    run(scenario)


# -- concurrency ---------------------------------------------------------------------------------------------


def test_remote_jobs_run_together_while_a_local_job_renders(rig: Rig) -> None:
    rig.standin.behavior.pending_polls = HELD
    rig.concurrency = 3

    async def scenario() -> None:
        remote_jobs = [await rig.submit(seed=seed) for seed in (1, 2, 3)]
        rig.engine.held.add(7)
        local_job = await rig.submit_local(seed=7)
        async with rig.runner():
            await until(lambda: len(rig.standin.tasks) == 3, "the remote jobs did not start together")
            assert await asyncio.to_thread(rig.engine.rendering.wait, WAIT_S), "the local job never rendered"
            # three vendor tasks wait at once while the engine renders the local job
            assert rig.standin.statuses() == ["PENDING"] * 3
            assert rig.job(local_job.id).status == JobStatus.PROCESSING
            remote_done = await advance_until_ended(rig, remote_jobs)
            assert rig.job(local_job.id).status == JobStatus.PROCESSING  # still held at the gate
            rig.engine.gate.set()
            local_done = await rig.ended(local_job)

        assert [job.status for job in remote_done] == [JobStatus.SUCCEEDED] * 3
        assert local_done.status == JobStatus.SUCCEEDED

    run(scenario)


def test_remote_jobs_are_bounded_by_the_concurrency(rig: Rig) -> None:
    rig.standin.behavior.pending_polls = HELD
    rig.concurrency = 2

    async def scenario() -> None:
        jobs = [await rig.submit(seed=seed) for seed in (1, 2, 3)]
        async with rig.runner():
            await until(lambda: len(rig.standin.tasks) == 2, "two remote jobs did not start")
            await asyncio.sleep(0.1)
            assert len(rig.standin.tasks) == 2  # the third waits for a slot
            done = await advance_until_ended(rig, jobs)
        assert len(rig.standin.tasks) == 3
        assert [job.status for job in done] == [JobStatus.SUCCEEDED] * 3

    run(scenario)


def test_the_remote_loop_claims_a_job_only_when_a_slot_is_free(rig: Rig) -> None:
    """`RemoteJobs.run_forever`, the loop of its own that the local runner is to start for remote models: a
    job waiting for a slot stays queued, so a cancel of it is a cancel of a queued job."""
    rig.standin.behavior.pending_polls = HELD
    rig.concurrency = 2

    async def scenario() -> None:
        jobs = [await rig.submit(seed=seed) for seed in (1, 2, 3, 4)]
        remote = rig.remote()
        loop = asyncio.create_task(remote.run_forever(lambda: rig.service.next_job(poll_s=0.01), 0.01))
        try:
            await until(lambda: len(rig.standin.tasks) == 2, "two remote jobs did not start")
            await asyncio.sleep(0.05)
            assert [rig.job(job.id).status for job in jobs[2:]] == [JobStatus.QUEUED] * 2
            rig.service.cancel(OWNER, jobs[3].id)
            done = await advance_until_ended(rig, jobs)
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
        assert [job.status for job in done] == [JobStatus.SUCCEEDED] * 3 + [JobStatus.CANCELED]
        assert len(rig.standin.tasks) == 3

    run(scenario)


def test_the_remote_loop_waits_out_a_database_another_process_holds(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(remote_jobs, "UNAVAILABLE_RETRY_S", 0.01)
    refusals = [Unavailable("the job database cannot be used now: database is locked")]

    async def claim_once_refused() -> Job | None:
        if refusals:
            raise refusals.pop()
        return await rig.service.next_job(poll_s=0.01)

    async def scenario() -> None:
        job = await rig.submit()
        loop = asyncio.create_task(rig.remote().run_forever(claim_once_refused))
        try:
            [done] = await advance_until_ended(rig, [job])
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
        assert done.status == JobStatus.SUCCEEDED

    with caplog.at_level(logging.WARNING, "reangle.remote"):
        run(scenario)
    assert [record.getMessage().split(" (")[0] for record in caplog.records] == ["cannot claim a remote job"]
    assert all(record.exc_info is None for record in caplog.records)  # one line, no traceback


def test_stopping_the_remote_loop_requeues_its_jobs(rig: Rig) -> None:
    rig.standin.behavior.pending_polls = HELD

    async def scenario() -> None:
        jobs = [await rig.submit(seed=seed) for seed in (1, 2)]
        loop = asyncio.create_task(rig.remote().run_forever(lambda: rig.service.next_job(poll_s=0.01)))
        await until(lambda: len(rig.standin.tasks) == 2, "the remote jobs did not start")
        await until(lambda: polls(rig) >= 2, "the tasks were never polled")
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        assert [rig.job(job.id).status for job in jobs] == [JobStatus.QUEUED] * 2
        assert rig.standin.statuses() == ["CANCELED"] * 2

    run(scenario)


def test_a_local_job_queued_first_does_not_hold_back_remote_jobs(rig: Rig) -> None:
    rig.standin.behavior.pending_polls = HELD

    async def scenario() -> None:
        rig.engine.held.add(7)
        local_job = await rig.submit_local(seed=7)
        remote_job = await rig.submit()
        async with rig.runner():
            assert await asyncio.to_thread(rig.engine.rendering.wait, WAIT_S)
            try:
                await until(lambda: len(rig.standin.tasks) == 1, "the remote job never started", 1.0)
            except TimeoutError:
                raise AssertionError("the remote job waited for the local render") from None
            [remote_done] = await advance_until_ended(rig, [remote_job])
            assert remote_done.status == JobStatus.SUCCEEDED
            rig.engine.gate.set()
            assert (await rig.ended(local_job)).status == JobStatus.SUCCEEDED

    run(scenario)


def test_full_remote_slots_do_not_hold_back_a_local_job(rig: Rig) -> None:
    rig.standin.behavior.pending_polls = HELD
    rig.concurrency = 1

    async def scenario() -> None:
        remote_jobs = [await rig.submit(seed=seed) for seed in (1, 2)]
        local_job = await rig.submit_local(seed=7)
        async with rig.runner():
            await until(lambda: len(rig.standin.tasks) == 1, "the first remote job did not start")
            try:
                done = await asyncio.wait_for(rig.ended(local_job), 1.0)
            except TimeoutError:
                raise AssertionError("the local job waited for a remote slot") from None
            assert done.status == JobStatus.SUCCEEDED
            remote_done = await advance_until_ended(rig, remote_jobs)
        assert [job.status for job in remote_done] == [JobStatus.SUCCEEDED] * 2

    run(scenario)
