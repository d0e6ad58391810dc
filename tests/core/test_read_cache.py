"""The status-read cache: kept until an event of the job or for ttl_s at most; never a value read before an
event of its job; nothing while events cannot be heard."""

from __future__ import annotations

from reangle.core.read_cache import ReadCache


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def cache(*, max_entries: int = 100) -> tuple[ReadCache[str], FakeClock]:
    clock = FakeClock()
    reads: ReadCache[str] = ReadCache(ttl_s=2.0, max_entries=max_entries, clock=clock)
    reads.enabled = True
    return reads, clock


def test_a_read_is_kept_until_its_ttl() -> None:
    reads, clock = cache()
    reads.put("job_1", "queued", reads.ticket())
    clock.now += 1.9
    assert reads.get("job_1") == "queued"
    clock.now += 0.2
    assert reads.get("job_1") is None


def test_an_event_of_the_job_drops_it_and_only_it() -> None:
    reads, _ = cache()
    reads.put("job_1", "queued", reads.ticket())
    reads.put("job_2", "queued", reads.ticket())
    reads.changed("job_1")
    assert reads.get("job_1") is None
    assert reads.get("job_2") == "queued"


def test_a_value_read_before_an_event_of_its_job_is_not_kept() -> None:
    reads, _ = cache()
    ticket = reads.ticket()  # the store is read now ...
    reads.changed("job_1")  # ... an event arrives while it is read ...
    reads.put("job_1", "processing", ticket)  # ... so the value may predate the change
    assert reads.get("job_1") is None
    reads.changed("job_2")  # another job's event does not spoil it
    fresh = reads.ticket()
    reads.changed("job_2")
    reads.put("job_1", "succeeded", fresh)
    assert reads.get("job_1") == "succeeded"


def test_after_a_clear_nothing_read_before_it_is_kept() -> None:
    reads, _ = cache()
    reads.put("job_1", "queued", reads.ticket())
    before = reads.ticket()
    reads.clear()
    assert reads.get("job_1") is None
    reads.put("job_2", "queued", before)
    assert reads.get("job_2") is None
    reads.put("job_2", "queued", reads.ticket())
    assert reads.get("job_2") == "queued"


def test_a_disabled_cache_keeps_nothing() -> None:
    reads, _ = cache()
    reads.enabled = False
    reads.put("job_1", "queued", reads.ticket())
    reads.enabled = True
    assert reads.get("job_1") is None


def test_it_stays_bounded_and_forgetting_old_events_never_lets_a_stale_read_in() -> None:
    reads, _ = cache(max_entries=2)
    for job_id in ("job_1", "job_2", "job_3"):
        reads.put(job_id, "queued", reads.ticket())
    assert [reads.get(job_id) for job_id in ("job_1", "job_2", "job_3")] == [None, "queued", "queued"]

    stale = reads.ticket()
    for job_id in ("job_1", "job_2", "job_3"):  # job_1's event is the one forgotten
        reads.changed(job_id)
    reads.put("job_1", "processing", stale)
    assert reads.get("job_1") is None
