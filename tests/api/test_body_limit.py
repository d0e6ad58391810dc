"""Request bodies are capped whether their size is declared or streamed, in every surface's error shape."""

from __future__ import annotations

import base64
import json
import os
import socket
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


def raw_exchange(server_url: str, head: bytes, body_parts: list[bytes], timeout: float = 10) -> bytes:
    """Send a request head and some body bytes over a socket, never finishing the body, and return the
    first bytes of the answer (a server waiting for the rest would time out here)."""
    host, port = server_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as connection:
        connection.sendall(head)
        for part in body_parts:
            connection.sendall(part)
        return connection.recv(64)


def multipart_head(path: str, extra: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY_A}\r\n"
        f"Content-Type: multipart/form-data; boundary=b0undary\r\n{extra}\r\n"
    ).encode()


def test_a_streamed_upload_is_refused_once_it_passes_the_upload_cap(serve: ServerFactory) -> None:
    """The form's file is cut off at the upload cap (plus room for the form), not after the whole body."""
    server = serve(max_upload_bytes=100_000)
    part = b"--b0undary\r\nContent-Disposition: form-data; name=file; filename=a.png\r\n\r\n" + os.urandom(
        1_200_000
    )
    chunks = [
        f"{len(part[i : i + 65536]):x}\r\n".encode() + part[i : i + 65536] + b"\r\n"
        for i in range(0, len(part), 65536)
    ]
    answer = raw_exchange(server.url, multipart_head("/v1/assets", "Transfer-Encoding: chunked\r\n"), chunks)
    assert answer.startswith(b"HTTP/1.1 413"), answer


def test_a_declared_length_over_the_cap_is_refused_before_the_body_arrives(serve: ServerFactory) -> None:
    server = serve(max_upload_bytes=100_000)
    answer = raw_exchange(
        server.url, multipart_head("/v1/assets", "Content-Length: 10737418240\r\n"), [b"x" * 1024]
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer


def test_an_openai_form_over_its_cap_is_refused_in_openai_shape(serve: ServerFactory) -> None:
    """Its three images at the upload cap each (base64 size), plus room for the form; OpenAI answers a
    too-large request 400 with code too_large."""
    server = serve(max_upload_bytes=100_000)
    head = (
        f"POST /openai/v1/images/edits HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY_A}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 2500000\r\n\r\n"
    ).encode()
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=15) as connection:
        connection.sendall(head + b"prompt=x")
        answer = b""
        while chunk := connection.recv(4096):  # the server closes: the body was left unread
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400"), answer
    error = json.loads(answer.partition(b"\r\n\r\n")[2])["error"]
    assert error["code"] == "too_large"
    assert "limit of 1,448,575 bytes" in error["message"]  # 3 images x 4/3 x 100,000 + 1 MiB


def test_a_body_of_more_json_values_than_any_request_takes_is_413_before_it_is_parsed(
    serve: ServerFactory,
) -> None:
    """Under the size cap, tens of millions of `{}` would take gigabytes to parse and hold the event loop;
    here 1,000,001 of them (3 MB) are refused as they arrive, in each surface's shape; a batch of 64 image
    sets whose texts are all commas, the most a request may hold, is read as usual."""
    server = serve()
    many = b'{"model": "qwen-edit-multiangle-2511", "input": [' + b",".join([b"{}"] * 1_000_001) + b"]}"
    headers = {"Authorization": f"Bearer {KEY_A}", "Content-Type": "application/json"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
        for body in (many, chunked(many)):
            assert_error(
                client.post("/v1/jobs", content=body), 413, "too_large", "more than 2,000,000 JSON values"
            )
        runpod = client.post("/runpod/v2/ep/run", content=many)
        assert runpod.status_code == 413
        assert "more than 2,000,000 JSON values" in runpod.json()["error"]
        openai = client.post("/openai/v1/images/generations", content=many)
        assert openai.status_code == 400
        assert "more than 2,000,000 JSON values" in openai.json()["error"]["message"]
        half = "," * 999  # a set prompt joins the prompt (with ". "): the two take at most 2,000 characters
        image_set = {
            "prompt": half,
            "negative_prompt": half * 2,
            "image_set": True,
            "set_prompts": [half] * 8,
        }
        batch = {"model": "qwen-image-2512", "items": [{"input": image_set}] * 64}
        accepted = client.post("/v1/batches", json=batch)
        assert accepted.status_code == 202, accepted.text
    server.assert_no_server_errors()
