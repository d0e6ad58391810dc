"""The job stores under test: each test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reangle.core.ports import JobStore
from reangle.store.postgres import PostgresStore
from reangle.store.sqlite import SqliteStore

StoreOpener = Callable[[], JobStore]


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreOpener]:
    """Opens one more store instance on the test's own database (as another process would); all are closed
    afterwards."""
    opened: list[JobStore] = []
    if request.param == "sqlite":
        path = tmp_path / "reangle.sqlite3"

        def make() -> JobStore:
            return SqliteStore(path)
    else:
        url: str = request.getfixturevalue("pg_url")

        def make() -> JobStore:
            return PostgresStore(url)

    def opener() -> JobStore:
        opened.append(make())
        return opened[-1]

    yield opener
    for store in opened:
        store.close()


@pytest.fixture
def job_store(open_store: StoreOpener) -> JobStore:
    return open_store()
