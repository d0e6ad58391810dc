"""The retention sweep of a scale-out worker, the periodic task Procrastinate runs, while the object store is
away: one WARNING line a period, not Procrastinate's ERROR with the traceback of a failed task; once the store
is back, the next sweep does the work."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reangle.core.assets import ORPHAN_GRACE_S
from reangle.core.ports import BlobPage
from reangle.errors import Unavailable
from reangle.settings import Settings
from reangle.store.files import FileBlobStore
from tests.runtime.test_worker_runtime import Rig, happens, make_rig, run, working

STORE_AWAY = "the object store of s3://reangle/assets cannot be reached (EndpointConnectionError)"


@pytest.fixture
def rig(pg_url: str, tmp_path: Path, cache_dir: Path) -> Iterator[Rig]:
    settings = Settings(cache_dir=cache_dir, fake_step_seconds=0, sweep_interval_s=1)  # a sweep every second
    made = make_rig(pg_url, tmp_path, settings, step_seconds=0)
    try:
        yield made
    finally:
        made.service.events.close()
        made.store.close()


def test_a_sweep_that_cannot_reach_the_object_store_is_one_warning_and_a_later_one_does_the_work(
    rig: Rig, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO)
    blobs = rig.assets.blobs
    assert isinstance(blobs, FileBlobStore)
    orphan = blobs.put(b"bytes that no asset names")  # put by a process that died before recording them
    long_ago = time.time() - 2 * ORPHAN_GRACE_S
    os.utime(blobs.path(orphan), (long_ago, long_ago))
    store_reachable, refusals = False, 0
    listing = blobs.list_page

    def list_page(after: str | None, limit: int) -> BlobPage:  # as S3BlobStore's, through an outage
        nonlocal refusals
        if not store_reachable:
            refusals += 1
            raise Unavailable(STORE_AWAY)
        return listing(after, limit)

    def skipped() -> list[logging.LogRecord]:
        return [record for record in caplog.records if "retention sweep skipped" in record.getMessage()]

    async def scenario() -> None:
        nonlocal store_reachable
        monkeypatch.setattr(blobs, "list_page", list_page)
        async with working(rig):
            await happens(lambda: refusals >= 2)
            store_reachable = True
            await happens(lambda: not blobs.path(orphan).exists())

    run(scenario())
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR] == []
    assert len(skipped()) == refusals  # one line a sweep
    for record in skipped():
        assert record.levelno == logging.WARNING
        assert record.exc_info is None
        assert record.getMessage() == f"retention sweep skipped: {STORE_AWAY}; it runs again next period"
