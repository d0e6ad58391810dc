"""`reangle serve` and `reangle worker` raise their soft limit on open files (1024 on most systems) towards
the hard limit, so a busy server does not stop accepting connections at a thousand."""

from __future__ import annotations

import resource
from collections.abc import Iterator

import pytest

from reangle.cli.open_files import WANTED_OPEN_FILES, raise_open_file_limit


@pytest.fixture
def limits() -> Iterator[tuple[int, int]]:
    """This process's limits, as they are again after the test."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield soft, hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_low_soft_limit_is_raised_to_the_hard_one_or_the_wanted_count(limits: tuple[int, int]) -> None:
    hard = limits[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    expected = WANTED_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, WANTED_OPEN_FILES)
    assert raise_open_file_limit() == expected
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (expected, hard)


def test_a_soft_limit_already_high_enough_is_kept(limits: tuple[int, int]) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits[1], limits[1]))
    assert raise_open_file_limit() == limits[1]
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (limits[1], limits[1])
