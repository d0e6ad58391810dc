"""Request bodies are capped whether their size is declared or streamed, in every surface's error shape."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator

import httpx

from tests.api.conftest import KEY_A, ServerFactory, assert_error

LIMIT = 50_000


def chunked(data: bytes, size: int = 8192) -> Iterator[bytes]:
    """A body without Content-Length: httpx sends an iterator as Transfer-Encoding: chunked."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_bodies_over_the_limit_are_413_declared_or_chunked(serve: ServerFactory) -> None:
    server = serve(max_request_bytes=LIMIT)
    body = b'{"data": "' + base64.b64encode(os.urandom(LIMIT)) + b'"}'
    headers = {"Authorization": f"Bearer {KEY_A}", "Content-Type": "application/json"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
        assert_error(client.post("/v1/assets", content=body), 413, "too_large", "limit of 50,000 bytes")
        assert_error(
            client.post("/v1/assets", content=chunked(body)), 413, "too_large", "limit of 50,000 bytes"
        )
        assert_error(
            client.post("/v1/jobs", content=chunked(body)), 413, "too_large", "limit of 50,000 bytes"
        )
        segmind = client.post(
            "/segmind/v1/qwen-image-edit-plus-multiple-angle",
            content=chunked(body),
            headers={"x-api-key": KEY_A},
        )
        assert segmind.status_code == 413
        assert "50,000 bytes" in segmind.json()["error"]
        small = client.post("/v1/assets", json={"data": "not base64!"})
        assert small.status_code == 422  # under the cap, the request is read and judged as usual
    server.assert_no_server_errors()
