"""SQLite only: a file an older reangle made gains this version's columns (its jobs marked as stored before
reangle recorded their route), and a file a newer reangle upgraded is refused, untouched."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from reangle.core.jobs import SOURCE_UNRECORDED
from reangle.core.ports import NewJob
from reangle.store.newer_schema import NewerSchema
from reangle.store.schema import SQLITE_SCHEMA_VERSION
from reangle.store.sqlite import SqliteStore
from tests.store.test_job_stores import new_job


def user_version(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


def test_a_file_from_before_sources_marks_its_jobs_and_records_the_version(tmp_path: Path) -> None:
    path = tmp_path / "reangle.db"
    store = SqliteStore(path)
    store.insert_jobs([NewJob(job=new_job("job_old"))])
    store.close()
    with sqlite3.connect(path) as db:  # as an older reangle left it
        db.execute("ALTER TABLE jobs DROP COLUMN source")
        db.execute("PRAGMA user_version = 0")

    store = SqliteStore(path)
    try:
        store.insert_jobs([NewJob(job=new_job("job_new"))])
        old, new = store.get_job("job_old"), store.get_job("job_new")
        assert old is not None
        assert new is not None
        assert (old.source, new.source) == (SOURCE_UNRECORDED, None)
    finally:
        store.close()
    assert user_version(path) == SQLITE_SCHEMA_VERSION


def test_a_file_of_the_current_version_keeps_its_rows_as_they_are(tmp_path: Path) -> None:
    path = tmp_path / "reangle.db"
    store = SqliteStore(path)
    store.insert_jobs([NewJob(job=replace(new_job("job_1"), source="runpod:ep"))])
    store.close()
    assert user_version(path) == SQLITE_SCHEMA_VERSION
    store = SqliteStore(path)
    try:
        job = store.get_job("job_1")
        assert job is not None
        assert job.source == "runpod:ep"
    finally:
        store.close()


def test_a_file_a_newer_reangle_upgraded_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "reangle.db"
    SqliteStore(path).close()
    newer = SQLITE_SCHEMA_VERSION + 1
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {newer}")
        db.execute("CREATE TABLE from_the_future (x INTEGER)")
    before = path.read_bytes()

    with pytest.raises(NewerSchema) as refused:
        SqliteStore(path)
    assert refused.value.message == (
        f"the database {path} has schema version {newer}, from a newer reangle; this one knows versions up "
        f"to {SQLITE_SCHEMA_VERSION}"
    )
    assert (
        refused.value.hint == "run that newer reangle on it, or restore the backup taken before the upgrade"
    )
    assert path.read_bytes() == before
