"""A TCP proxy that can be frozen, for tests of a database server that takes bytes and never answers (hung,
wedged, or behind a proxy stopped with `kill -STOP`)."""

from __future__ import annotations

import selectors
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, wait
from contextlib import contextmanager
from types import TracebackType
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest

POLL_S = 0.05

T = TypeVar("T")


class FreezableProxy:
    """Forwards connections on 127.0.0.1:`port` to the server `url` names. Frozen, it accepts and forwards
    nothing and keeps every socket open: the kernel still completes new connections and acknowledges the
    bytes sent, and nothing answers."""

    def __init__(self, url: str) -> None:
        self._url = urlsplit(url)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(POLL_S)
        self.port: int = self._listener.getsockname()[1]
        self._thawed = threading.Event()
        self._thawed.set()
        self._closed = threading.Event()
        self._threads = [threading.Thread(target=self._accept_forever, name="proxy", daemon=True)]
        self._threads[0].start()

    def url(self) -> str:
        """The proxied URL: the server's, with this proxy's port."""
        netloc = self._url.netloc.replace(f":{self._url.port}", f":{self.port}")
        return urlunsplit(self._url._replace(netloc=netloc))

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """Frozen within the block; thawed when it ends, however it ends (a test that failed on a call still
        stuck lets it end)."""
        self._thawed.clear()
        try:
            yield
        finally:
            self._thawed.set()

    def close(self) -> None:
        self._closed.set()
        self._thawed.set()
        for thread in self._threads:
            thread.join()
        self._listener.close()

    def __enter__(self) -> FreezableProxy:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _accept_forever(self) -> None:
        while not self._closed.is_set():
            if not self._thawed.wait(POLL_S):
                continue
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            server = socket.create_connection((self._url.hostname, self._url.port))
            forwarder = threading.Thread(target=self._forward, args=(client, server), daemon=True)
            self._threads.append(forwarder)
            forwarder.start()

    def _forward(self, client: socket.socket, server: socket.socket) -> None:
        peer = {client: server, server: client}
        with client, server, selectors.DefaultSelector() as selector:
            for end in peer:
                selector.register(end, selectors.EVENT_READ)
            while not self._closed.is_set():
                if not self._thawed.wait(POLL_S):
                    continue
                for key, _ in selector.select(POLL_S):
                    if not self._thawed.is_set():  # bytes sent after the freeze stay unread
                        break
                    end = client if key.fileobj is client else server
                    try:
                        data = end.recv(65536)
                        if not data:
                            return
                        peer[end].sendall(data)
                    except OSError:
                        return


def answer_within(seconds: float, call: Callable[[], T]) -> T:
    """What `call` returns (or raises); the test fails when it has not answered within `seconds` (the call
    goes on in a daemon thread, until the proxy lets it end)."""
    answer: Future[T] = Future()

    def run() -> None:
        try:
            answer.set_result(call())
        except BaseException as exc:
            answer.set_exception(exc)

    threading.Thread(target=run, name="call", daemon=True).start()
    if not wait([answer], timeout=seconds).done:
        pytest.fail(f"no answer within {seconds:g} s: the call hangs")
    return answer.result()
