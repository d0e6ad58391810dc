"""Listing an owner's asset records (Scenario's `GET /assets`), on both stores: newest first by (created_at,
id), in pages resumed by the key of the last record, never another owner's nor an expired one."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import psycopg

from reangle.core.ports import AssetRecord, JobStore
from reangle.store.pg_schema import upgrade
from reangle.store.sqlite import SqliteStore
from tests.store.test_job_stores import T0


def record(
    asset_id: str, created_at: float, *, owner: str = "owner-1", job_id: str | None = None
) -> AssetRecord:
    return AssetRecord(
        id=asset_id,
        owner=owner,
        sha256="ab" * 32,
        mime_type="image/png",
        width=8,
        height=8,
        bytes=100,
        created_at=created_at,
        expires_at=created_at + 100,
        job_id=job_id,
    )


def all_pages(store: JobStore, size: int, **filters: bool) -> list[list[str]]:
    """The ids of each page, following the keys to the end."""
    pages: list[list[str]] = []
    before = None
    while True:
        records, before = store.list_assets("owner-1", now=T0, limit=size, before=before, **filters)
        pages.append([found.id for found in records])
        if before is None:
            return pages


def test_pages_run_newest_first_and_ties_in_id_order(job_store: JobStore) -> None:
    # inserted out of order; b, c and d share one created_at, which the key's id part orders
    for asset_id, created_at in [("c", T0 - 5), ("a", T0 - 9), ("e", T0 - 1), ("b", T0 - 5), ("d", T0 - 5)]:
        job_store.insert_asset(record(asset_id, created_at))
    assert all_pages(job_store, 2) == [["e", "d"], ["c", "b"], ["a"]]
    assert all_pages(job_store, 5) == [["e", "d", "c", "b", "a"]]
    records, key = job_store.list_assets("owner-1", now=T0, limit=3)
    assert records == [record("e", T0 - 1), record("d", T0 - 5), record("c", T0 - 5)]  # every field read back
    assert key == (T0 - 5, "c")


def test_only_the_owners_records_not_yet_expired_are_listed(job_store: JobStore) -> None:
    job_store.insert_asset(record("mine", T0 - 50))
    job_store.insert_asset(record("theirs", T0 - 40, owner="owner-2"))
    job_store.insert_asset(replace(record("expired", T0 - 30), expires_at=T0 - 0.001))
    job_store.insert_asset(replace(record("expiring_now", T0 - 20), expires_at=T0))  # as AssetService.get
    assert all_pages(job_store, 10) == [["expiring_now", "mine"]]
    assert job_store.list_assets("owner-2", now=T0, limit=10) == (
        [record("theirs", T0 - 40, owner="owner-2")],
        None,
    )
    assert job_store.list_assets("owner-3", now=T0, limit=10) == ([], None)


def test_outputs_only_leaves_the_uploads_out(job_store: JobStore) -> None:
    job_store.insert_asset(record("upload_1", T0 - 3))
    job_store.insert_asset(record("output_1", T0 - 2, job_id="job_1"))
    job_store.insert_asset(record("upload_2", T0 - 1))
    job_store.insert_asset(record("output_2", T0 - 4, job_id="job_2"))
    assert all_pages(job_store, 1, outputs_only=True) == [["output_1"], ["output_2"]]
    assert all_pages(job_store, 10) == [["upload_2", "output_1", "upload_1", "output_2"]]


def test_sqlite_indexes_the_owners_assets_newest_first(tmp_path: Path) -> None:
    SqliteStore(tmp_path / "reangle.sqlite3").close()
    with sqlite3.connect(tmp_path / "reangle.sqlite3") as db:
        plan = db.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM assets WHERE owner = ? AND expires_at >= ? "
            "AND (created_at, id) < (?, ?) ORDER BY created_at DESC, id DESC LIMIT 5",
            ("owner-1", T0, T0, "x"),
        ).fetchall()
    db.close()
    details = " ".join(row[-1] for row in plan)
    assert "USING INDEX assets_owner" in details
    assert "TEMP B-TREE" not in details  # the index gives the order: no sort


def test_postgresql_indexes_the_owners_assets_newest_first(pg_url: str) -> None:
    upgrade(pg_url)
    with psycopg.connect(pg_url) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = conn.execute(
            "EXPLAIN SELECT id FROM assets WHERE owner = 'owner-1' AND expires_at >= 1 "
            "AND (created_at, id) < (2, 'x') ORDER BY created_at DESC, id DESC LIMIT 5"
        ).fetchall()
    details = " ".join(str(row[0]) for row in plan)
    assert "assets_owner" in details
    assert "Sort" not in details.replace("Sort Key", "")
