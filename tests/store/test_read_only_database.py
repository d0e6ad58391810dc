"""The embedded store on a data folder it cannot write in (a file system remounted read-only): opening it
there is one line naming the folder, and a database that turns read-only under a running server answers
Unavailable (the API's 503, the runner's retries), never SQLite's own error."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from reangle.core.ports import NewJob
from reangle.errors import InvalidInput, Unavailable
from reangle.store import sqlite as sqlite_store
from reangle.store.sqlite import SqliteStore
from tests.store.read_only import REASON, read_only_folder
from tests.store.test_job_stores import new_job


def turn_read_only(store: SqliteStore) -> sqlite3.Connection:
    """Swap the store's connection for a read-only one on the same file, as SQLite has it once the file
    system under it is remounted read-only; returns the connection taken away."""
    read_only = sqlite3.connect(
        f"file:{store.path}?mode=ro",
        uri=True,
        check_same_thread=False,
        isolation_level=None,
        factory=sqlite_store._Connection,
    )
    read_only.row_factory = sqlite3.Row
    writable = store._db
    store._db = store._lock._db = read_only
    store._lock._busy_timeout_s = None
    return writable


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "reangle.sqlite3")
    yield opened
    opened.close()


def test_a_database_turned_read_only_is_unavailable_and_still_read(store: SqliteStore) -> None:
    store.insert_jobs([NewJob(job=new_job("job_0"))])
    writable = turn_read_only(store)
    with pytest.raises(Unavailable, match="attempt to write a readonly database"):
        store.insert_jobs([NewJob(job=new_job("job_1"))])
    assert store.get_job("job_0") is not None
    writable.close()


def test_a_database_in_a_read_only_folder_is_one_line_naming_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    with read_only_folder(folder, monkeypatch), pytest.raises(InvalidInput) as refused:
        SqliteStore(folder / "reangle.sqlite3")
    assert refused.value.message == f"cannot write in the data folder {folder}: {REASON}"
    assert refused.value.field == "data-dir"
