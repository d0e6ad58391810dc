"""AsyncClient against the same FakeServer: a subset of the sync tests, each run with asyncio.run."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx
import pytest

from reangle.client import (
    AsyncClient,
    Client,
    Job,
    JobEvent,
    JobFailed,
    ProgressEvent,
    RateLimitError,
    ServerError,
    TimeLimits,
    WaitTimeout,
    WebhookSecret,
)
from tests.client.fakes import API, API_KEY, WEBHOOK_SECRET, FakeServer, error

PNG = b"\x89PNG\r\n\x1a\n" + b"pretend pixels"
T = TypeVar("T")


def run(fake: FakeServer, test: Callable[[AsyncClient], Awaitable[T]]) -> T:
    async def main() -> T:
        async with AsyncClient(API, API_KEY, transport=fake.transport(), poll_interval=0.01) as client:
            return await test(client)

    return asyncio.run(main())


def test_upload_submit_and_wait_with_progress() -> None:
    fake = FakeServer()
    seen: list[JobEvent] = []

    async def scenario(client: AsyncClient) -> Job:
        asset = await client.upload(PNG)
        job = await client.submit("qwen-edit-multiangle-2511", {"images": [asset.id]}, idempotency_key="k")
        return await client.wait(job.id, on_progress=seen.append)

    done = run(fake, scenario)
    assert done.status == "succeeded"
    assert PNG in fake.requests_to("POST", "/v1/assets")[0].content
    assert fake.requests_to("POST", "/v1/jobs")[0].headers["idempotency-key"] == "k"
    assert [event.progress for event in seen if isinstance(event, ProgressEvent)] == [0.25, 0.5, 0.75, 1.0]


def test_edit_uploads_bytes_and_raises_job_failed() -> None:
    fake = FakeServer()
    fake.outcome = "failed"

    async def scenario(client: AsyncClient) -> Job:
        return await client.edit([PNG, "https://example.com/b.png"], azimuth=90)

    with pytest.raises(JobFailed) as caught:
        run(fake, scenario)
    assert caught.value.code == "engine_error"
    submitted = json.loads(fake.requests_to("POST", "/v1/jobs")[0].content)
    assert submitted["input"]["images"][1] == "https://example.com/b.png"
    assert fake.blobs[submitted["input"]["images"][0]] == PNG


def test_orbit_and_download_without_the_api_key() -> None:
    fake = FakeServer()

    async def scenario(client: AsyncClient) -> bytes:
        job = await client.orbit("asset_1", azimuths=[45])
        view = job.assets_with_role("view")[0]
        assert view.pose is not None
        assert view.pose.azimuth_deg == 45
        return await client.download(view)

    assert run(fake, scenario).endswith(b"view 0")
    (download,) = [r for r in fake.requests if r.url.host == "files.reangle.test"]
    assert "authorization" not in download.headers


def test_orbit_along_poses() -> None:
    fake = FakeServer()

    async def scenario(client: AsyncClient) -> list[float]:
        job = await client.orbit("asset_1", poses=[{"azimuth": 270, "elevation": -30}, {"azimuth": 45}])
        return [view.pose.elevation_deg for view in job.assets_with_role("view") if view.pose]

    assert run(fake, scenario) == [-30, 0]
    submitted = json.loads(fake.requests_to("POST", "/v1/jobs")[0].content)
    assert submitted["input"] == {
        "image": "asset_1",
        "poses": [{"azimuth": 270, "elevation": -30}, {"azimuth": 45}],
    }


def test_wait_falls_back_to_polling_when_the_stream_breaks() -> None:
    fake = FakeServer()
    fake.stream_mode = "break"

    async def scenario(client: AsyncClient) -> Job:
        job = await client.submit("qwen-edit-multiangle-2511", {"images": ["a"]})
        return await client.wait(job.id)

    assert run(fake, scenario).status == "succeeded"
    assert len(fake.requests_to("GET", "/v1/jobs/job_1")) >= 1


def test_wait_timeout() -> None:
    fake = FakeServer()
    fake.outcome = "never"
    fake.stream_mode = "close"

    async def scenario(client: AsyncClient) -> Job:
        job = await client.submit("qwen-edit-multiangle-2511", {"images": ["a"]})
        return await client.wait(job.id, timeout=0.2)

    with pytest.raises(WaitTimeout):
        run(fake, scenario)
    assert fake.jobs["job_1"]["status"] == "queued"


def test_a_coroutine_callback_is_awaited() -> None:
    fake = FakeServer()
    seen: list[float] = []

    async def on_progress(event: JobEvent) -> None:
        await asyncio.sleep(0)
        seen.append(event.progress)

    async def scenario(client: AsyncClient) -> Job:
        job = await client.submit("qwen-edit-multiangle-2511", {"images": ["a"]})
        return await client.wait(job.id, on_progress=on_progress)

    run(fake, scenario)
    assert seen[-1] == 1.0
    assert len(seen) == 7


def test_iter_jobs_follows_cursors() -> None:
    fake = FakeServer()
    for k in range(3):
        fake.add_job("qwen-edit-multiangle-2511", {"images": [str(k)]})

    async def scenario(client: AsyncClient) -> list[str]:
        return [job.id async for job in client.iter_jobs(page_size=2)]

    assert run(fake, scenario) == ["job_3", "job_2", "job_1"]
    assert len(fake.requests_to("GET", "/v1/jobs")) == 2


def test_errors_map_as_in_the_sync_client() -> None:
    answers = iter(
        [error(429, "rate_limited", "slow down", **{"retry-after": "3"}), httpx.Response(502, text="")]
    )
    transport = httpx.MockTransport(lambda _request: next(answers))

    async def scenario() -> None:
        async with AsyncClient(API, transport=transport) as client:
            with pytest.raises(RateLimitError) as caught:
                await client.get("job_1")
            assert caught.value.retry_after == 3.0
            with pytest.raises(ServerError, match="HTTP 502 Bad Gateway"):
                await client.health()

    asyncio.run(scenario())


def test_every_public_method_is_documented_as_its_sync_twin() -> None:
    public = [name for name in vars(AsyncClient) if not name.startswith("_")]
    assert {"edit", "events", "wait", "cancel", "upload", "health"} <= set(public)
    for name in public:
        doc = inspect.getdoc(getattr(AsyncClient, name))
        assert doc, name
        assert doc == inspect.getdoc(getattr(Client, name)), name


@pytest.mark.parametrize("method", ["submit", "edit", "orbit", "generate", "batch", "webhook_secret"])
def test_the_submitting_methods_take_the_same_arguments_as_the_sync_ones(method: str) -> None:
    sync, async_ = inspect.signature(getattr(Client, method)), inspect.signature(getattr(AsyncClient, method))
    assert list(async_.parameters.values()) == list(sync.parameters.values())
    assert inspect.iscoroutinefunction(getattr(AsyncClient, method))
    if method != "webhook_secret":
        keyword_only = [p.name for p in sync.parameters.values() if p.kind is p.KEYWORD_ONLY]
        assert {"webhook_url", "webhook_events", "time_limits"} <= set(keyword_only)


def test_edit_and_batch_send_the_webhook_and_time_limits_and_read_them_back() -> None:
    fake = FakeServer()
    hook = "https://example.com/hooks/reangle"

    async def scenario(client: AsyncClient) -> tuple[Job, list[Job], WebhookSecret]:
        job = await client.edit(PNG, azimuth=90, webhook_url=hook, time_limits={"run_s": 45})
        batch = await client.batch(
            "qwen-image-edit-2511", [{"images": ["asset_a"]}], webhook_url=hook, webhook_events=["progress"]
        )
        return job, batch.jobs, await client.webhook_secret()

    job, batch_jobs, secret = run(fake, scenario)
    submitted = json.loads(fake.requests_to("POST", "/v1/jobs")[0].content)
    assert (submitted["webhook_url"], submitted["time_limits"]) == (hook, {"run_s": 45})
    assert "webhook_events" not in submitted
    assert job.time_limits == TimeLimits(run_s=45)
    batch = json.loads(fake.requests_to("POST", "/v1/batches")[0].content)
    assert (batch["webhook_url"], batch["webhook_events"]) == (hook, ["progress"])
    assert "time_limits" not in batch
    assert [job.time_limits for job in batch_jobs] == [None]
    assert secret.secret == WEBHOOK_SECRET


def test_a_bad_time_limit_fails_before_the_upload() -> None:
    fake = FakeServer()

    async def scenario(client: AsyncClient) -> Job:
        return await client.generate("a fox", model="wan-2.7-image", images=[PNG], time_limits={"total_s": 0})

    with pytest.raises(ValueError, match=r"time_limits\.total_s is 0"):
        run(fake, scenario)
    assert fake.requests == []


def test_events_open_a_broken_stream_again_until_the_job_ends() -> None:
    fake = FakeServer(steps=3)
    fake.stream_mode = "break"

    async def follow(client: AsyncClient) -> list[JobEvent]:
        job = await client.submit("qwen-edit-multiangle-2511", {"images": ["asset_1"]})
        return [event async for event in client.events(job.id)]

    events = run(fake, follow)
    assert isinstance(events[-1], Job)
    assert events[-1].status == "succeeded"
    assert sum(isinstance(event, ProgressEvent) for event in events) == 3
