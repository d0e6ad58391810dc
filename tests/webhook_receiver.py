"""A real HTTP receiver for webhooks, on 127.0.0.1 in the test process: it records every request and answers
with the answers it was given, in order, then 200. An answer is an HTTP status, or one of two misbehaviours:
TRICKLE (the status line and headers a byte at a time, each byte well within any read timeout, for
TRICKLE_S) and ENDLESS_BODY (200 and its headers at once, then a body that never ends)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook

TRICKLE = "trickle"
ENDLESS_BODY = "endless body"
Answer = int | str
#: How long a trickled answer takes in all, and the pause before each of its bytes.
TRICKLE_S = 30.0
TRICKLE_BYTE_S = 0.05
#: How long a misbehaving answer waits at most for the sender to hang up.
HOLD_S = 30.0
_TRICKLED_HEAD = b"HTTP/1.1 200 OK\r\nX-Padding: "
_TRICKLED_TAIL = b"\r\nContent-Length: 0\r\n\r\n"


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    at: float

    def verified(self, secret: str) -> object:
        """The body, once the standardwebhooks package has checked its signature with `secret`."""
        return Webhook(secret).verify(self.body, self.headers)


class Receiver:
    def __init__(self, statuses: Sequence[Answer] = (), port: int = 0) -> None:
        self.requests: list[Received] = []
        #: When (time.monotonic) the sender hung up on each misbehaving answer.
        self.hang_ups: list[float] = []
        self._answers = list(statuses)
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    receiver.requests.append(
                        Received({k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
                    )
                    answer = receiver._answers.pop(0) if receiver._answers else 200
                if answer == TRICKLE:
                    self._misbehave(self._trickle)
                elif answer == ENDLESS_BODY:
                    self._misbehave(self._endless_body)
                else:
                    assert isinstance(answer, int)
                    self.send_response(answer)
                    self.send_header("Content-Length", "0")
                    self.end_headers()

            def _misbehave(self, answer: Callable[[], None]) -> None:
                """Answer badly until the sender hangs up (noted in `hang_ups`), or HOLD_S has passed."""
                self.close_connection = True
                self.connection.settimeout(HOLD_S)
                try:
                    answer()
                    while self.connection.recv(4096):  # a read sees the end of the connection
                        pass
                except TimeoutError:  # the sender is still there
                    return
                except OSError:  # a write failed: the sender hung up mid-answer
                    pass
                with receiver._lock:
                    receiver.hang_ups.append(time.monotonic())

            def _trickle(self) -> None:
                self.connection.sendall(_TRICKLED_HEAD)
                for _ in range(int(TRICKLE_S / TRICKLE_BYTE_S)):
                    time.sleep(TRICKLE_BYTE_S)
                    self.connection.sendall(b".")
                self.connection.sendall(_TRICKLED_TAIL)

            def _endless_body(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(10**12))
                self.end_headers()
                self.wfile.write(b"x" * 4096)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait_for(self, count: int, timeout: float = 15.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.requests)} webhook requests after {timeout} s, not {count}")
            time.sleep(0.02)
        return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
