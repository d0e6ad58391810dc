"""The embedded asset folder: a full disk is Unavailable (retry later) and leaves no partial file behind; a
killed write's half-written file is removed at the next start."""

from __future__ import annotations

import os
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
