"""Content-addressed files under the data directory: the bytes of every asset, named by their SHA-256."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
import tempfile
import time
from pathlib import Path

from reangle.core.ports import BlobPage
from reangle.errors import AssetGone, Unavailable

#: A disk full (or over quota) now may have room later: the caller retries, as when a database is down.
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
#: The files being written are named so until they are complete (then renamed to their digest).
TEMPORARY_PREFIX = ".tmp-"
STALE_TEMPORARY_S = 3600.0
#: The name of a stored file: its SHA-256 (its folder is named by the first two characters).
DIGEST = re.compile(r"[0-9a-f]{64}")


class FileBlobStore:
    """The BlobStore of the embedded default."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._remove_stale_temporary_files()

    def _remove_stale_temporary_files(self) -> None:
        """Half-written files a process killed in the middle of a write left (a live write is a matter of
        moments, so one older than STALE_TEMPORARY_S is nobody's)."""
        stale_before = time.time() - STALE_TEMPORARY_S
        for leftover in self.root.glob(f"*/{TEMPORARY_PREFIX}*"):
            with contextlib.suppress(OSError):  # gone meanwhile, or not ours to remove
                if leftover.stat().st_mtime < stale_before:
                    leftover.unlink()

    def put(self, data: bytes) -> str:
        """Store `data` once (atomically) and return its SHA-256. Bytes already stored are not written again,
        but their file's modification time becomes now: see `list_page`."""
        digest = hashlib.sha256(data).hexdigest()
        path = self.path(digest)
        try:
            os.utime(path)
        except FileNotFoundError:
            self._write(path, data)
        except OSError:  # stored, but not ours to touch (another user's file, a read-only mount): it stays
            pass
        return digest

    def _write(self, path: Path, data: bytes) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMPORARY_PREFIX)
        except OSError as exc:
            refuse_if_full(exc)
            raise
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            refuse_if_full(exc)
            raise

    def list_page(self, after: str | None, limit: int) -> BlobPage:
        """At most `limit` stored files in digest order, after the digest `after`: only `<root>/<xx>/<sha256>`
        files, never a temporary file or anything else someone put in the folder. A put of bytes already
        stored touches their file, so its modification time is the last put."""
        put_at: dict[str, float] = {}
        after = after or ""
        with os.scandir(self.root) as folders:
            shards = sorted(
                each.name
                for each in folders
                if len(each.name) == 2 and each.is_dir(follow_symlinks=False) and each.name >= after[:2]
            )
        for shard in shards:
            with os.scandir(self.root / shard) as entries:
                names = sorted(
                    entry.name
                    for entry in entries
                    if DIGEST.fullmatch(entry.name) and entry.name[:2] == shard and entry.name > after
                )
            for name in names:
                with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
                    status = (self.root / shard / name).lstat()
                    if stat.S_ISREG(status.st_mode):
                        put_at[name] = status.st_mtime
                if len(put_at) == limit:
                    return BlobPage(put_at=put_at, resume_after=name)
        return BlobPage(put_at=put_at, resume_after=None)

    def path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest

    def read(self, digest: str) -> bytes:
        """The bytes stored under `digest`; AssetGone (which names no path) when the file is missing."""
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            raise AssetGone("the stored file of this asset is gone") from None

    def delete(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def local_path(self, digest: str) -> Path | None:
        path = self.path(digest)
        return path if path.exists() else None

    def public_url(self, digest: str, *, expires_at: float, mime_type: str) -> str | None:
        return None  # the API serves files itself, by its own signed links


def refuse_if_full(exc: OSError) -> None:
    """Unavailable (retry later) when `exc` says the disk is full."""
    if exc.errno in DISK_FULL:
        raise Unavailable(f"the asset folder cannot take more files now: {exc.strerror}") from exc
