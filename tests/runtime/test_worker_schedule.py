"""The retention sweep's cron schedule in scale-out workers, read as Procrastinate reads it (croniter, whose
sixth field is seconds): a period that divides 60, never longer than asked, at least hourly."""

from __future__ import annotations

from datetime import datetime
from itertools import pairwise

import croniter
import pytest

from reangle.runtime.worker import sweep_cron


@pytest.mark.parametrize(
    ("interval_s", "period_s"),
    [
        (0.2, 1),
        (1, 1),
        (10, 10),
        (45, 30),  # */45 would run at :00 and :45, 15 s apart
        (60, 60),
        (600, 600),
        (2700, 1800),
        (3600, 3600),
        (86400, 3600),
    ],
)
def test_the_sweep_runs_at_most_as_far_apart_as_asked(interval_s: float, period_s: int) -> None:
    runs = croniter.croniter(sweep_cron(interval_s), datetime(2026, 12, 7, 12, 16, 57))
    times = [runs.get_next(float) for _ in range(5)]
    assert {later - earlier for earlier, later in pairwise(times)} == {period_s}
    assert times[0] - datetime(2026, 12, 7, 12, 16, 57).timestamp() <= period_s
