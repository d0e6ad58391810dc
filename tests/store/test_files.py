"""The embedded asset folder: a full disk is Unavailable (retry later) and leaves no partial file behind; a
killed write's half-written file is removed at the next start; the orphan sweep's listing names only stored
files, page by page, and a put of bytes already stored makes them new again."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import IO

import pytest

from reangle.errors import Unavailable
from reangle.store import files
from reangle.store.files import FileBlobStore


def test_a_full_disk_is_unavailable_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def onto_a_full_disk(fd: int, mode: str) -> IO[bytes]:
        os.close(fd)
        return open("/dev/full", mode)  # the kernel's own ENOSPC on every write

    monkeypatch.setattr(files.os, "fdopen", onto_a_full_disk)
    blobs = FileBlobStore(tmp_path)
    with pytest.raises(Unavailable, match="No space left on device"):
        blobs.put(b"x" * 100_000)
    assert [path.name for path in tmp_path.rglob("*") if path.is_file()] == []


def test_stored_bytes_read_back_by_their_digest(tmp_path: Path) -> None:
    blobs = FileBlobStore(tmp_path)
    digest = blobs.put(b"pixels")
    assert blobs.read(digest) == b"pixels"
    assert [path.name for path in tmp_path.rglob(".tmp-*")] == []


def test_half_written_files_a_killed_process_left_are_removed_at_the_next_start(tmp_path: Path) -> None:
    digest = FileBlobStore(tmp_path).put(b"kept")
    folder = tmp_path / digest[:2]
    stale, live = folder / ".tmp-stale", folder / ".tmp-live"  # a write killed an hour ago; one under way
    stale.write_bytes(b"half")
    live.write_bytes(b"half")
    an_hour_ago = os.path.getmtime(live) - files.STALE_TEMPORARY_S - 1
    os.utime(stale, (an_hour_ago, an_hour_ago))

    restarted = FileBlobStore(tmp_path)
    assert not stale.exists()
    assert live.exists()
    assert restarted.read(digest) == b"kept"


def test_the_listing_names_only_stored_files_with_their_last_put(tmp_path: Path) -> None:
    blobs = FileBlobStore(tmp_path)
    old, young = blobs.put(b"old"), blobs.put(b"young")
    folder = tmp_path / old[:2]
    foreign_digest = "0" * 64 if old[:2] != "00" else "1" * 64  # a digest's name in another's folder
    foreign = [
        folder / f"{files.TEMPORARY_PREFIX}{old}",
        folder / foreign_digest,
        folder / old.upper(),
        folder / "notes.txt",
        tmp_path / "backup" / old,
        tmp_path / old,
    ]
    for path in foreign:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"not a blob")
    os.utime(blobs.path(old), (1000.0, 1000.0))

    page = blobs.list_page(None, 10)
    assert page.resume_after is None
    assert set(page.put_at) == {old, young}
    assert page.put_at[old] == 1000.0
    assert page.put_at[young] > time.time() - 60


def test_the_listing_pages_in_digest_order_across_folders(tmp_path: Path) -> None:
    blobs = FileBlobStore(tmp_path)
    digests = sorted(blobs.put(b"blob %d" % n) for n in range(7))
    assert len({digest[:2] for digest in digests}) > 1  # the pages cross folders

    walked, after, pages = [], None, 0
    while True:
        page = blobs.list_page(after, 3)
        walked += list(page.put_at)
        pages += 1
        if page.resume_after is None:
            break
        after = page.resume_after
    assert walked == digests
    assert pages == 3


def test_a_put_of_bytes_already_stored_makes_their_file_new_again(tmp_path: Path) -> None:
    blobs = FileBlobStore(tmp_path)
    digest = blobs.put(b"reused")
    os.utime(blobs.path(digest), (1000.0, 1000.0))
    assert blobs.list_page(None, 10).put_at[digest] == 1000.0

    assert blobs.put(b"reused") == digest
    assert blobs.list_page(None, 10).put_at[digest] > time.time() - 60
    assert blobs.read(digest) == b"reused"


def test_bytes_already_stored_in_a_file_it_may_not_touch_are_stored_all_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another user's file, or a read-only mount: the put keeps the file as it is."""
    blobs = FileBlobStore(tmp_path)
    digest = blobs.put(b"restored from a backup")

    def refused(path: object, *args: object) -> None:
        raise PermissionError(1, "Operation not permitted", str(path))

    monkeypatch.setattr(files.os, "utime", refused)
    assert blobs.put(b"restored from a backup") == digest
    assert blobs.read(digest) == b"restored from a backup"
