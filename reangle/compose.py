"""The composition root: which job store, blob store and event bus the settings ask for.

Each back end is one module under `reangle.store`, named here by its URL scheme and imported only when chosen
(the embedded default imports neither psycopg nor boto3).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

from reangle.core.ports import BlobStore, EventBus, JobStore
from reangle.settings import Settings

SQLITE_FILE = "reangle.sqlite3"
T = TypeVar("T")


class SettingsError(ValueError):
    """A setting names a back end this reangle does not have, or names it wrongly."""


def open_job_store(settings: Settings) -> JobStore:
    url = settings.database_url
    if not url:
        from reangle.store.sqlite import SqliteStore

        return SqliteStore(settings.data_dir / SQLITE_FILE)
    return _opener(JOB_STORES, url, "REANGLE_DATABASE_URL")(url, settings)


def open_blob_store(settings: Settings) -> BlobStore:
    url = settings.storage_url
    if not url:
        from reangle.store.files import FileBlobStore

        return FileBlobStore(settings.data_dir / "assets")
    return _opener(BLOB_STORES, url, "REANGLE_STORAGE_URL")(url, settings)


def open_event_bus(settings: Settings, store: JobStore) -> EventBus:
    """Between the processes sharing the database: PostgreSQL's NOTIFY; in-process otherwise."""
    url = settings.database_url
    if url and urlsplit(url).scheme.lower() in JOB_STORES:
        from reangle.runtime.pg_bus import PgEventBus

        return PgEventBus(url, store)
    from reangle.runtime.local_bus import LocalEventBus

    return LocalEventBus()


def _postgres(url: str, settings: Settings) -> JobStore:
    from reangle.store.postgres import PostgresStore

    return PostgresStore(url)


def _s3(url: str, settings: Settings) -> BlobStore:
    from reangle.store.s3 import S3BlobStore

    return S3BlobStore.from_settings(url, settings)


JOB_STORES: dict[str, Callable[[str, Settings], JobStore]] = {"postgresql": _postgres, "postgres": _postgres}
BLOB_STORES: dict[str, Callable[[str, Settings], BlobStore]] = {"s3": _s3}


def _opener(openers: dict[str, T], url: str, setting: str) -> T:
    scheme = urlsplit(url).scheme.lower()
    if scheme not in openers:
        choices = ", ".join(f"{name}://..." for name in openers)
        raise SettingsError(f"{setting}={_without_password(url)!r}: use {choices}, or leave it empty")
    return openers[scheme]


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()
