"""Compatibility: the real `runpod` 1.12.0 client against a running reangle server (fake engine), and raw HTTP
checks of what the client cannot show (error shapes, the runsync bound, retry under the same id).

The client reads `runpod.endpoint_url_base` and `runpod.api_key` when an Endpoint is built; the fixtures set
them with monkeypatch, which restores the module globals after each test.
"""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import pytest
import requests
import runpod
from PIL import Image

from reangle.core.models import CAMERA_EDIT
from tests.dialects.conftest import API_KEY, OTHER_KEY, RunningServer, png_base64, start_server, stop_server

ENDPOINT_ID = "qwen-camera-edit"
ORIGINAL_BASE, ORIGINAL_KEY = runpod.endpoint_url_base, runpod.api_key
#: 100 fake steps at 0.02 s: a job that runs about 2 s, long enough to catch it queued or running.
SLOW = {"num_inference_steps": 100}


def point_client_at(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """Set the client's base URL and key (for this test only); returns the base URL."""
    url = f"{server.url}/runpod/v2"
    monkeypatch.setattr(runpod, "endpoint_url_base", url)
    monkeypatch.setattr(runpod, "api_key", API_KEY)
    return url


@pytest.fixture
def base(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> str:
    return point_client_at(server, monkeypatch)


@pytest.fixture
def endpoint(base: str) -> runpod.Endpoint:
    return runpod.Endpoint(ENDPOINT_ID)


@pytest.fixture
def http(base: str) -> Iterator[httpx.Client]:
    """Raw HTTP on the endpoint, with the SDK's headers."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=f"{base}/{ENDPOINT_ID}", headers=headers, timeout=30) as client:
        yield client


def decode_png(data: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    assert image.format == "PNG"
    return image


def camera_input(**extra: Any) -> dict[str, Any]:
    return {"image": png_base64(), "prompt": "", "azimuth": 90, "elevation": 30, **extra}


def wait_for(http: httpx.Client, job_id: str, statuses: set[str], timeout: float = 20) -> dict[str, Any]:
    """Poll /status quickly (the SDK polls once a second) until the status is one of `statuses`."""
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = http.get(f"/status/{job_id}").json()
        if body["status"] in statuses:
            return body
        assert time.monotonic() < deadline, f"{job_id} stayed {body['status']}"
        time.sleep(0.02)


def settle(http: httpx.Client, *job_ids: str) -> None:
    """Cancel what a test left unfinished and wait for it to end, so later tests find an idle runner."""
    for job_id in job_ids:
        http.post(f"/cancel/{job_id}")
        wait_for(http, job_id, {"COMPLETED", "FAILED", "CANCELLED"})


# the SDK --------------------------------------------------------------------------------------------------


def test_run_sync_returns_base64_png_of_the_requested_size(endpoint: runpod.Endpoint) -> None:
    output = endpoint.run_sync(camera_input(width=128, height=96, distance=0.6), timeout=60)
    assert list(output) == ["images"]
    assert len(output["images"]) == 1
    assert decode_png(output["images"][0]).size == (128, 96)


def test_run_then_status_and_output_poll_with_the_sdk(endpoint: runpod.Endpoint) -> None:
    job = endpoint.run({"input": camera_input(width=64, height=48, seed=7)})
    assert job.job_id.startswith("job_")
    assert job.status() in {"IN_QUEUE", "IN_PROGRESS", "COMPLETED"}
    output = job.output(timeout=30)  # the SDK's own loop: status() + sleep(1)
    assert job.status() == "COMPLETED"
    assert decode_png(output["images"][0]).size == (64, 48)


def test_prompt_list_is_a_batch_with_one_image_per_item(
    endpoint: runpod.Endpoint, http: httpx.Client
) -> None:
    request = {
        "images": [png_base64(96, 64), png_base64(64, 96)],
        "prompt": ["make it sunset", "make it rainy"],
        "azimuth": 180,
    }
    output = endpoint.run_sync(request, timeout=60)
    sizes = [decode_png(image).size for image in output["images"]]
    assert len(sizes) == 2
    assert sizes[0][0] > sizes[0][1]  # item order kept: each output follows its own input's aspect
    assert sizes[1][0] < sizes[1][1]
    assert output["images"][0] != output["images"][1]

    job = endpoint.run(request)
    assert job.job_id.startswith("batch_")  # one RunPod id for the whole batch
    body = wait_for(http, job.job_id, {"COMPLETED"})
    assert len(body["output"]["images"]) == 2
    assert body["executionTime"] >= 0
    assert body["delayTime"] >= 0


def test_rewrite_prompt_rewrites_the_words_and_the_job_records_both(
    endpoint: runpod.Endpoint, server: RunningServer, http: httpx.Client
) -> None:
    job = endpoint.run(camera_input(prompt="make it winter", rewrite_prompt=True, width=64, height=48))
    wait_for(http, job.job_id, {"COMPLETED"})  # sooner than the SDK's once-a-second loop
    assert job.output(timeout=30) is not None
    headers = {"Authorization": f"Bearer {API_KEY}"}
    native = httpx.get(f"{server.url}/v1/jobs/{job.job_id}", headers=headers).json()
    (asset,) = native["output"]["assets"]
    assert asset["plan"]["rewrite"]["original_prompt"] == "make it winter"
    assert asset["plan"]["rewrite"]["rewritten"] is True
    assert asset["plan"]["prompt"].startswith(
        "<sks> right side view elevated shot medium shot make it winter ("
    )


def test_one_prompt_with_several_images_is_one_reference_edit(endpoint: runpod.Endpoint) -> None:
    output = endpoint.run_sync(
        {"images": [png_base64(), png_base64(64, 64)], "prompt": "style of image 2 on image 1"}, timeout=60
    )
    assert len(output["images"]) == 1


def test_failing_job_is_failed_with_an_error(endpoint: runpod.Endpoint, http: httpx.Client) -> None:
    assert endpoint.run_sync(camera_input(prompt="fake:fail"), timeout=60) is None  # as the SDK treats FAILED
    job = endpoint.run(camera_input(prompt="please fake:fail"))
    wait_for(http, job.job_id, {"FAILED"})
    assert job.output(timeout=30) is None
    assert job.status() == "FAILED"
    body = http.get(f"/status/{job.job_id}").json()
    assert body["status"] == "FAILED"
    assert "output" not in body
    error = json.loads(body["error"])
    assert error["error_type"] == "engine_error"
    assert "fake:fail" in error["error_message"]


def test_cancel_a_running_and_a_queued_job(endpoint: runpod.Endpoint, http: httpx.Client) -> None:
    running = endpoint.run(camera_input(**SLOW))
    wait_for(http, running.job_id, {"IN_PROGRESS"})
    queued = endpoint.run(camera_input(**SLOW))
    try:
        assert queued.status() == "IN_QUEUE"
        assert queued.cancel() == {"id": queued.job_id, "status": "CANCELLED"}
        assert running.cancel() == {"id": running.job_id, "status": "CANCELLED"}
        assert running.status() == "CANCELLED"
        assert running.output() is None
    finally:
        settle(http, running.job_id, queued.job_id)


def test_cancel_a_finished_job_answers_its_status(endpoint: runpod.Endpoint, http: httpx.Client) -> None:
    job = endpoint.run(camera_input())
    wait_for(http, job.job_id, {"COMPLETED"})
    assert job.cancel() == {"id": job.job_id, "status": "COMPLETED"}
    assert "output" in http.get(f"/status/{job.job_id}").json()


def test_cancel_a_batch_cancels_every_item(endpoint: runpod.Endpoint, http: httpx.Client) -> None:
    job = endpoint.run({"images": [png_base64()] * 3, "prompt": ["a", "b", "c"], **SLOW})
    try:
        wait_for(http, job.job_id, {"IN_PROGRESS"})
        assert job.cancel()["status"] == "CANCELLED"
        assert wait_for(http, job.job_id, {"CANCELLED"}, timeout=5)["status"] == "CANCELLED"
    finally:
        settle(http, job.job_id)


def test_stream_delivers_the_output_once_then_ends(endpoint: runpod.Endpoint, http: httpx.Client) -> None:
    job = endpoint.run(camera_input(width=32, height=32))
    # the SDK loops until a final status comes with an empty stream: a replaying server would never end it
    chunks = list(itertools.islice(job.stream(), 3))
    assert len(chunks) == 1
    assert decode_png(chunks[0]["images"][0]).size == (32, 32)
    assert http.get(f"/stream/{job.job_id}").json() == {
        **{k: v for k, v in http.get(f"/status/{job.job_id}").json().items() if k != "output"},
        "stream": [],
    }


def test_stream_of_a_cancelled_job_is_gone(endpoint: runpod.Endpoint, http: httpx.Client) -> None:
    job = endpoint.run(camera_input(**SLOW))
    job.cancel()
    settle(http, job.job_id)
    response = http.get(f"/stream/{job.job_id}")
    assert response.status_code == 410
    assert "cancelled" in response.json()["error"]


def test_health_counts_this_keys_jobs(endpoint: runpod.Endpoint) -> None:
    before = endpoint.health()
    assert set(before) == {"jobs", "workers"}
    assert set(before["jobs"]) == {"completed", "failed", "inProgress", "inQueue", "retried"}
    assert all(isinstance(n, int) for n in [*before["jobs"].values(), *before["workers"].values()])
    assert before["workers"]["idle"] + before["workers"]["running"] == 1
    endpoint.run_sync(camera_input(), timeout=60)
    endpoint.run_sync(camera_input(prompt="fake:fail"), timeout=60)
    after = endpoint.health()
    assert after["jobs"]["completed"] == before["jobs"]["completed"] + 1
    assert after["jobs"]["failed"] == before["jobs"]["failed"] + 1


def test_a_null_prompt_is_no_prompt(endpoint: runpod.Endpoint) -> None:
    output = endpoint.run_sync(camera_input(prompt=None, width=128, height=96), timeout=60)
    assert decode_png(output["images"][0]).size == (128, 96)


def test_health_counts_a_retried_job_once_as_retried(base: str) -> None:
    endpoint_id = f"health-retry-{time.time_ns()}"  # an endpoint of its own: counts start at zero
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=f"{base}/{endpoint_id}", headers=headers, timeout=30) as http:
        job_id = http.post("/run", json={"input": camera_input(prompt="fake:fail")}).json()["id"]
        wait_for(http, job_id, {"FAILED"})
        assert http.post(f"/retry/{job_id}").status_code == 200
        wait_for(http, job_id, {"FAILED"})
    counts = runpod.Endpoint(endpoint_id).health()["jobs"]
    assert counts == {"completed": 0, "failed": 1, "inProgress": 0, "inQueue": 0, "retried": 1}


def test_purge_queue_cancels_only_this_keys_queued_jobs(
    endpoint: runpod.Endpoint, http: httpx.Client, base: str
) -> None:
    running = endpoint.run(camera_input(**SLOW))
    wait_for(http, running.job_id, {"IN_PROGRESS"})
    mine = [endpoint.run(camera_input(**SLOW)) for _ in range(2)]
    theirs = runpod.Endpoint(ENDPOINT_ID, api_key=OTHER_KEY).run(camera_input(**SLOW))
    other = httpx.Client(base_url=http.base_url, headers={"Authorization": f"Bearer {OTHER_KEY}"}, timeout=30)
    try:
        assert endpoint.purge_queue() == {"removed": 2, "status": "completed"}
        assert [job.status() for job in mine] == ["CANCELLED", "CANCELLED"]
        assert running.status() == "IN_PROGRESS"
        assert other.get(f"/status/{theirs.job_id}").json()["status"] == "IN_QUEUE"
    finally:
        settle(http, running.job_id)
        settle(other, theirs.job_id)
        other.close()


def test_an_endpoint_sees_and_purges_only_its_own_jobs(
    endpoint: runpod.Endpoint, http: httpx.Client, base: str
) -> None:
    """Two RunPod apps on one key and one model, and a job sent through the native API: a purge, a health
    count or a lookup on one endpoint never reaches the others' jobs."""
    running = endpoint.run(camera_input(**SLOW))
    wait_for(http, running.job_id, {"IN_PROGRESS"})
    mine = endpoint.run(camera_input(**SLOW))
    other_app = runpod.Endpoint("another-app")
    theirs = other_app.run(camera_input(**SLOW))
    native_client = httpx.Client(base_url=base.removesuffix("/runpod/v2"), headers=http.headers, timeout=30)
    native_input = {"images": [png_base64()], "azimuth": 90, **SLOW}
    native = native_client.post("/v1/jobs", json={"model": CAMERA_EDIT, "input": native_input})
    assert native.status_code == 202, native.text
    native_id = native.json()["id"]
    try:
        assert endpoint.purge_queue() == {"removed": 1, "status": "completed"}
        assert mine.status() == "CANCELLED"
        assert theirs.status() == "IN_QUEUE"
        assert native_client.get(f"/v1/jobs/{native_id}").json()["status"] == "queued"
        for foreign in (theirs.job_id, native_id):
            refused = http.post(f"/cancel/{foreign}")
            assert refused.status_code == 404
            assert refused.json() == {"error": f"no job {foreign} on endpoint {ENDPOINT_ID}"}
        assert other_app.health()["jobs"]["inQueue"] == 1  # its own job only
    finally:
        settle(http, running.job_id)
        other = httpx.Client(base_url=f"{base}/another-app", headers=http.headers, timeout=30)
        settle(other, theirs.job_id)
        other.close()
        native_client.post(f"/v1/jobs/{native_id}/cancel")
        native_client.close()


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"azimuth": "abc"}, "azimuth"),
        ({"images": [png_base64()] * 2, "image": None, "prompt": ["a", "b", "c"]}, "3 prompts for 2 images"),
        ({"image": "not base64 at all!"}, "input.image:"),  # as sent, though the core takes a list
        ({"image": None, "images": [png_base64(), "not base64 at all!"]}, "input.images.1:"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
    ],
)
def test_bad_input_is_the_clients_http_error(
    endpoint: runpod.Endpoint, extra: dict[str, Any], words: str
) -> None:
    request = {key: value for key, value in camera_input(**extra).items() if value is not None}
    with pytest.raises(requests.HTTPError) as caught:
        endpoint.run_sync(request, timeout=60)
    assert caught.value.response.status_code == 400
    assert words in caught.value.response.json()["error"]


def test_bad_batch_item_is_named_as_the_client_sent_it(endpoint: runpod.Endpoint) -> None:
    with pytest.raises(requests.HTTPError) as caught:
        endpoint.run({"images": [png_base64(), "####"], "prompt": ["a", "b"]})
    assert caught.value.response.json()["error"].startswith("input.images.1:")


def test_wrong_key_is_the_clients_401(base: str) -> None:
    with pytest.raises(RuntimeError, match="401 Unauthorized"):
        runpod.Endpoint(ENDPOINT_ID, api_key="wrong-key").run_sync(camera_input())


def test_async_client_runs_and_polls(base: str) -> None:
    async def scenario() -> list[Any]:
        async with aiohttp.ClientSession() as session:
            endpoint = runpod.AsyncioEndpoint(ENDPOINT_ID, session)
            plain = await endpoint.run(camera_input(width=32, height=32))
            wrapped = await endpoint.run({"input": camera_input(width=48, height=32)})  # sent double-wrapped
            return [await plain.output(timeout=30), await wrapped.output(timeout=30), await endpoint.health()]

    plain, wrapped, health = asyncio.run(scenario())
    assert decode_png(plain["images"][0]).size == (32, 32)
    assert decode_png(wrapped["images"][0]).size == (48, 32)
    assert "inQueue" in health["jobs"]


# raw HTTP -------------------------------------------------------------------------------------------------


def test_bare_key_authorizes_like_bearer(server: RunningServer) -> None:
    response = httpx.post(
        f"{server.url}/runpod/v2/{ENDPOINT_ID}/runsync",
        headers={"Authorization": API_KEY},
        json={"input": camera_input(width=32, height=32)},
        timeout=30,
    )
    assert response.status_code == 200
    assert response.json()["status"] == "COMPLETED"


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status", "words"),
    [
        ("GET", "/nope", {}, None, 404, "no route"),
        ("GET", "/runpod/v2", {}, None, 404, "no route"),
        ("GET", "/status/job_doesnotexist", None, None, 404, "no job job_doesnotexist"),
        ("GET", "/run", None, None, 405, "POST"),
        ("DELETE", "/status/job_x", None, None, 405, "GET, POST"),
        ("OPTIONS", "/health", None, None, 405, "GET"),
        ("POST", "/run", {}, b'{"input": {}}', 401, "API key is required"),
        ("POST", "/run", {"Authorization": "Bearer nope"}, b"{}", 401, "not valid"),
        ("POST", "/run", None, b"{not json", 400, "not valid JSON"),
        ("POST", "/run", None, b'{"input": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "too deeply"),
        ("POST", "/run", None, b"", 400, "empty"),
        ("POST", "/runsync?wait=soon", None, b'{"input": {}}', 400, "wait"),
        (
            "POST",
            "/run",
            None,
            b'{"input": {"image": "aW1n"}, "webhook": "https://x.test/h"}',
            400,
            "webhook",
        ),
        ("POST", "/retry/job_doesnotexist", None, None, 404, "no job"),
    ],
)
def test_every_error_is_runpod_json(
    server: RunningServer,
    method: str,
    path: str,
    headers: dict[str, str] | None,
    body: bytes | None,
    status: int,
    words: str,
) -> None:
    # paths are relative to the endpoint, except those that name the prefix themselves
    url = server.url + (path if path.startswith("/runpod") else f"/runpod/v2/{ENDPOINT_ID}{path}")
    sent = {"Authorization": f"Bearer {API_KEY}"} if headers is None else headers
    response = httpx.request(
        method, url, headers={**sent, "Content-Type": "application/json"}, content=body, timeout=30
    )
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    payload = response.json()
    assert list(payload) == ["error"]
    assert isinstance(payload["error"], str)
    assert words in payload["error"]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("/runsync?wait=-5", "wait"),
        ("/runsync?wait=abc", "wait"),
        ("/runsync?ttl=abc", "ttl"),
        ("/runsync?ttl=-1", "ttl"),
        ("/status/job_doesnotexist?ttl=-1", "ttl"),
        ("/status/job_doesnotexist?ttl=abc", "ttl"),
    ],
)
def test_a_bad_query_value_is_a_400_naming_it_and_runs_nothing(
    http: httpx.Client, path: str, value: str
) -> None:
    def jobs_seen() -> int:
        return sum(http.get("/health").json()["jobs"].values())

    before = jobs_seen()
    method = "POST" if path.startswith("/runsync") else "GET"
    response = http.request(method, path, json={"input": camera_input()} if method == "POST" else None)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"].startswith(f"{value}: ")
    assert jobs_seen() == before


def test_runsync_answers_in_progress_when_its_wait_runs_out(http: httpx.Client) -> None:
    started = time.monotonic()
    body = http.post("/runsync", params={"wait": 1000}, json={"input": camera_input(**SLOW)}).json()
    elapsed = time.monotonic() - started
    try:
        assert body["status"] in {"IN_QUEUE", "IN_PROGRESS"}
        assert "output" not in body
        assert 0.9 < elapsed < 10  # held about 1 s; the job itself runs about 2 s
    finally:
        settle(http, body["id"])


def test_cancel_and_purge_take_an_empty_json_body(http: httpx.Client) -> None:
    """As the sync SDK sends them: Content-Type JSON with Content-Length 0."""
    headers = {"Content-Type": "application/json", "Content-Length": "0"}
    assert http.post("/purge-queue", headers=headers).json()["status"] == "completed"
    job_id = http.post("/run", json={"input": camera_input()}).json()["id"]
    assert http.post(f"/cancel/{job_id}", headers=headers).status_code == 200
    settle(http, job_id)


def test_status_and_stream_also_answer_post(http: httpx.Client) -> None:
    job_id = http.post("/run", json={"input": camera_input()}).json()["id"]
    wait_for(http, job_id, {"COMPLETED"})
    assert http.post(f"/status/{job_id}").json()["status"] == "COMPLETED"
    assert http.post(f"/stream/{job_id}").json()["status"] == "COMPLETED"


def test_retry_queues_a_new_attempt_under_the_same_id(server: RunningServer, http: httpx.Client) -> None:
    job_id = http.post("/run", json={"input": camera_input(prompt="fake:fail", **SLOW)}).json()["id"]
    first = wait_for(http, job_id, {"FAILED"})
    native = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"})

    assert http.post(f"/retry/{job_id}").json() == {"id": job_id, "status": "IN_QUEUE"}
    assert http.get(f"/status/{job_id}").json()["status"] in {"IN_QUEUE", "IN_PROGRESS"}
    refused = http.post(f"/retry/{job_id}")  # the new attempt is not failed (yet)
    assert refused.status_code == 409
    assert "only FAILED or TIMED_OUT" in refused.json()["error"]
    assert native.get(f"/v1/jobs/{job_id}").json()["status"] == "failed"  # the core job never changes

    second = wait_for(http, job_id, {"FAILED"})  # the new attempt ran, and failed as the first did
    assert second["id"] == job_id
    assert json.loads(second["error"]) == json.loads(first["error"])
    assert http.post(f"/retry/{job_id}").json()["status"] == "IN_QUEUE"  # and again, from the newest attempt
    canceled = http.post(f"/cancel/{job_id}").json()
    assert canceled["id"] == job_id
    # the third attempt is canceled, unless (on a loaded machine) it reached its failure first
    wait_for(http, job_id, {"CANCELLED", "FAILED"})
    native.close()


def test_retry_of_a_batch_reruns_only_unsucceeded_items(http: httpx.Client) -> None:
    # 40 steps: the failing item fails after about 0.4 s, long enough to see its new attempt unfinished
    body = {
        "input": {"images": [png_base64()] * 2, "prompt": ["fine", "fake:fail"], "num_inference_steps": 40}
    }
    batch_id = http.post("/run", json=body).json()["id"]
    failed = wait_for(http, batch_id, {"FAILED"})
    assert "batch item 1" in json.loads(failed["error"])["error_message"]
    # item 0 succeeded and stays; item 1 is queued again, so the batch as a whole is in progress
    assert http.post(f"/retry/{batch_id}").json() == {"id": batch_id, "status": "IN_PROGRESS"}
    assert http.get(f"/status/{batch_id}").json()["status"] == "IN_PROGRESS"
    assert wait_for(http, batch_id, {"FAILED"})["status"] == "FAILED"


def test_retry_of_a_completed_job_is_refused(http: httpx.Client) -> None:
    job_id = http.post("/runsync", json={"input": camera_input()}).json()["id"]
    response = http.post(f"/retry/{job_id}")
    assert response.status_code == 409
    assert "COMPLETED" in response.json()["error"]


# policy ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "words"),
    [
        ({"executionTimeout": 1000}, "policy.executionTimeout"),
        ({"ttl": 5000}, "policy.ttl"),
        ({"ttl": 8 * 24 * 3600 * 1000}, "policy.ttl"),
        ({"executionTimeout": "soon"}, "policy.executionTimeout"),
        ({"timeout": 60000}, "policy.timeout"),
        ("fast", "policy"),
    ],
)
def test_a_policy_out_of_runpods_bounds_is_refused(http: httpx.Client, policy: Any, words: str) -> None:
    response = http.post("/run", json={"input": camera_input(), "policy": policy})
    assert response.status_code == 400
    assert words in response.json()["error"]


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Fake steps of 0.1 s: 100 steps run 10 s, past RunPod's shortest execution timeout (5 s)."""
    running = start_server(tmp_path_factory.mktemp("runpod-slow"), env={"REANGLE_FAKE_STEP_SECONDS": "0.1"})
    yield running
    stop_server(running)


def test_a_job_past_its_execution_timeout_is_timed_out(
    slow_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    point_client_at(slow_server, monkeypatch)
    policy = {"executionTimeout": 5000, "lowPriority": True, "ttl": 60000}
    job = runpod.Endpoint(ENDPOINT_ID).run({"input": camera_input(**SLOW), "policy": policy})
    assert job.output(timeout=60) is None  # the SDK's wait ends on TIMED_OUT, with no output
    assert job.status() == "TIMED_OUT"

    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=f"{slow_server.url}/runpod/v2/{ENDPOINT_ID}", headers=headers) as http:
        body = http.get(f"/status/{job.job_id}").json()
        error = json.loads(body["error"])
        assert error["error_type"] == "timed_out"
        assert "run time limit (5 s)" in error["error_message"]
        assert 5000 <= body["executionTime"] < 10000  # stopped, not run to its end
        assert http.post(f"/retry/{job.job_id}").json() == {"id": job.job_id, "status": "IN_QUEUE"}
        settle(http, job.job_id)


# endpoint ids -> models -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mapped_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server where endpoint `ep-instruct` serves the instruction model (REANGLE_RUNPOD_ENDPOINT_MODELS)."""
    running = start_server(
        tmp_path_factory.mktemp("runpod-mapped"),
        env={"REANGLE_RUNPOD_ENDPOINT_MODELS": json.dumps({"ep-instruct": "qwen-image-edit-2511"})},
    )
    yield running
    stop_server(running)


def test_endpoint_models_setting_picks_the_model(
    mapped_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    point_client_at(mapped_server, monkeypatch)
    instruct = runpod.Endpoint("ep-instruct")
    output = instruct.run_sync({"image": png_base64(), "prompt": "add a hat", "width": 32, "height": 32})
    assert decode_png(output["images"][0]).size == (32, 32)
    with pytest.raises(requests.HTTPError) as caught:
        instruct.run({"image": png_base64(), "prompt": "add a hat", "azimuth": 90})
    assert "takes no camera pose" in caught.value.response.json()["error"]

    camera_job = runpod.Endpoint("any-other-id").run(camera_input())
    native = httpx.get(
        f"{mapped_server.url}/v1/jobs/{camera_job.job_id}", headers={"Authorization": f"Bearer {API_KEY}"}
    ).json()
    assert native["model"] == "qwen-edit-multiangle-2511"
    assert camera_job.output(timeout=30) is not None
    missing = httpx.get(  # a job is found only under the endpoint it was sent to
        f"{mapped_server.url}/runpod/v2/ep-instruct/status/{camera_job.job_id}",
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert missing.status_code == 404
    assert "on endpoint ep-instruct" in missing.json()["error"]


# tiny engine ----------------------------------------------------------------------------------------------


@pytest.mark.tiny
def test_tiny_engine_through_the_client(tiny_server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    point_client_at(tiny_server, monkeypatch)
    output = runpod.Endpoint(ENDPOINT_ID).run_sync(
        {
            "image": png_base64(64, 48),
            "prompt": "",
            "azimuth": 45,
            "width": 64,
            "height": 48,
            "num_inference_steps": 2,
        },
        timeout=300,
    )
    assert decode_png(output["images"][0]).size == (64, 48)


def test_module_globals_are_restored_after_each_test() -> None:
    """Runs last in this file: the base URL and key the fixtures set did not outlive their tests."""
    assert runpod.endpoint_url_base == ORIGINAL_BASE
    assert runpod.api_key == ORIGINAL_KEY


def test_purge_queue_leaves_a_batch_under_way_and_counts_a_batch_as_one_job(
    endpoint: runpod.Endpoint, http: httpx.Client
) -> None:
    """A batch is one RunPod job: one whose first item runs is running, and goes on whole."""
    batch = endpoint.run({"images": [png_base64()] * 2, "prompt": ["a", "b"], **SLOW})
    wait_for(http, batch.job_id, {"IN_PROGRESS"})
    queued_batch = endpoint.run({"images": [png_base64()] * 2, "prompt": ["c", "d"], **SLOW})
    try:
        assert endpoint.purge_queue() == {"removed": 1, "status": "completed"}
        assert queued_batch.status() == "CANCELLED"
        assert batch.status() == "IN_PROGRESS"
        assert wait_for(http, batch.job_id, {"COMPLETED", "CANCELLED"}, timeout=60)["status"] == "COMPLETED"
    finally:
        settle(http, batch.job_id, queued_batch.job_id)
