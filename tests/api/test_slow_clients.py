"""Slow clients: a request head that does not arrive in time, or a body that stalls, is answered 408 and the
connection closed, instead of holding it open (a few stalled clients could otherwise take every slot)."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.api.conftest import KEY_A, ServerFactory, ServerProcess

TIMEOUT_S = 1


@pytest.fixture
def server(serve: ServerFactory) -> ServerProcess:
    return serve(header_timeout_s=TIMEOUT_S, body_timeout_s=TIMEOUT_S)


def connect(server: ServerProcess) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=15)


def read_all(connection: socket.socket) -> bytes:
    """Everything until the server closes the connection (the socket's timeout fails the test)."""
    data = b""
    while chunk := connection.recv(4096):
        data += chunk
    return data


@pytest.mark.parametrize(
    "sent",
    [b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b"GET /hea"],
    ids=["nothing", "half a head", "a few bytes"],
)
def test_a_head_that_does_not_arrive_in_time_is_408_and_closed(server: ServerProcess, sent: bytes) -> None:
    with connect(server) as connection:
        started = time.monotonic()
        connection.sendall(sent)
        answer = read_all(connection)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert TIMEOUT_S * 0.9 <= time.monotonic() - started < 10


def read_response(connection: socket.socket) -> bytes:
    """One whole response with a Content-Length body, however the bytes arrive."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += connection.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))[15:]
    )
    while len(body) < length:
        body += connection.recv(4096)
    return head + b"\r\n\r\n" + body


def test_a_kept_alive_connection_gets_the_same_deadline_for_its_next_head(server: ServerProcess) -> None:
    with connect(server) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = read_response(connection)
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHo")
        rest = read_all(connection)
    assert first.startswith(b"HTTP/1.1 200 ")
    assert rest.startswith(b"HTTP/1.1 408 "), rest


def test_a_stalled_body_is_408_in_the_error_shape(server: ServerProcess) -> None:
    head = (
        f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY_A}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    with connect(server) as connection:
        connection.sendall(head + b'{"model": ')
        answer = read_all(connection)
    status, _, rest = answer.partition(b"\r\n")
    assert status.startswith(b"HTTP/1.1 408 "), answer
    assert b"connection: close" in rest.lower()  # the unread rest of the body is no next request
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["error"]["code"] == "request_timeout"
    assert "stalled" in body["error"]["message"]
