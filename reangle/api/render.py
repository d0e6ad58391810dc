"""Jobs and assets as the native API shows them, with absolute signed download links (or the object store's
own presigned links, when it gives them)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from reangle.api.signing import UrlSigner
from reangle.core.jobs import Job
from reangle.core.ports import AssetRecord, BlobStore, JobStore


def iso(timestamp: float | None) -> str | None:
    return None if timestamp is None else _iso(timestamp)


@lru_cache(maxsize=4096)  # a polled job shows the same timestamps on every read
def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


#: The most a file link's expiry is rounded up by (see `stable_expiry`).
LINK_EXPIRY_STEP_S = 300


def stable_expiry(expires_at: float, ttl_s: float) -> int:
    """`expires_at` rounded up to a step (a tenth of the TTL, at most `LINK_EXPIRY_STEP_S`), so that an asset
    read again within the step gets the same link and a browser's cached copy of it is used. A TTL under 10 s
    has no whole-second step: its links expire as given."""
    step = int(min(LINK_EXPIRY_STEP_S, ttl_s / 10))
    return int(expires_at) if step < 1 else math.ceil(expires_at / step) * step


@dataclass(frozen=True, kw_only=True)
class Links:
    """Builds download links for one request: absolute on `base_url`, expiring after `ttl_s` (rounded up by
    `stable_expiry`, never past the asset); links straight to the blob store when it has its own (S3
    presigned URLs)."""

    signer: UrlSigner
    base_url: str
    ttl_s: float
    store: JobStore
    blobs: BlobStore
    #: The engine makes meaningless demo images (tiny, fake): jobs say so.
    demo: bool = False

    def asset_url(self, record: AssetRecord) -> str:
        expires_at = min(record.expires_at, time.time() + self.ttl_s)
        direct = self.blobs.public_url(record.sha256, expires_at=expires_at, mime_type=record.mime_type)
        if direct is not None:
            return direct
        expires = min(int(record.expires_at), stable_expiry(time.time() + self.ttl_s, self.ttl_s))
        signature = self.signer.signature(record.id, expires)
        return f"{self.base_url}/v1/files/{record.id}?expires={expires}&sig={signature}"

    def asset_url_by_id(self, asset_id: str) -> str | None:
        record = self.store.get_asset(asset_id)
        return self.asset_url(record) if record else None


def asset_json(record: AssetRecord, links: Links) -> dict[str, Any]:
    return {
        "id": record.id,
        "url": links.asset_url(record),
        "mime_type": record.mime_type,
        "width": record.width,
        "height": record.height,
        "bytes": record.bytes,
        "name": record.name,
        "created_at": iso(record.created_at),
        "expires_at": iso(record.expires_at),
    }


def output_records(store: JobStore, jobs: Iterable[Job]) -> dict[str, AssetRecord]:
    """The records of the jobs' outputs that are still stored, by id, in one read."""
    ids = [output.asset_id for job in jobs for output in job.outputs]
    return {record.id: record for record in store.get_assets(ids)} if ids else {}


def job_json(job: Job, links: Links, records: Mapping[str, AssetRecord] | None = None) -> dict[str, Any]:
    """The job, with links to its outputs; `records` has their asset records when the caller read them with
    the job (else they are read here)."""
    if records is None:
        records = output_records(links.store, [job])
    assets = []
    for output in job.outputs:
        record = records.get(output.asset_id)
        item: dict[str, Any] = {
            "id": output.asset_id,
            "url": links.asset_url(record) if record else None,
            "width": output.width,
            "height": output.height,
            "mime_type": output.mime_type,
            "seed": output.seed,
            "role": output.role,
        }
        if output.pose is not None:
            item["pose"] = output.pose
        if output.plan is not None:
            item["plan"] = output.plan
        assets.append(item)
    return {
        "id": job.id,
        "model": job.model,
        "kind": job.kind.value,
        "status": job.status.value,
        "progress": round(job.progress, 4),
        "attempt": job.attempt,
        "priority": job.priority,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "input": job.input,
        "output": {"assets": assets},
        "demo": links.demo,
        "error": job.error.to_dict() if job.error else None,
        "timings": {name: round(value, 4) for name, value in job.timings.items()},
        "batch_id": job.batch_id,
        "time_limits": asdict(job.limits) if job.limits else None,
        "history": [{"status": change.status.value, "at": iso(change.at)} for change in job.history],
    }
