"""The retention sweep's orphan walk: files no asset names (a put whose row was never inserted) go once older
than the grace period, a page of stored files per sweep; the others stay."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

import reangle.core.assets as assets_module
from reangle.core.assets import ORPHAN_GRACE_S, AssetService
from reangle.store.files import FileBlobStore
from reangle.store.sqlite import SqliteStore
from tests.conftest import image_bytes, make_image


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def assets(store: SqliteStore, blobs: FileBlobStore, clock: Clock) -> AssetService:
    return AssetService(
        store,
        blobs,
        max_bytes=1 << 20,
        max_pixels=1 << 20,
        upload_ttl_s=30 * 24 * 3600,
        result_ttl_s=30 * 24 * 3600,
        clock=clock,
    )


def put_at(blobs: FileBlobStore, data: bytes, when: float) -> Path:
    """Store `data` as if its last put was at `when`."""
    path = blobs.path(blobs.put(data))
    os.utime(path, (when, when))
    return path


def test_only_orphans_older_than_the_grace_are_deleted(
    store: SqliteStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock, blobs = Clock(), FileBlobStore(tmp_path / "assets")
    service = assets(store, blobs, clock)
    long_ago = clock.now - ORPHAN_GRACE_S - 10
    referenced = blobs.path(service.ingest("owner", image_bytes(make_image(8, 8))).sha256)
    os.utime(referenced, (long_ago, long_ago))
    old_orphan = put_at(blobs, b"a put whose row never came", long_ago)
    young_orphan = put_at(blobs, b"a put whose row is being inserted", clock.now - ORPHAN_GRACE_S + 10)

    with caplog.at_level(logging.INFO, logger="reangle.assets"):
        assert service.sweep() == 1
    assert not old_orphan.exists()
    assert young_orphan.exists()
    assert referenced.exists()
    assert "deleted 1 orphan files" in caplog.text


def test_each_sweep_looks_at_one_page_of_files_and_the_walk_starts_over_at_the_end(
    store: SqliteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(assets_module, "ORPHAN_PAGE", 2)
    clock, blobs = Clock(), FileBlobStore(tmp_path / "assets")
    service = assets(store, blobs, clock)
    long_ago = clock.now - ORPHAN_GRACE_S - 10
    orphans = [put_at(blobs, b"left by a crash %d" % n, long_ago) for n in range(5)]
    assert [service.sweep() for _ in range(3)] == [2, 2, 1]
    assert not any(path.exists() for path in orphans)

    later = put_at(blobs, b"left by a failed insert", long_ago)
    assert service.sweep() == 1  # the walk had reached the end: it starts over
    assert not later.exists()


class WatchedStore(SqliteStore):
    """Records, at each reference check, its batch and whether the service held its files lock."""

    service: AssetService
    checks: list[tuple[int, bool]]

    def hashes_without_assets(self, hashes: Sequence[str]) -> set[str]:
        self.checks.append((len(hashes), self.service._files_lock.locked()))
        return super().hashes_without_assets(hashes)


def test_orphans_are_checked_and_deleted_under_the_files_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(assets_module, "ORPHAN_PAGE", 2)
    clock, blobs = Clock(), FileBlobStore(tmp_path / "assets")
    store = WatchedStore(tmp_path / "reangle.sqlite3")
    store.service, store.checks = assets(store, blobs, clock), []
    orphans = [put_at(blobs, b"orphan %d" % n, clock.now - ORPHAN_GRACE_S - 10) for n in range(3)]
    try:
        assert [store.service.sweep() for _ in range(2)] == [2, 1]
    finally:
        store.close()
    assert not any(path.exists() for path in orphans)
    assert store.checks == [(2, True), (1, True)]
