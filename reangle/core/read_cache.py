"""A short-lived cache of status reads, kept current by the job events a process already receives.

Clients poll jobs; on a shared database every poll would be a round trip. Here a read is kept until an event
of its job (a status change or progress, from this process or, by the event bus, from another) drops it, and
at most `ttl_s` in any case: notices are not durable, and retention deletes jobs without one. The bus says
when it may have missed events (`clear`), and while it cannot hear them the cache is not used at all.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")

DEFAULT_TTL_S = 2.0
DEFAULT_MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class _Entry(Generic[V]):
    value: V
    at: float


class ReadCache(Generic[V]):
    """Values by job id. `ticket()` before reading the store, `put(job_id, value, ticket)` after: a value read
    before an event of its job arrived is not kept (it may predate the change the event announced)."""

    def __init__(
        self,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s, self.max_entries, self.clock = ttl_s, max_entries, clock
        self.enabled = False
        self._entries: OrderedDict[str, _Entry[V]] = OrderedDict()
        self._events = 0  # events seen so far: the tickets
        self._last_event: OrderedDict[str, int] = OrderedDict()  # job id -> the event count at its last event
        self._cleared_at = 0
        self._lock = threading.Lock()  # events come from the event loop and from threads

    def get(self, job_id: str) -> V | None:
        if not self.enabled:
            return None
        with self._lock:
            entry = self._entries.get(job_id)
            if entry is None:
                return None
            if self.clock() - entry.at > self.ttl_s:
                del self._entries[job_id]
                return None
            return entry.value

    def ticket(self) -> int:
        return self._events

    def put(self, job_id: str, value: V, ticket: int) -> None:
        with self._lock:
            if not self.enabled or ticket < self._cleared_at or self._last_event.get(job_id, -1) > ticket:
                return
            self._entries[job_id] = _Entry(value, self.clock())
            self._entries.move_to_end(job_id)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def changed(self, job_id: str) -> None:
        """An event of the job: what is kept of it is out of date."""
        with self._lock:
            self._events += 1
            self._entries.pop(job_id, None)
            self._last_event[job_id] = self._events
            self._last_event.move_to_end(job_id)
            while len(self._last_event) > self.max_entries:
                # forgetting the oldest event is safe once no ticket from before it is accepted any more
                _, forgotten = self._last_event.popitem(last=False)
                self._cleared_at = max(self._cleared_at, forgotten)

    def clear(self) -> None:
        """Events may have been missed: nothing kept can be trusted."""
        with self._lock:
            self._events += 1
            self._cleared_at = self._events
            self._entries.clear()
            self._last_event.clear()
