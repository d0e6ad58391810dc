"""The retention sweep's cron schedule in scale-out workers: a step that divides 60, never a longer period
than asked, at least hourly."""

from __future__ import annotations

import pytest

from reangle.runtime.worker import sweep_cron


@pytest.mark.parametrize(
    ("interval_s", "cron"),
    [
        (0.2, "*/1 * * * * *"),
        (1, "*/1 * * * * *"),
        (45, "*/30 * * * * *"),  # */45 would run at :00 and :45, 15 s apart
        (60, "*/1 * * * *"),
        (600, "*/10 * * * *"),
        (2700, "*/30 * * * *"),
        (3600, "0 * * * *"),
        (86400, "0 * * * *"),
    ],
)
def test_the_sweep_runs_at_most_as_far_apart_as_asked(interval_s: float, cron: str) -> None:
    assert sweep_cron(interval_s) == cron
