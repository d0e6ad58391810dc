"""Webhooks end to end: a real server (fake engine) POSTs to a real receiver on 127.0.0.1, and the signatures
are checked with the `standardwebhooks` package, not with reangle's own code."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from reangle.core.models import CAMERA_EDIT
from reangle.store.sqlite import SqliteStore
from tests.api.conftest import (
    KEY_A,
    REPO,
    ServerProcess,
    edit_input,
    free_port,
    png,
    server_env,
    slow_input,
    submit,
    succeeded,
    upload,
)
from tests.webhook_receiver import Receiver

RETRY_BASE_S = 0.2  # waits of 0.2, 0.8, 4 ... s between attempts (jittered by up to 20 %)
CLI = [sys.executable, "-m", "reangle"]
ENV_KEY_ID = "env_" + hashlib.sha256(KEY_A.encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, cache_dir: Any) -> Iterator[ServerProcess]:
    env = server_env(cache_dir, allow_private_urls="true", webhook_retry_base_s=RETRY_BASE_S)
    process = ServerProcess(data_dir=tmp_path_factory.mktemp("webhooks") / "data", env=env).start()
    yield process
    process.stop()
    process.assert_no_server_errors()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client(KEY_A) as client:
        yield client


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


def secret_of(client: httpx.Client) -> str:
    response = client.get("/v1/webhook-secret")
    assert response.status_code == 200, response.text
    secret: str = response.json()["secret"]
    return secret


def without_urls(job: dict[str, Any]) -> dict[str, Any]:
    """The job JSON without its download links (signed, their expiry may tick between two renderings)."""
    assets = [{k: v for k, v in asset.items() if k != "url"} for asset in job["output"]["assets"]]
    return job | {"output": {"assets": assets}}


def deliveries(server: ServerProcess, job_id: str) -> list[Any]:
    store = SqliteStore(server.data_dir / "reangle.sqlite3")
    try:
        return store.webhook_deliveries(job_id)
    finally:
        store.close()


def hooked_job(client: httpx.Client, url: str, **options: Any) -> dict[str, Any]:
    return submit(client, edit_input(upload(client)["id"]), webhook_url=url, **options)


def test_a_finished_job_is_delivered_once_signed_with_the_keys_secret(
    client: httpx.Client, receiver: Receiver
) -> None:
    job = hooked_job(client, receiver.url)
    done = succeeded(client, job["id"])
    [request] = receiver.wait_for(1)
    event = request.verified(secret_of(client))
    assert isinstance(event, dict)
    assert event["type"] == "job.succeeded"
    assert event["timestamp"].endswith("Z")
    assert without_urls(event["data"]) == without_urls(done)
    assert event["data"]["output"]["assets"][0]["url"].startswith(client.base_url.scheme + "://")
    assert request.headers["webhook-id"].startswith("evt_")
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
    assert httpx.get(event["data"]["output"]["assets"][0]["url"]).status_code == 200
    time.sleep(1.0)  # a few sender polls: nothing more comes
    assert len(receiver.requests) == 1


def test_failed_attempts_are_retried_with_the_same_event_id(client: httpx.Client) -> None:
    receiver = Receiver(statuses=[500, 503])
    try:
        job = hooked_job(client, receiver.url)
        succeeded(client, job["id"])
        requests = receiver.wait_for(3)
        assert len({r.headers["webhook-id"] for r in requests}) == 1
        assert len({r.body for r in requests}) == 1  # the same payload every time
        assert requests[2].at - requests[0].at >= RETRY_BASE_S * 0.8 + RETRY_BASE_S * 4 * 0.8
        secret = secret_of(client)
        for request in requests:
            request.verified(secret)
        time.sleep(1.0)
        assert len(receiver.requests) == 3
    finally:
        receiver.close()


def test_410_gives_the_delivery_up(client: httpx.Client, server: ServerProcess) -> None:
    receiver = Receiver(statuses=[410])
    try:
        job = hooked_job(client, receiver.url)
        succeeded(client, job["id"])
        receiver.wait_for(1)
        time.sleep(2.0)  # past the first retries had it been tried again
        assert len(receiver.requests) == 1
        [delivery] = deliveries(server, job["id"])
        assert delivery.given_up_at is not None
        assert delivery.next_attempt_at is None
        assert delivery.last_error == "HTTP 410 Gone"
    finally:
        receiver.close()


def test_a_hanging_receiver_delays_neither_jobs_nor_other_deliveries(
    client: httpx.Client, receiver: Receiver
) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        hanging = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        first = [hooked_job(client, hanging) for _ in range(3)]
        for job in first:
            succeeded(client, job["id"])
        started = time.monotonic()
        job = hooked_job(client, receiver.url)
        succeeded(client, job["id"], timeout=10)
        [request] = receiver.wait_for(1, timeout=5)
        assert request.at - started < 5  # an attempt at the silent receiver waits up to 10 s
        assert json.loads(request.body)["data"]["id"] == job["id"]


def test_a_receiver_that_is_down_gets_the_event_once_it_is_back(
    client: httpx.Client, server: ServerProcess
) -> None:
    port = free_port()  # nothing listens there yet: connections are refused
    job = hooked_job(client, f"http://127.0.0.1:{port}/hook")
    succeeded(client, job["id"])
    wait_attempts = time.monotonic() + 10
    while not deliveries(server, job["id"])[0].attempts >= 2:
        assert time.monotonic() < wait_attempts, deliveries(server, job["id"])
        time.sleep(0.1)
    [failing] = deliveries(server, job["id"])
    assert failing.last_error is not None
    assert "ConnectError" in failing.last_error
    receiver = Receiver(port=port)
    try:
        [request] = receiver.wait_for(1, timeout=20)
        assert request.headers["webhook-id"] == failing.id
        assert json.loads(request.body)["data"]["id"] == job["id"]
    finally:
        receiver.close()


def test_progress_subscribers_hear_processing_then_the_end(client: httpx.Client, receiver: Receiver) -> None:
    job = submit(
        client,
        slow_input(upload(client)["id"], steps=20),
        webhook_url=receiver.url,
        webhook_events=["progress"],
    )
    succeeded(client, job["id"])
    requests = receiver.wait_for(2)
    time.sleep(1.0)
    secret = secret_of(client)
    events = [request.verified(secret) for request in receiver.requests]
    # both may be due in the same poll of the sender, and then go out at once, in either order
    assert sorted(event["type"] for event in events) == ["job.processing", "job.succeeded"]  # type: ignore[index]
    assert len({request.headers["webhook-id"] for request in requests}) == 2


def test_a_batch_delivers_each_of_its_jobs(client: httpx.Client, receiver: Receiver) -> None:
    image = upload(client)["id"]
    items = [{"input": edit_input(image, seed=seed)} for seed in (1, 2)]
    response = client.post(
        "/v1/batches",
        json={"model": CAMERA_EDIT, "items": items, "webhook_url": receiver.url},
    )
    assert response.status_code == 202, response.text
    for job in response.json()["jobs"]:
        succeeded(client, job["id"])
    requests = receiver.wait_for(2)
    delivered = {json.loads(request.body)["data"]["id"] for request in requests}
    assert delivered == {job["id"] for job in response.json()["jobs"]}


def test_runpod_run_with_a_webhook_gets_the_status_body(client: httpx.Client, receiver: Receiver) -> None:
    body = {"input": {"image": base64.b64encode(png()).decode(), "width": 64, "height": 64}}
    response = client.post("/runpod/v2/ep-hook/run", json=body | {"webhook": receiver.url})
    assert response.status_code == 200, response.text
    runpod_id = response.json()["id"]
    [request] = receiver.wait_for(1, timeout=30)
    payload = request.verified(secret_of(client))
    status = client.get(f"/runpod/v2/ep-hook/status/{runpod_id}").json()
    assert payload == status
    assert status["status"] == "COMPLETED"
    assert base64.b64decode(status["output"]["images"][0])[:4] == b"\x89PNG"


def test_a_rotated_secret_signs_beside_the_new_one(
    client: httpx.Client, server: ServerProcess, receiver: Receiver
) -> None:
    old = secret_of(client)
    rotated = subprocess.run(
        [
            *CLI,
            "keys",
            "webhook-secret",
            "--key-id",
            ENV_KEY_ID,
            "--rotate",
            "--data-dir",
            str(server.data_dir),
        ],
        cwd=REPO,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    new = rotated.stdout.strip()
    assert new.startswith("whsec_")
    assert new != old
    assert client.get("/v1/webhook-secret").json() == {"secret": new, "previous": old}
    job = hooked_job(client, receiver.url)
    succeeded(client, job["id"])
    [request] = receiver.wait_for(1)
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert request.verified(new) == request.verified(old)


def test_the_secret_route_needs_a_key(server: ServerProcess) -> None:
    assert httpx.get(f"{server.url}/v1/webhook-secret").status_code == 401


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://127.0.0.1:9/hook", "a loopback address"),
        ("http://169.254.169.254/latest", "a link-local address"),
        ("http://10.1.2.3/hook", "a private address"),
        ("ftp://example.com/hook", "only http and https"),
        ("https://example.com/" + "a" * 2048, "2048"),
    ],
)
def test_a_webhook_the_ssrf_rules_refuse_is_422_naming_the_field(
    api: httpx.Client, url: str, words: str
) -> None:
    image = upload(api)["id"]
    response = api.post(
        "/v1/jobs",
        json={"model": CAMERA_EDIT, "input": edit_input(image), "webhook_url": url},
    )
    assert response.status_code == 422, response.text
    assert "webhook_url" in response.json()["error"]["message"]
    assert words in response.json()["error"]["message"]
    batch = api.post(
        "/v1/batches",
        json={
            "model": CAMERA_EDIT,
            "items": [{"input": edit_input(image)}],
            "webhook_url": url,
        },
    )
    assert batch.status_code == 422, batch.text
    assert "webhook_url" in batch.json()["error"]["message"]
    assert api.get("/v1/jobs").json()["data"] == []  # nothing was queued


def test_runpod_refuses_a_private_webhook_in_its_own_shape(api: httpx.Client) -> None:
    body = {"input": {"image": base64.b64encode(png()).decode()}, "webhook": "http://127.0.0.1:9/hook"}
    response = api.post("/runpod/v2/ep-hook/run", json=body)
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error"}
    assert response.json()["error"].startswith("webhook: refusing to call")


def test_unknown_webhook_events_are_422(api: httpx.Client) -> None:
    image = upload(api)["id"]
    response = api.post(
        "/v1/jobs",
        json={
            "model": CAMERA_EDIT,
            "input": edit_input(image),
            "webhook_url": "https://example.com/hook",
            "webhook_events": ["started"],
        },
    )
    assert response.status_code == 422, response.text
    assert "webhook_events" in response.json()["error"]["message"]
