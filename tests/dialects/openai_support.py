"""What the OpenAI dialect's tests share: the real `openai` client pointed at a test server, and the native
API read beside it, to count the jobs each call made."""

from __future__ import annotations

import base64
import io
import time
from typing import Any

import httpx
import openai
import pytest
from fastapi import Request
from openai.types import ImagesResponse
from PIL import Image

from tests.dialects.conftest import API_KEY, RunningServer


def client(server: RunningServer, key: str = API_KEY, **options: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key=key, **options)


def native(server: RunningServer, path: str, key: str = API_KEY) -> Any:
    response = httpx.get(f"{server.url}{path}", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    response.raise_for_status()
    return response.json()


def job_ids(server: RunningServer, key: str = API_KEY) -> list[str]:
    """The key's newest jobs, newest first."""
    return [job["id"] for job in native(server, "/v1/jobs?limit=100", key)["data"]]


class NewJobs:
    """The jobs a block of code made with one key."""

    def __init__(self, server: RunningServer, key: str = API_KEY) -> None:
        self.server, self.key = server, key
        self.before = set(job_ids(server, key))
        self.ids: list[str] = []

    def collect(self) -> list[str]:
        self.ids = [job_id for job_id in job_ids(self.server, self.key) if job_id not in self.before]
        return self.ids


def decode(b64: str | None) -> Image.Image:
    assert b64 is not None
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def wait_for_status(server: RunningServer, job_id: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status: str = native(server, f"/v1/jobs/{job_id}")["status"]
        if status in ("succeeded", "failed", "canceled") or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


def assert_a_disconnect_cancels_the_job(
    server: RunningServer, new_jobs: NewJobs, route: str, **request: Any
) -> None:
    """POST a slow request to `route`, hang up before it ends, and see its one job canceled."""
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{server.url}/openai/v1/{route}",
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=0.5,
            **request,
        )
    deadline = time.monotonic() + 5
    while not new_jobs.collect() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(new_jobs.ids) == 1
    assert wait_for_status(server, new_jobs.ids[0]) == "canceled"


def assert_one_job_answered_twice(first: ImagesResponse, again: ImagesResponse, new_jobs: NewJobs) -> None:
    """Two calls with one Idempotency-Key: one job, and the same image in both answers."""
    assert new_jobs.collect() == [first._request_id]
    assert again._request_id == first._request_id
    assert first.data is not None
    assert again.data is not None
    assert again.data[0].b64_json == first.data[0].b64_json


def posted(path: str, body: bytes, content_type: str) -> Request:
    """A POST request to `path` whose body is `body`, all of it, for a route's body reader called directly."""
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:
            return {"type": "http.disconnect"}
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    return Request(
        {"type": "http", "method": "POST", "path": path, "query_string": b"", "headers": headers}, receive
    )
