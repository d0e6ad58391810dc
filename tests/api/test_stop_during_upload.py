"""A stop (SIGTERM) while a request's body is still arriving answers it 503 with Retry-After at once, in its
route's error shape, instead of holding the shutdown for the whole graceful time and then answering a bare
500; a request whose body had all arrived is answered as without the stop."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest

from reangle.core.models import CAMERA_EDIT
from tests.api.conftest import KEY_A, ServerFactory, ServerProcess, png, poll, slow_input, upload
from tests.api.test_slow_clients import connect, read_all

BOUNDARY = "stop-test-boundary"


def request_head(path: str, content_type: str, length: int, *extra: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: x", f"Authorization: Bearer {KEY_A}"]
    lines += [f"Content-Type: {content_type}", f"Content-Length: {length}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def half_sent(server: ServerProcess, path: str, content_type: str, body: bytes) -> socket.socket:
    """A connection that has sent half the body of a POST, returned once the route is reading that body."""
    connection = connect(server)
    connection.sendall(request_head(path, content_type, len(body), "Expect: 100-continue"))
    head = b""
    while b"\r\n\r\n" not in head:
        head += connection.recv(4096)
    assert head.startswith(b"HTTP/1.1 100 "), head  # sent when the app first asks for the body
    connection.sendall(body[: len(body) // 2])
    return connection


def multipart(file_field: str, **fields: str) -> tuple[str, bytes]:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{file_field}"; filename="in.png"\r\n'
        "Content-Type: image/png\r\n\r\n".encode()
        + png()
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    return f"multipart/form-data; boundary={BOUNDARY}", b"".join(parts)


def parse(answer: bytes) -> tuple[int, dict[str, str], Any]:
    """Status, headers (names in lower case) and JSON body of one response; a 100 Continue before it is
    skipped."""
    if answer.startswith(b"HTTP/1.1 100 "):
        answer = answer.partition(b"\r\n\r\n")[2]
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)
    }
    return int(status_line.split()[1]), headers, json.loads(body)


def stop_quickly(server: ServerProcess) -> None:
    started = time.monotonic()
    server.stop(timeout=15)
    assert time.monotonic() - started < 4, server.log()  # not the graceful limit (5 s) and more


def assert_stopping_503(answer: bytes) -> Any:
    status, headers, body = parse(answer)
    assert status == 503, answer
    assert headers["retry-after"] == "5", headers
    assert headers["x-request-id"], headers
    assert headers["connection"] == "close", headers  # the unread rest of the body is no next request
    return body


NATIVE = [
    (
        "/v1/jobs",
        "application/json",
        json.dumps({"model": CAMERA_EDIT, "input": {"prompt": "x" * 200}}).encode(),
    ),
    ("/v1/assets", *multipart("file")),
]


@pytest.mark.parametrize(("path", "content_type", "body"), NATIVE, ids=["json job", "multipart upload"])
def test_a_stop_answers_a_half_sent_body_503_at_once(
    serve: ServerFactory, path: str, content_type: str, body: bytes
) -> None:
    server = serve()
    since = server.log_size()
    with half_sent(server, path, content_type, body) as connection:
        stop_quickly(server)
        answer = read_all(connection)
    error = assert_stopping_503(answer)["error"]
    assert error["code"] == "unavailable", error
    assert "stopping" in error["message"], error
    log = server.full_log(since)
    assert "Traceback" not in log, log
    assert "ERROR" not in log, log


def test_a_dialect_call_cut_by_a_stop_is_503_in_its_own_shape(serve: ServerFactory) -> None:
    server = serve()
    content_type, body = multipart("image", prompt="turn the camera left")
    with half_sent(server, "/openai/v1/images/edits", content_type, body) as connection:
        stop_quickly(server)
        answer = read_all(connection)
    error = assert_stopping_503(answer)["error"]
    assert (error["type"], error["code"]) == ("server_error", "unavailable"), error
    log = server.full_log()
    assert "Traceback" not in log, log
    assert "ERROR" not in log, log


def test_a_body_all_received_before_the_stop_is_answered_as_without_it(serve: ServerFactory) -> None:
    """A `?wait=` request whose body arrived is answered 202 with its job; the half-sent one beside it 503."""
    server = serve(fake_step_seconds=0.5)  # 100 steps: 50 s, still running when the server stops
    with server.client() as api, connect(server) as waiting:
        body = json.dumps({"model": CAMERA_EDIT, "input": slow_input(upload(api)["id"])}).encode()
        waiting.sendall(request_head("/v1/jobs?wait=60", "application/json", len(body)) + body)
        poll(lambda: api.get("/v1/jobs").json()["data"] or None, what="the waiting request's job")
        with half_sent(server, "/v1/jobs", "application/json", body) as cut:
            stop_quickly(server)
            cut_answer = read_all(cut)
        status, _, job = parse(read_all(waiting))
    assert status == 202, job
    assert job["status"] in ("queued", "processing"), job
    assert assert_stopping_503(cut_answer)["error"]["code"] == "unavailable"
