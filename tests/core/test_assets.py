"""AssetService: however many images arrive at once, only a few decode at a time."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import reangle.core.assets as assets_module
from reangle.core.assets import AssetService
from reangle.store.files import FileBlobStore
from reangle.store.sqlite import SqliteStore
from tests.conftest import image_bytes, make_image


@pytest.mark.parametrize("way", ["ingest", "stored"])
def test_concurrent_decodes_run_at_most_the_configured_number_at_once(
    store: SqliteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, way: str
) -> None:
    """Uploads (`ingest_async`), and decodes of stored images in `decoding` (a Scenario format conversion)."""
    decoding, most = 0, 0
    lock = threading.Lock()
    real_decode = assets_module.decode_image

    def counting_decode(*args: Any, **kwargs: Any) -> Any:
        """The real decode, counted, and slow enough for the ingests to overlap."""
        nonlocal decoding, most
        with lock:
            decoding += 1
            most = max(most, decoding)
        try:
            time.sleep(0.05)
            return real_decode(*args, **kwargs)
        finally:
            with lock:
                decoding -= 1

    service = AssetService(
        store,
        FileBlobStore(tmp_path / "assets"),
        max_bytes=1 << 20,
        max_pixels=1 << 20,
        upload_ttl_s=60,
        result_ttl_s=60,
        max_concurrent_decodes=2,
    )
    data = [image_bytes(make_image(20 + i, 20)) for i in range(8)]
    stored = [service.ingest("owner", item) for item in data] if way == "stored" else []
    monkeypatch.setattr(assets_module, "decode_image", counting_decode)

    async def decode_all() -> list[int]:
        if way == "ingest":
            records = await asyncio.gather(*(service.ingest_async("owner", item) for item in data))
            return [record.width for record in records]
        images = await asyncio.gather(
            *(service.decoding(lambda record=record: service.load_image(record)) for record in stored)
        )
        return [image.width for image in images]

    assert asyncio.run(decode_all()) == [20 + i for i in range(8)]
    assert most == 2
