"""The queue limits as one insert's transaction checks them: queued jobs in all, and per owner (API key)."""

from __future__ import annotations

from collections.abc import Callable

from reangle.errors import QueueFull, counted


class QueueRoom:
    """Room for new queued jobs under `max_queued` and `max_per_owner`; `count_owner` counts an owner's queued
    jobs (in the same transaction) the first time that owner is met."""

    def __init__(
        self,
        queued: int,
        *,
        max_queued: int | None,
        max_per_owner: int | None,
        count_owner: Callable[[str], int],
    ) -> None:
        self.queued, self.already = queued, queued
        self.max_queued, self.max_per_owner, self.count_owner = max_queued, max_per_owner, count_owner
        self._owners: dict[str, tuple[int, int]] = {}  # owner -> (queued before this insert, queued now)

    def take(self, owner: str) -> None:
        """Count one more queued job of `owner`; QueueFull when a limit does not allow it."""
        if self.max_queued is not None and self.queued >= self.max_queued:
            raise QueueFull(f"the queue holds {counted(self.already, 'job')}; its limit is {self.max_queued}")
        if self.max_per_owner is not None:
            if owner not in self._owners:
                held = self.count_owner(owner)
                self._owners[owner] = (held, held)
            before, now = self._owners[owner]
            if now >= self.max_per_owner:
                queued = counted(before, "queued job")
                raise QueueFull(f"this API key has {queued}; each key may have {self.max_per_owner}")
            self._owners[owner] = (before, now + 1)
        self.queued += 1
