"""Scenario's date filters compare whole milliseconds as the dates shown carry them: a createdAt read back
as a filter is the same instant, never one after it (which made `createdAfter` of an asset's own createdAt
return that asset, about once in 7,000)."""

from __future__ import annotations

import random

from reangle.api.render import iso
from reangle.dialects.scenario import _instant, _millis


def test_a_shown_date_read_back_is_the_instant_it_shows() -> None:
    draw = random.Random(7)
    for _ in range(50_000):
        timestamp = 1_796_682_146 + draw.random() * 1000
        assert _millis(timestamp) == _instant(iso(timestamp), "createdAfter"), timestamp
