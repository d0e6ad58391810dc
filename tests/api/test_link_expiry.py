"""File-store download links are stable for a while, so that a page reading an asset again (the studio's
history) gets the same link and the browser's cached copy."""

from __future__ import annotations

from reangle.api.render import LINK_EXPIRY_STEP_S, stable_expiry


def test_a_file_link_is_the_same_for_a_while() -> None:
    ttl = 3600
    now = 1_700_000_123.4
    step = LINK_EXPIRY_STEP_S
    first = stable_expiry(now + ttl, ttl)
    assert first % step == 0
    assert now + ttl <= first < now + ttl + step
    assert stable_expiry(now + 100 + ttl, ttl) == first  # read again 100 s later: the same link
    assert stable_expiry(60.5, 60) == 66  # a short TTL: a step of a tenth of it
    assert stable_expiry(1.7, 1) == 1  # under 10 s: as given, whole seconds
