"""Assets: validated images on arrival (uploads) and encoded results (outputs), with an expiry each."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from PIL import Image

from reangle.core.images import decode_image
from reangle.core.ports import AssetRecord, BlobStore, JobStore
from reangle.errors import AssetGone, NotFound, TooLarge

T = TypeVar("T")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


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
        #: A small file can decode to 40 MP (about 0.5 GB and seconds of CPU): however many arrive at once,
        #: only this many decode at a time, the others wait their turn.
        self._decode_slots = max_concurrent_decodes
        self._decoding: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    def ingest(self, owner: str, data: bytes, *, field: str = "file") -> AssetRecord:
        """Accept an uploaded image: decoded for real, limited in bytes and pixels; stored as sent."""
        if len(data) > self.max_bytes:
            raise TooLarge(
                f"{field} is {len(data):,} bytes, more than the limit of {self.max_bytes:,}", field=field
            )
        decoded = decode_image(data, name=field, max_pixels=self.max_pixels)
        width, height = decoded.image.size
        return self._record(owner, data, decoded.mime_type, width, height, self.upload_ttl_s)

    async def ingest_async(self, owner: str, data: bytes, *, field: str = "file") -> AssetRecord:
        """`ingest` in a worker thread: decoding a large image must not stall the event loop."""
        return await self.decoding(lambda: self.ingest(owner, data, field=field))

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
    ) -> AssetRecord:
        now = self.clock()
        # one lock around "file + row" and around the sweep's deletes: identical bytes share one file, and a
        # sweep must not delete it between a new asset reusing it and that asset's row being written
        with self._files_lock:
            record = AssetRecord(
                id=new_id("asset"),
                owner=owner,
                sha256=self.blobs.put(data),
                mime_type=mime,
                width=width,
                height=height,
                bytes=len(data),
                created_at=now,
                expires_at=now + ttl,
                job_id=job_id,
            )
            self.store.insert_asset(record)
        return record

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
        """Delete expired asset rows and the files no asset uses any more; returns files deleted."""
        with self._files_lock:
            orphans = self.store.delete_expired_assets(self.clock())
            for digest in orphans:
                self.blobs.delete(digest)
        return len(orphans)
