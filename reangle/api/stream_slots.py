"""How many event streams (`GET /v1/jobs/{id}/events`) one API key may hold open at once: each holds a
connection for as long as its job runs, so one key opening thousands could starve the server of them. Past the
limit the stream is refused with a 429; clients poll the job instead (the SDK and the studio do so by
themselves). Per process: each API replica counts its own."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from reangle.errors import TooManyStreams


class StreamSlots:
    def __init__(self, max_per_owner: int) -> None:
        self.max_per_owner = max_per_owner
        self._open: Counter[str] = Counter()

    def take(self, owner: str) -> Callable[[], None]:
        """One of `owner`'s slots, and what gives it back (once, however often called); TooManyStreams (429)
        when all of them are taken."""
        if self._open[owner] >= self.max_per_owner:
            raise TooManyStreams(
                f"this API key has {self._open[owner]} event streams open; each key may have "
                f"{self.max_per_owner}: poll GET /v1/jobs/{{id}} instead, or close one"
            )
        self._open[owner] += 1
        given_back = False

        def give_back() -> None:
            nonlocal given_back
            if not given_back:
                given_back = True
                self._open[owner] -= 1
                if not self._open[owner]:
                    del self._open[owner]

        return give_back

    def open_streams(self, owner: str) -> int:
        return self._open[owner]


class SlotStreamingResponse(StreamingResponse):
    """A stream that gives its slot back when it ends, however it ends: a client gone before its first byte
    too (the body's generator would then never run its own cleanup)."""

    def __init__(self, content: Any, *, give_back: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.give_back = give_back

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.give_back()
