"""Assets: validated images on arrival (uploads) and encoded results (outputs), with an expiry each."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import threading
import time
import unicodedata
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from PIL import Image

from reangle.core.images import decode_image
from reangle.core.ports import AssetRecord, BlobStore, JobStore, client_waiting
from reangle.errors import AssetGone, InvalidInput, NotFound, TooLarge, Unavailable

T = TypeVar("T")

log = logging.getLogger("reangle.assets")

#: A file no asset names is deleted once it is this old: a put and the insert of its row are moments apart.
ORPHAN_GRACE_S = 3600.0
#: Files each sweep looks at for orphans: a page of the store's listing (one S3 request), so that no sweep
#: lists a whole large bucket; the walk goes on where the last sweep stopped, and starts over at the end.
ORPHAN_PAGE = 1000
#: How long a waiting client's new asset waits for the files lock before it is refused (503, retry).
CLIENT_FILES_WAIT_S = 1.0
#: The longest file name an upload may give (a file name's usual limit).
MAX_NAME_CHARS = 255


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def upload_name(name: str, *, field: str, label: str | None = None) -> str:
    """The file name an upload gives, as kept: at most MAX_NAME_CHARS characters, none of them a control
    character; otherwise InvalidInput naming `field` (and saying `label`, the field by default)."""
    label = label or field
    hint = "send the file's own name, such as my-photo.png"
    if len(name) > MAX_NAME_CHARS:
        message = f"{label} has {len(name):,} characters; at most {MAX_NAME_CHARS}"
        raise InvalidInput(message, field=field, hint=hint)
    # C0, DEL and C1 controls, line and paragraph separators, half a surrogate pair
    if any(unicodedata.category(char) in ("Cc", "Zl", "Zp", "Cs") for char in name):
        raise InvalidInput(f"{label} has a control character: {name!r}", field=field, hint=hint)
    return name


class AssetService:
    def __init__(
        self,
        store: JobStore,
        blobs: BlobStore,
        *,
        max_bytes: int,
        max_pixels: int,
        upload_ttl_s: float,
        result_ttl_s: float,
        max_concurrent_decodes: int = 2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.blobs = store, blobs
        self.max_bytes, self.max_pixels = max_bytes, max_pixels
        self.upload_ttl_s, self.result_ttl_s = upload_ttl_s, result_ttl_s
        self.clock = clock
        self._files_lock = threading.Lock()
        self._orphan_walk: str | None = None  #: where the next sweep's page of stored files starts
        #: A small file can decode to 40 MP (about 0.5 GB and seconds of CPU): however many arrive at once,
        #: only this many decode at a time, the others wait their turn.
        self._decode_slots = max_concurrent_decodes
        self._decoding: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    def ingest(self, owner: str, data: bytes, *, field: str = "file", name: str | None = None) -> AssetRecord:
        """Accept an uploaded image: decoded for real, limited in bytes and pixels; stored as sent, with the
        file `name` its uploader gave (which the caller checked with `upload_name`)."""
        if len(data) > self.max_bytes:
            raise TooLarge(
                f"{field} is {len(data):,} bytes, more than the limit of {self.max_bytes:,}", field=field
            )
        decoded = decode_image(data, name=field, max_pixels=self.max_pixels)
        width, height = decoded.image.size
        return self._record(owner, data, decoded.mime_type, width, height, self.upload_ttl_s, name=name)

    async def ingest_async(
        self, owner: str, data: bytes, *, field: str = "file", name: str | None = None
    ) -> AssetRecord:
        """`ingest` in a worker thread: decoding a large image must not stall the event loop."""
        return await self.decoding(lambda: self.ingest(owner, data, field=field, name=name))

    async def decoding(self, call: Callable[[], T]) -> T:
        """`call`, work that decodes an image, in a worker thread once one of the decode slots is free."""
        loop = asyncio.get_running_loop()
        slots = self._decoding.setdefault(loop, asyncio.Semaphore(self._decode_slots))
        async with slots:
            return await asyncio.to_thread(call)

    def put_output(
        self, owner: str, data: bytes, mime_type: str, width: int, height: int, *, job_id: str | None = None
    ) -> AssetRecord:
        return self._record(owner, data, mime_type, width, height, self.result_ttl_s, job_id=job_id)

    async def converted(
        self, source: AssetRecord, mime_type: str, convert: Callable[[], tuple[bytes, tuple[int, int]]]
    ) -> AssetRecord:
        """`source` in another format (`convert` decodes and encodes it), made once: asking again gets the
        same asset, not one more in its owner's list (its id comes from the source's and the format)."""
        asset_id = "asset_" + hashlib.sha256(f"{source.id}>{mime_type}".encode()).hexdigest()[:24]
        found = self._stored(asset_id)
        if found is None:
            data, (width, height) = await self.decoding(convert)
            args = (source.owner, data, mime_type, width, height, self.result_ttl_s)
            self._record(*args, job_id=source.job_id, asset_id=asset_id)
            found = self._stored(asset_id)  # this one, or a twin's stored meanwhile
        if found is None or found.expires_at <= self.clock():  # expired, not yet swept: a new one
            data, (width, height) = await self.decoding(convert)
            return self.put_output(source.owner, data, mime_type, width, height, job_id=source.job_id)
        return found

    def _record(
        self,
        owner: str,
        data: bytes,
        mime: str,
        width: int,
        height: int,
        ttl: float,
        *,
        job_id: str | None = None,
        name: str | None = None,
        asset_id: str | None = None,
    ) -> AssetRecord:
        """A new asset of `data`; under `asset_id` when given, unless one is stored under it already."""
        now = self.clock()
        # one lock around "file + row" and around the sweep's deletes: identical bytes share one file, and a
        # sweep must not delete it between a new asset reusing it and that asset's row being written
        with self._files_locked():
            record = AssetRecord(
                id=asset_id or new_id("asset"),
                owner=owner,
                sha256=self.blobs.put(data),
                mime_type=mime,
                width=width,
                height=height,
                bytes=len(data),
                created_at=now,
                expires_at=now + ttl,
                job_id=job_id,
                name=name,
            )
            self.store.insert_asset(record, if_absent=asset_id is not None)
        return record

    @contextmanager
    def _files_locked(self) -> Iterator[None]:
        """The files lock; a waiting client waits for it CLIENT_FILES_WAIT_S at most, then Unavailable (a
        retention sweep holds it while its store call waits out another process's database lock)."""
        if not self._files_lock.acquire(timeout=CLIENT_FILES_WAIT_S if client_waiting.get() else -1):
            raise Unavailable("the asset store is busy: a retention sweep is under way")
        try:
            yield
        finally:
            self._files_lock.release()

    def get(self, owner: str, asset_id: str) -> AssetRecord:
        """The asset if it exists, has not expired and belongs to `owner`; otherwise NotFound."""
        record = self._stored(asset_id)
        if record is None or record.owner != owner or record.expires_at < self.clock():
            raise NotFound(f"no asset {asset_id}")
        return record

    def file_for(self, asset_id: str) -> tuple[AssetRecord, Path] | None:
        """The record and local file of an asset, or None once it is gone (or not on this machine). No owner
        check: for callers that hold a signed link or a job they were already allowed to see."""
        record = self._stored(asset_id)
        if record is None:
            return None
        path = self.blobs.local_path(record.sha256)
        return (record, path) if path is not None else None

    def read_bytes(self, asset_id: str) -> tuple[bytes, str] | None:
        """An asset's bytes and MIME type (no owner check, as `file_for`), or None once it is gone."""
        record = self._stored(asset_id)
        if record is None:
            return None
        try:
            return self.blobs.read(record.sha256), record.mime_type
        except AssetGone:  # swept between the lookup and the read, or lost
            return None

    def _stored(self, asset_id: str) -> AssetRecord | None:
        """The stored record of an id as a URL path gives it. No id this server hands out holds a NUL, and
        PostgreSQL cannot even compare one: such an id is unknown without asking the store."""
        return self.store.get_asset(asset_id) if "\x00" not in asset_id else None

    def load_image(self, record: AssetRecord) -> Image.Image:
        """An input's pixels, upright and RGB, as the engine wants them."""
        try:
            data = self.blobs.read(record.sha256)
        except AssetGone:
            raise AssetGone(f"the stored file of asset {record.id} is gone") from None
        return decode_image(data, max_pixels=self.max_pixels * 2).image

    def sweep(self) -> int:
        """Delete expired asset rows and the files no asset uses any more, then look at the next page of
        stored files for orphans (`delete_orphans`); returns files deleted."""
        with self._files_lock:
            unused = self.store.delete_expired_assets(self.clock())
            for digest in unused:
                self.blobs.delete(digest)
        orphans = self.delete_orphans()
        if orphans:
            log.info("retention sweep: deleted %d orphan files (no asset names them)", orphans)
        return len(unused) + orphans

    def delete_orphans(self) -> int:
        """Of the next page of stored files, delete those older than ORPHAN_GRACE_S that no asset names: those
        of a put whose row was never inserted (the process died in between, or the insert failed). Returns
        how many.

        Why this deletes no file about to get a row. In this process, `_record` holds the files lock around
        its put and insert, and the page is checked and deleted under it. Across processes (replicas on one
        bucket or data folder), a put of bytes already stored makes their file new again (the folder's put
        touches it, S3's rewrites it), and an insert follows its put within moments: a file last put the
        grace period ago either got its row long before the check below reads the rows, or never will. Left
        open is only a put of the very same bytes, by another process, landing between the listing and the
        delete of a file over an hour old (an S3 delete is one request per orphan, and orphans are rare), as
        for the files `delete_expired_assets` frees."""
        page = self.blobs.list_page(self._orphan_walk, ORPHAN_PAGE)
        self._orphan_walk = page.resume_after
        put_before = self.clock() - ORPHAN_GRACE_S
        old = [digest for digest, put_at in page.put_at.items() if put_at < put_before]
        if not old:
            return 0
        with self._files_lock:
            orphans = self.store.hashes_without_assets(old)
            for digest in orphans:
                self.blobs.delete(digest)
        return len(orphans)
