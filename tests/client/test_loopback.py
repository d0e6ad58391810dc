"""The SDK over a real socket on 127.0.0.1, against a scripted stand-in server (a fake, like FakeServer): real
chunked event streams and real read timeouts, which MockTransport cannot show."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from reangle.client import Client, Job, JobEvent, ProgressEvent, WaitTimeout

QUEUED = {
    "id": "job_1",
    "model": "m",
    "status": "queued",
    "progress": 0,
    "created_at": "2026-01-01T00:00:00Z",
}


class StandInServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, *, stall: bool) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.stall = stall
        self.release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: StandInServer

    def log_message(self, *_args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.endswith("/events"):
            self._events()
        else:
            body = json.dumps(QUEUED).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def _events(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        self._chunk(f"event: status\ndata: {json.dumps(QUEUED)}\n\n")
        if self.server.stall:  # say nothing more until the test ends: only a read timeout gets the client out
            self.server.release.wait(10)
            return
        for step in (1, 2):
            time.sleep(0.05)
            self._chunk(
                f'event: progress\r\ndata: {{"progress": {step / 2}, "step": {step}, "steps": 2}}\r\n\r\n'
            )
        done = QUEUED | {"status": "succeeded", "progress": 1.0}
        self._chunk(f": bye\nevent: status\ndata: {json.dumps(done)}\n\n")
        self._chunk("")

    def _chunk(self, text: str) -> None:
        data = text.encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


@pytest.fixture
def serve() -> Iterator[Callable[..., StandInServer]]:
    servers: list[StandInServer] = []

    def start(*, stall: bool) -> StandInServer:
        server = StandInServer(stall=stall)
        threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.release.set()
        server.shutdown()
        server.server_close()


def test_wait_reads_a_chunked_event_stream(serve: Callable[..., StandInServer]) -> None:
    server = serve(stall=False)
    seen: list[JobEvent] = []
    with Client(server.url, timeout=5) as client:
        done = client.wait("job_1", on_progress=seen.append)
    assert done.status == "succeeded"
    assert [event.progress for event in seen if isinstance(event, ProgressEvent)] == [0.5, 1.0]
    assert [event.status for event in seen if isinstance(event, Job)] == ["queued", "succeeded"]


def test_a_silent_stream_does_not_hold_wait_past_its_timeout(serve: Callable[..., StandInServer]) -> None:
    server = serve(stall=True)
    started = time.monotonic()
    with Client(server.url, timeout=30, poll_interval=0.05) as client, pytest.raises(WaitTimeout) as caught:
        client.wait("job_1", timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 3
    assert caught.value.job is not None
    assert caught.value.job.status == "queued"
