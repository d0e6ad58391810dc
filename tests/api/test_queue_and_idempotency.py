"""Idempotent submits under concurrency, and the queue limit (429 with Retry-After, nothing accepted lost)."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import httpx

from reangle.core.models import CAMERA_EDIT, INSTRUCTION_EDIT
from tests.api.conftest import (
    KEY_A,
    KEY_B,
    ServerFactory,
    ServerProcess,
    assert_error,
    data_url,
    edit_input,
    hold_input,
    png,
    running,
    slow_input,
    submit,
    succeeded,
    upload,
    wait_job,
)


async def post_concurrently(
    server: ServerProcess, key: str, body: dict[str, Any], idempotency_key: str, count: int
) -> list[httpx.Response]:
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": idempotency_key}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as client:
        return await asyncio.gather(*(client.post("/v1/jobs", json=body) for _ in range(count)))


def test_concurrent_submits_with_one_idempotency_key_make_one_job(shared_server: ServerProcess) -> None:
    key = shared_server.new_key()
    with shared_server.client(key) as api:
        body: dict[str, Any] = {"model": CAMERA_EDIT, "input": edit_input(upload(api)["id"])}
        responses = asyncio.run(post_concurrently(shared_server, key, body, "submit-once", 10))
        assert [r.status_code for r in responses] == [202] * 10, [r.text for r in responses]
        ids = {r.json()["id"] for r in responses}
        assert len(ids) == 1
        [job_id] = ids
        stored = api.get("/v1/jobs", params={"limit": 100}).json()["data"]
        assert [job["id"] for job in stored] == [job_id]
        succeeded(api, job_id)

        replay = api.post("/v1/jobs", json=body, headers={"Idempotency-Key": "submit-once"})
        # the job it stands for has finished by now: the answer is that finished job, as with ?wait
        assert (replay.status_code, replay.json()["id"], replay.json()["status"]) == (
            200,
            job_id,
            "succeeded",
        )
        changed = body | {"input": body["input"] | {"horizontal_angle": 180}}
        conflict = api.post("/v1/jobs", json=changed, headers={"Idempotency-Key": "submit-once"})
        assert_error(conflict, 409, "conflict", "submit-once", job_id)
        assert len(api.get("/v1/jobs").json()["data"]) == 1


def test_the_same_idempotency_key_of_another_api_key_is_another_job(shared_server: ServerProcess) -> None:
    first, second = shared_server.new_key(), shared_server.new_key()
    ids = []
    for key in (first, second):
        with shared_server.client(key) as api:
            body = {"model": CAMERA_EDIT, "input": edit_input(upload(api)["id"])}
            ids.append(
                api.post("/v1/jobs", json=body, headers={"Idempotency-Key": "shared-name"}).json()["id"]
            )
    assert ids[0] != ids[1]


def test_a_retry_that_uploads_its_image_again_is_the_same_request(api: httpx.Client) -> None:
    """As the SDK retries `edit("photo.png", idempotency_key=...)`: each try uploads the file anew."""
    first, again = upload(api, png(color=(1, 2, 3)))["id"], upload(api, png(color=(1, 2, 3)))["id"]
    other = upload(api, png(color=(9, 9, 9)))["id"]
    assert first != again
    headers = {"Idempotency-Key": "retry-with-upload"}

    job = api.post("/v1/jobs", json={"model": CAMERA_EDIT, "input": edit_input(first)}, headers=headers)
    retry = api.post("/v1/jobs", json={"model": CAMERA_EDIT, "input": edit_input(again)}, headers=headers)
    assert job.status_code == 202, job.text
    assert retry.status_code in (200, 202), retry.text
    assert retry.json()["id"] == job.json()["id"]
    changed = api.post("/v1/jobs", json={"model": CAMERA_EDIT, "input": edit_input(other)}, headers=headers)
    assert_error(changed, 409, "conflict", "retry-with-upload")


def test_an_orbits_retry_that_uploads_its_image_again_is_the_same_request(api: httpx.Client) -> None:
    first, again = upload(api, png(color=(4, 5, 6)))["id"], upload(api, png(color=(4, 5, 6)))["id"]
    other = upload(api, png(color=(8, 8, 8)))["id"]
    headers = {"Idempotency-Key": "orbit-retry"}

    def orbit(image: str) -> httpx.Response:
        body = {"model": CAMERA_EDIT, "kind": "orbit", "input": {"image": image, "azimuths": [0, 90]}}
        return api.post("/v1/jobs", json=body, headers=headers)

    job, retry = orbit(first), orbit(again)
    assert job.status_code == 202, job.text
    assert retry.status_code in (200, 202), retry.text
    assert retry.json()["id"] == job.json()["id"]
    assert_error(orbit(other), 409, "conflict", "orbit-retry")


def test_a_retry_that_sends_its_image_inline_instead_of_uploaded_is_the_same_request(
    api: httpx.Client,
) -> None:
    data = png(color=(7, 1, 7))
    uploaded = upload(api, data)["id"]
    headers = {"Idempotency-Key": "inline-retry"}
    ids = []
    for image in (uploaded, data_url(data), base64.b64encode(data).decode()):
        answer = api.post(
            "/v1/jobs", json={"model": CAMERA_EDIT, "input": edit_input(image)}, headers=headers
        )
        assert answer.status_code in (200, 202), answer.text
        ids.append(answer.json()["id"])
    assert len(set(ids)) == 1
    other = data_url(png(color=(7, 1, 8)))
    changed = api.post("/v1/jobs", json={"model": CAMERA_EDIT, "input": edit_input(other)}, headers=headers)
    assert_error(changed, 409, "conflict", "inline-retry")


def test_over_the_queue_limit_is_429_with_retry_after_and_nothing_accepted_is_lost(
    serve: ServerFactory,
) -> None:
    server = serve(max_queue=2)
    with server.client(KEY_A) as api:
        asset = upload(api)
        accepted = [submit(api, slow_input(asset["id"]))]  # 2 s: holds the runner
        wait_job(api, accepted[0]["id"], running)
        accepted.append(submit(api, edit_input(asset["id"], seed=1)))
        retried = {"model": CAMERA_EDIT, "input": edit_input(asset["id"], seed=2)}
        accepted.append(api.post("/v1/jobs", json=retried, headers={"Idempotency-Key": "retried"}).json())

        refused = api.post("/v1/jobs", json={"model": CAMERA_EDIT, "input": edit_input(asset["id"])})
        error = assert_error(refused, 429, "queue_full", "limit")
        assert int(refused.headers["Retry-After"]) > 0
        assert error["hint"]
        batch = {"model": INSTRUCTION_EDIT, "items": [{"input": {"images": [asset["id"]], "prompt": "x"}}]}
        assert_error(api.post("/v1/batches", json=batch), 429, "queue_full")
        assert httpx.get(f"{server.url}/healthz").json()["queue_depth"] == 2
        # a client retrying a submit that got through is answered with its job, not refused
        replay = api.post("/v1/jobs", json=retried, headers={"Idempotency-Key": "retried"})
        assert (replay.status_code, replay.json()["id"]) == (202, accepted[2]["id"])

        finished = [succeeded(api, job["id"]) for job in accepted]
        assert [job["attempt"] for job in finished] == [1, 1, 1]
        listed = api.get("/v1/jobs", params={"limit": 100}).json()["data"]
        assert sorted(job["id"] for job in listed) == sorted(job["id"] for job in accepted)
        # room again once the queue drains
        succeeded(api, submit(api, edit_input(asset["id"]))["id"])


def test_a_key_at_its_own_queue_or_stream_limit_is_429_and_other_keys_still_go(serve: ServerFactory) -> None:
    server = serve(max_queue_per_key=1, max_streams_per_key=1)
    with server.client(KEY_A) as a, server.client(KEY_B) as b:
        asset = upload(a)
        holder = submit(a, hold_input(asset["id"]), kind="orbit")  # holds the runner about 30 s
        wait_job(a, holder["id"], running)
        queued = submit(a, edit_input(asset["id"]))
        refused = a.post("/v1/jobs", json={"model": CAMERA_EDIT, "input": edit_input(asset["id"])})
        assert_error(refused, 429, "queue_full", "this API key has 1 queued job; each key may have 1")
        assert int(refused.headers["Retry-After"]) > 0
        other = submit(b, edit_input(upload(b)["id"]))
        assert other["status"] == "queued"

        with a.stream("GET", f"/v1/jobs/{holder['id']}/events") as first:
            assert first.status_code == 200
            too_many = a.get(f"/v1/jobs/{queued['id']}/events")
            assert_error(too_many, 429, "too_many_streams", "this API key has 1 event streams open")
            assert int(too_many.headers["Retry-After"]) > 0
            with b.stream("GET", f"/v1/jobs/{other['id']}/events") as others:
                assert others.status_code == 200  # a slot of its own
        # the closed stream gives its slot back once the server sees it gone (at its next event)
        deadline = time.monotonic() + 10
        while True:
            with a.stream("GET", f"/v1/jobs/{queued['id']}/events") as again:
                if again.status_code == 200 or time.monotonic() > deadline:
                    break
            time.sleep(0.05)
        assert again.status_code == 200
        a.post(f"/v1/jobs/{holder['id']}/cancel")
        succeeded(a, queued["id"])


def test_concurrent_submits_with_inline_images_never_overfill_the_queue(serve: ServerFactory) -> None:
    """The room check used to run before the awaited image ingest: 200 such submits all got in."""
    server = serve(max_queue=5)
    with server.client(KEY_A) as api:
        asset = upload(api)
        holder = submit(api, hold_input(asset["id"]), kind="orbit")  # holds the runner about 30 s
        wait_job(api, holder["id"], running)
        inline = base64.b64encode(png(48, 40)).decode()
        body = {"model": CAMERA_EDIT, "input": edit_input(inline)}
        responses = asyncio.run(post_many(server, KEY_A, body, 40))
        statuses = sorted(response.status_code for response in responses)
        assert statuses == [202] * 5 + [429] * 35
        assert httpx.get(f"{server.url}/healthz").json()["queue_depth"] == 5
        api.post(f"/v1/jobs/{holder['id']}/cancel")


async def post_many(
    server: ServerProcess, key: str, body: dict[str, Any], count: int
) -> list[httpx.Response]:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60) as client:
        return await asyncio.gather(*(client.post("/v1/jobs", json=body) for _ in range(count)))
