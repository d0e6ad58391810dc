"""The embedded job store: one SQLite file in WAL mode holding jobs, asset records and API keys.

Every write a runner makes is fenced by the job's attempt: once a restart re-queues a job as attempt N+1,
writes from attempt N match no row and change nothing.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import sqlite3
import threading
import time
from asyncio import events as asyncio_events
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from reangle.core.jobs import Job, JobError, JobStatus, OutputAsset
from reangle.core.ports import (
    ApiKeyRecord,
    AssetKey,
    AssetRecord,
    NewJob,
    WebhookDelivery,
    WorkerStatus,
    client_waiting,
)
from reangle.core.webhooks import new_secret, secrets_in_use, target_json
from reangle.errors import Unavailable
from reangle.store.data_lock import check_writable
from reangle.store.newer_schema import newer_schema
from reangle.store.outbox import (
    INSERT_DELIVERY,
    JobWebhook,
    progress_delivery,
    skipped_deliveries,
    status_delivery,
)
from reangle.store.queue_room import QueueRoom
from reangle.store.rows import (
    all_jobs_query,
    asset_from_row,
    asset_listing_query,
    asset_page,
    delivery_from_row,
    history_json,
    interrupted_error,
    job_from_row,
    limits_json,
    worker_from_row,
    worker_values,
)
from reangle.store.schema import (
    ADDED_COLUMNS,
    ASSET_COLUMNS,
    DELIVERY_COLUMNS,
    JOB_COLUMNS,
    SCHEMA,
    SQLITE_SCHEMA_VERSION,
    WORKER_COLUMNS,
)

SELECT_JOBS = f"SELECT {JOB_COLUMNS} FROM jobs"
SELECT_JOB_BY_ID = f"{SELECT_JOBS} WHERE id = ?"
SELECT_JOBS_WITH_HASH = f"SELECT {JOB_COLUMNS}, request_hash FROM jobs"
SELECT_ASSET_BY_ID = f"SELECT {ASSET_COLUMNS} FROM assets WHERE id = ?"
#: The ids of the output assets an ended job made before it ended but does not list among its outputs (not
#: those made from its outputs afterwards, as Scenario's format conversions).
UNKEPT_OUTPUTS = (
    "SELECT asset.id FROM assets AS asset JOIN jobs ON jobs.id = asset.job_id "
    "WHERE jobs.status IN ('succeeded', 'failed', 'canceled') AND asset.created_at <= jobs.finished_at "
    "AND asset.id NOT IN ("
    "SELECT json_extract(kept.value, '$.asset_id') FROM json_each(jobs.outputs) AS kept)"
)


#: How long a write waits for another process's lock on the file (the `sqlite3` shell, a backup, `reangle
#: keys`) before the call answers Unavailable; and how long a call waits for this process's other calls.
BUSY_TIMEOUT_S = 5.0
#: The same wait for a call made on the event loop (request handlers, the runner's bookkeeping, heartbeats):
#: while it waits, the server answers nothing else; and for one made for a client waiting for the answer.
LOOP_BUSY_TIMEOUT_S = 1.0

#: SQLite's result codes for states that pass (another process's lock, a full disk, a failing disk, a file
#: system remounted read-only): the call answers Unavailable, retried like a database that is down. Other
#: errors are bugs and stay as they are.
PASSING_STATES = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_READONLY,
    }
)


class _Connection(sqlite3.Connection):
    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        try:
            return super().execute(sql, parameters)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF in PASSING_STATES:
                raise Unavailable(f"the job database cannot be used now: {exc}") from exc
            raise


def _make_private(file: Path) -> None:
    """Take away the group's and others' permissions of `file` where it has some (and is this user's)."""
    with contextlib.suppress(OSError):  # missing, or another user's: it stays as it is
        mode = file.stat().st_mode
        if mode & 0o077:
            file.chmod(mode & 0o700)


def _open(path: Path) -> sqlite3.Connection:
    """The database at `path`, made if missing, with the current schema."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # readable by its owner only: it holds webhook signing secrets (SQLite gives its -wal and -shm files
    # the database's permissions); a database an older reangle made readable to others is made private
    if not path.exists():
        path.touch(mode=0o600, exist_ok=True)
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        _make_private(file)
    db = sqlite3.connect(
        path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_S, factory=_Connection
    )
    try:
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        found = db.execute("PRAGMA user_version").fetchone()[0]
        if found > SQLITE_SCHEMA_VERSION:
            raise newer_schema(f"the database {path}", found, SQLITE_SCHEMA_VERSION)
        db.executescript(SCHEMA)
        if found < SQLITE_SCHEMA_VERSION:
            _add_columns(db)
    except BaseException:
        db.close()
        raise
    return db


def _add_columns(db: sqlite3.Connection) -> None:
    """Bring the tables of an older file to this version's, as one transaction (so with its rows' values)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        for table, column, kind, before in ADDED_COLUMNS:
            columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            if column not in columns:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
                if before is not None:
                    db.execute(f"UPDATE {table} SET {column} = ?", (before,))
        db.execute(f"PRAGMA user_version = {SQLITE_SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


class _ConnectionLock:
    """The store's one connection, used by one thread at a time. A wait for it is bounded too: while another
    process holds the file's lock, this process's other calls take turns waiting on it, and a request queued
    behind them would wait as long as that lock. The wait for the file's lock is set for each caller: shorter
    on the event loop (LOOP_BUSY_TIMEOUT_S), which answers nothing else meanwhile, and for a waiting client
    (client_waiting)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._lock = threading.RLock()
        self._db = db
        self._busy_timeout_s: float | None = None

    def __enter__(self) -> None:
        briefly = asyncio_events._get_running_loop() is not None or client_waiting.get()
        wanted = min(LOOP_BUSY_TIMEOUT_S, BUSY_TIMEOUT_S) if briefly else BUSY_TIMEOUT_S
        if not self._lock.acquire(timeout=wanted):
            raise Unavailable(f"the job database is busy: nothing could use it for {wanted:g} s")
        if wanted != self._busy_timeout_s:
            try:
                self._db.execute(f"PRAGMA busy_timeout = {round(wanted * 1000)}")
            except BaseException:
                self._lock.release()
                raise
            self._busy_timeout_s = wanted

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    @contextmanager
    def unbounded(self) -> Iterator[None]:
        with self._lock:
            yield


class SqliteStore:
    """The JobStore of the embedded default."""

    def __init__(self, path: Path) -> None:
        #: The database file (other processes, such as the `sqlite3` shell, may open it too).
        self.path = path
        try:
            self._db = _open(path)
        except (OSError, sqlite3.OperationalError, Unavailable):
            check_writable(path.parent, path)  # a read-only folder or file is one line naming the folder
            raise
        self._lock = _ConnectionLock(self._db)

    def close(self) -> None:
        with self._lock.unbounded():  # at the end, however long the calls under way take
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # also after a COMMIT that failed (a full disk)
                    self._db.execute("ROLLBACK")
                raise

    # jobs ---------------------------------------------------------------------------------------------------

    def insert_jobs(
        self,
        new_jobs: Sequence[NewJob],
        *,
        max_queued: int | None = None,
        max_queued_per_owner: int | None = None,
    ) -> list[tuple[Job, str | None]]:
        """Insert all or none. Returns each job with the stored request hash: an idempotent repeat returns
        the job already stored under its key (the caller compares hashes). QueueFull when the new jobs would
        take the queued count past `max_queued`, or an owner's past `max_queued_per_owner`: checked in the
        insert's own transaction, so that concurrent submits cannot overfill the queue between a check and
        their insert."""
        out: list[tuple[Job, str | None]] = []
        with self._transaction() as db:
            waiting = db.execute("SELECT COUNT(*) FROM jobs WHERE status = ?", (JobStatus.QUEUED.value,))
            room = QueueRoom(
                waiting.fetchone()[0],
                max_queued=max_queued,
                max_per_owner=max_queued_per_owner,
                count_owner=lambda owner: db.execute(
                    "SELECT COUNT(*) FROM jobs WHERE owner = ? AND status = ?",
                    (owner, JobStatus.QUEUED.value),
                ).fetchone()[0],
            )
            for new in new_jobs:
                job = new.job
                if new.idempotency_key is not None:
                    row = db.execute(
                        f"{SELECT_JOBS_WITH_HASH} WHERE owner = ? AND idempotency_key = ?",
                        (job.owner, new.idempotency_key),
                    ).fetchone()
                    if row is not None:
                        out.append((job_from_row(row), row["request_hash"]))
                        continue
                room.take(job.owner)
                db.execute(
                    "INSERT INTO jobs (id, owner, model, kind, input, status, attempt, priority, created_at, "
                    "history, batch_id, idempotency_key, request_hash, webhook, source, limits) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        job.id,
                        job.owner,
                        job.model,
                        job.kind.value,
                        json.dumps(job.input),
                        job.status.value,
                        job.attempt,
                        job.priority,
                        job.created_at,
                        history_json(job.history),
                        job.batch_id,
                        new.idempotency_key,
                        new.request_hash,
                        target_json(job.webhook),
                        job.source,
                        limits_json(job.limits),
                    ),
                )
                out.append((job, new.request_hash))
        return out

    def job_by_idempotency_key(self, owner: str, key: str) -> tuple[Job, str | None] | None:
        with self._lock:
            row = self._db.execute(
                f"{SELECT_JOBS_WITH_HASH} WHERE owner = ? AND idempotency_key = ?", (owner, key)
            ).fetchone()
        return (job_from_row(row), row["request_hash"]) if row else None

    def get_job(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute(SELECT_JOB_BY_ID, (job_id,)).fetchone()
        return job_from_row(row) if row else None

    def get_job_with_outputs(self, job_id: str) -> tuple[Job, list[AssetRecord]] | None:
        job = self.get_job(job_id)
        if job is None:
            return None
        return job, self.get_assets([output.asset_id for output in job.outputs])

    def list_jobs(
        self, owner: str, *, status: JobStatus | None, limit: int, before_seq: int | None
    ) -> tuple[list[Job], int | None]:
        """Newest first. Returns the page and the cursor (a sequence number) for the next one."""
        sql = f"SELECT {JOB_COLUMNS}, seq FROM jobs WHERE owner = ?"
        args: list[Any] = [owner]
        if status is not None:
            sql += " AND status = ?"
            args.append(status.value)
        if before_seq is not None:
            sql += " AND seq < ?"
            args.append(before_seq)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(limit + 1)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        return [job_from_row(row) for row in rows], (rows[-1]["seq"] if more else None)

    def list_all_jobs(
        self,
        *,
        status: JobStatus | None = None,
        owner: str | None = None,
        model: str | None = None,
        limit: int,
    ) -> list[Job]:
        sql, args = all_jobs_query("?", status=status, owner=owner, model=model, limit=limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [job_from_row(row) for row in rows]

    def batch_jobs(self, batch_id: str) -> list[Job]:
        with self._lock:
            rows = self._db.execute(f"{SELECT_JOBS} WHERE batch_id = ? ORDER BY seq", (batch_id,)).fetchall()
        return [job_from_row(row) for row in rows]

    def claim_next(self, now: float, *, models: Collection[str] | None = None) -> Job | None:
        """Move the next queued job (highest priority, then oldest; of `models` only, when given) to
        processing."""
        which, args = "", list(models or ())
        if models is not None:
            which = f" AND model IN ({','.join('?' * len(args))})"
        with self._transaction() as db:
            row = db.execute(
                f"SELECT id FROM jobs WHERE status = 'queued'{which} ORDER BY priority DESC, seq LIMIT 1",
                args,
            ).fetchone()
            if row is None:
                return None
            self._set_status(db, row["id"], JobStatus.PROCESSING, now, extra="started_at = ?", args=[now])
            claimed = db.execute(SELECT_JOB_BY_ID, (row["id"],)).fetchone()
        return job_from_row(claimed)

    def claim_job(self, job_id: str, now: float, max_attempts: int) -> Job | None:
        with self._transaction() as db:
            row = db.execute(
                "SELECT status, attempt, cancel_requested FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
            if row is None or row["status"] not in (JobStatus.QUEUED, JobStatus.PROCESSING):
                return None
            if row["status"] == JobStatus.QUEUED:
                self._set_status(db, job_id, JobStatus.PROCESSING, now, extra="started_at = ?", args=[now])
            elif row["cancel_requested"]:
                self._set_status(db, job_id, JobStatus.CANCELED, now, extra="finished_at = ?", args=[now])
            elif row["attempt"] >= max_attempts:
                error = json.dumps(interrupted_error(row["attempt"]).to_dict())
                self._set_status(
                    db, job_id, JobStatus.FAILED, now, extra="finished_at = ?, error = ?", args=[now, error]
                )
            else:
                self._set_status(
                    db,
                    job_id,
                    JobStatus.PROCESSING,
                    now,
                    extra="attempt = attempt + 1, progress = 0, started_at = ?",
                    args=[now],
                )
            claimed = db.execute(SELECT_JOB_BY_ID, (job_id,)).fetchone()
        return job_from_row(claimed)

    def set_progress(
        self, job_id: str, attempt: int, progress: float, *, webhook_at: float | None = None
    ) -> bool:
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE jobs SET progress = ? WHERE id = ? AND attempt = ? AND status = 'processing'",
                (progress, job_id, attempt),
            )
            if cursor.rowcount != 1:
                return False
            if webhook_at is not None:
                row = progress_delivery(_job_webhook(db, job_id), webhook_at)
                if row is not None:
                    db.execute(INSERT_DELIVERY.format("?"), row)
        return True

    def finish(
        self,
        job_id: str,
        attempt: int,
        status: JobStatus,
        now: float,
        *,
        outputs: Sequence[OutputAsset] = (),
        error: JobError | None = None,
        timings: dict[str, float] | None = None,
    ) -> Job | None:
        """End a processing job of this attempt; None if the attempt lost the job (fenced). A job whose
        cancel was accepted while it ran ends canceled even if its run got to the end."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT status, attempt, cancel_requested FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
            if row is None or row["attempt"] != attempt or row["status"] != JobStatus.PROCESSING:
                return None
            if status == JobStatus.SUCCEEDED and row["cancel_requested"]:
                status, outputs = JobStatus.CANCELED, ()
            self._set_status(
                db,
                job_id,
                status,
                now,
                extra="finished_at = ?, outputs = ?, error = ?, timings = ?, progress = ?",
                args=[
                    now,
                    json.dumps([asdict(output) for output in outputs]),
                    json.dumps(error.to_dict()) if error else None,
                    json.dumps(timings or {}),
                    1.0 if status == JobStatus.SUCCEEDED else None,
                ],
                keep_progress_when_null=True,
            )
            done = db.execute(SELECT_JOB_BY_ID, (job_id,)).fetchone()
        return job_from_row(done)

    def set_vendor_task(self, job_id: str, attempt: int, task_id: str) -> bool:
        with self._lock:
            cursor = self._db.execute(
                "UPDATE jobs SET vendor_task = ? WHERE id = ? AND attempt = ? AND status = 'processing'",
                (task_id, job_id, attempt),
            )
        return cursor.rowcount == 1

    def cancel(self, job_id: str, now: float) -> Job | None:
        """Cancel a queued job at once, or flag a processing one for its runner; terminal jobs stay."""
        with self._transaction() as db:
            row = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            if row["status"] == JobStatus.QUEUED:
                self._set_status(db, job_id, JobStatus.CANCELED, now, extra="finished_at = ?", args=[now])
            elif row["status"] == JobStatus.PROCESSING:
                db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            updated = db.execute(SELECT_JOB_BY_ID, (job_id,)).fetchone()
        return job_from_row(updated)

    def release(self, job_id: str, attempt: int, now: float) -> bool:
        """Put a processing job of this attempt back in the queue, attempt unchanged: its runner stopped
        cleanly (a graceful shutdown), so no stale writer remains. A requested cancel wins."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT status, attempt, cancel_requested FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
            if row is None or row["attempt"] != attempt or row["status"] != JobStatus.PROCESSING:
                return False
            if row["cancel_requested"]:
                self._set_status(db, job_id, JobStatus.CANCELED, now, extra="finished_at = ?", args=[now])
            else:
                self._set_status(db, job_id, JobStatus.QUEUED, now, extra="progress = 0, started_at = NULL")
        return True

    def recover(self, now: float, max_attempts: int) -> tuple[list[Job], list[Job]]:
        """At start-up: jobs left processing go back to the queue as the next attempt, or fail after
        `max_attempts`, or end canceled when a cancel was asked. Returns (requeued, ended)."""
        requeued, ended = [], []
        with self._transaction() as db:
            rows = db.execute(
                "SELECT id, attempt, cancel_requested FROM jobs WHERE status = 'processing'"
            ).fetchall()
            for row in rows:
                if row["cancel_requested"]:
                    self._set_status(
                        db, row["id"], JobStatus.CANCELED, now, extra="finished_at = ?", args=[now]
                    )
                    ended.append(row["id"])
                    continue
                if row["attempt"] >= max_attempts:
                    error = interrupted_error(row["attempt"])
                    self._set_status(
                        db,
                        row["id"],
                        JobStatus.FAILED,
                        now,
                        extra="finished_at = ?, error = ?",
                        args=[now, json.dumps(error.to_dict())],
                    )
                    ended.append(row["id"])
                else:
                    self._set_status(
                        db,
                        row["id"],
                        JobStatus.QUEUED,
                        now,
                        extra="attempt = attempt + 1, progress = 0, started_at = NULL",
                    )
                    requeued.append(row["id"])
            touched = requeued + ended
            marks = ",".join("?" * len(touched))
            jobs = {
                job.id: job
                for job in map(job_from_row, db.execute(f"{SELECT_JOBS} WHERE id IN ({marks})", touched))
            }
        return [jobs[i] for i in requeued], [jobs[i] for i in ended]

    def count_by_status(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status").fetchall()
        return {row["status"]: row["n"] for row in rows}

    def queued_by_model(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT model, COUNT(*) FROM jobs WHERE status = 'queued' GROUP BY model"
            ).fetchall()
        return {row[0]: row[1] for row in rows}

    def queued_job_ids(self, model: str, limit: int) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM jobs WHERE status = 'queued' AND model = ? ORDER BY seq LIMIT ?",
                (model, limit),
            ).fetchall()
        return [row["id"] for row in rows]

    def queued_with_time_limits(self, limit: int) -> list[Job]:
        with self._lock:
            rows = self._db.execute(
                f"{SELECT_JOBS} WHERE status = 'queued' AND limits IS NOT NULL ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [job_from_row(row) for row in rows]

    def fail_queued(self, job_id: str, error: JobError, now: float) -> Job | None:
        """Fail a queued job that will never run; None when it is not queued (any more)."""
        with self._transaction() as db:
            row = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row["status"] != JobStatus.QUEUED:
                return None
            self._set_status(
                db,
                job_id,
                JobStatus.FAILED,
                now,
                extra="finished_at = ?, error = ?",
                args=[now, json.dumps(error.to_dict())],
            )
            failed = db.execute(SELECT_JOB_BY_ID, (job_id,)).fetchone()
        return job_from_row(failed)

    def delete_finished_before(self, cutoff: float) -> int:
        with self._transaction() as db:
            db.execute(
                "UPDATE assets SET expires_at = MIN(expires_at, ?) WHERE id IN (SELECT "
                "json_extract(kept.value, '$.asset_id') FROM jobs, json_each(jobs.outputs) AS kept "
                "WHERE finished_at IS NOT NULL AND finished_at < ?)",
                (cutoff, cutoff),
            )
            cursor = db.execute(
                "DELETE FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?", (cutoff,)
            )
            db.execute(
                "DELETE FROM webhook_deliveries WHERE next_attempt_at IS NULL AND created_at < ?", (cutoff,)
            )
        return cursor.rowcount

    @staticmethod
    def _set_status(
        db: sqlite3.Connection,
        job_id: str,
        status: JobStatus,
        now: float,
        *,
        extra: str = "",
        args: Sequence[Any] = (),
        keep_progress_when_null: bool = False,
    ) -> None:
        history = json.loads(db.execute("SELECT history FROM jobs WHERE id = ?", (job_id,)).fetchone()[0])
        history.append({"status": status.value, "at": now})
        sets = "status = ?, history = ?" + (", " + extra if extra else "")
        if keep_progress_when_null:
            sets = sets.replace("progress = ?", "progress = COALESCE(?, progress)")
        db.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (status.value, json.dumps(history), *args, job_id))
        delivery = status_delivery(_job_webhook(db, job_id), status, now)
        if delivery is not None:
            db.execute(INSERT_DELIVERY.format("?"), delivery)

    # assets -------------------------------------------------------------------------------------------------

    def insert_asset(self, record: AssetRecord, *, if_absent: bool = False) -> None:
        with self._lock:
            self._db.execute(
                f"INSERT {'OR IGNORE ' if if_absent else ''}INTO assets ({ASSET_COLUMNS}) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    record.id,
                    record.owner,
                    record.sha256,
                    record.mime_type,
                    record.width,
                    record.height,
                    record.bytes,
                    record.created_at,
                    record.expires_at,
                    record.job_id,
                    record.name,
                ),
            )

    def get_asset(self, asset_id: str) -> AssetRecord | None:
        with self._lock:
            row = self._db.execute(SELECT_ASSET_BY_ID, (asset_id,)).fetchone()
        return asset_from_row(row) if row else None

    def get_assets(self, asset_ids: Sequence[str]) -> list[AssetRecord]:
        if not asset_ids:
            return []
        marks = ",".join("?" * len(asset_ids))
        with self._lock:
            rows = self._db.execute(
                f"SELECT {ASSET_COLUMNS} FROM assets WHERE id IN ({marks})", tuple(asset_ids)
            ).fetchall()
        return [asset_from_row(row) for row in rows]

    def list_assets(
        self,
        owner: str,
        *,
        now: float,
        limit: int,
        before: AssetKey | None = None,
        outputs_only: bool = False,
    ) -> tuple[list[AssetRecord], AssetKey | None]:
        sql, args = asset_listing_query(
            "?", owner, now=now, limit=limit, before=before, outputs_only=outputs_only
        )
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return asset_page(rows, limit)

    def extend_asset(self, asset_id: str, expires_at: float) -> None:
        """Keep an input alive at least as long as a job that uses it."""
        with self._lock:
            self._db.execute(
                "UPDATE assets SET expires_at = MAX(expires_at, ?) WHERE id = ?", (expires_at, asset_id)
            )

    def extend_job_inputs(self, expires_at: float, *, job_id: str | None = None) -> None:
        """Keep the input assets of one job, or of every queued or processing job, until `expires_at`."""
        which, args = ("jobs.id = ?", [job_id]) if job_id else ("jobs.status IN ('queued', 'processing')", [])
        with self._lock:
            self._db.execute(
                "UPDATE assets SET expires_at = MAX(expires_at, ?) WHERE id IN ("
                f"SELECT value FROM jobs, json_each(jobs.input, '$.images') WHERE {which} "
                f"UNION SELECT json_extract(input, '$.image') FROM jobs WHERE {which})",
                (expires_at, *args, *args),
            )

    def delete_expired_assets(self, now: float) -> set[str]:
        """Delete expired asset rows, and the outputs an ended job did not keep (an interrupted attempt's,
        a canceled run's); returns the content hashes no remaining asset refers to."""
        with self._transaction() as db:
            which = f"expires_at < ? OR id IN ({UNKEPT_OUTPUTS})"
            hashes = {row[0] for row in db.execute(f"SELECT sha256 FROM assets WHERE {which}", (now,))}
            db.execute(f"DELETE FROM assets WHERE {which}", (now,))
            return hashes - _hashes_in_use(db, list(hashes))

    def hashes_without_assets(self, hashes: Sequence[str]) -> set[str]:
        with self._lock:
            return set(hashes) - _hashes_in_use(self._db, hashes)

    # workers ------------------------------------------------------------------------------------------------

    def record_worker(self, worker: WorkerStatus) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO workers VALUES (?,?,?,?,?,?,?)", worker_values(worker))

    def list_workers(self, seen_since: float) -> list[WorkerStatus]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {WORKER_COLUMNS} FROM workers WHERE seen_at >= ? ORDER BY name", (seen_since,)
            ).fetchall()
        return [worker_from_row(row) for row in rows]

    def forget_worker(self, name: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM workers WHERE name = ?", (name,))

    # API keys -----------------------------------------------------------------------------------------------

    def insert_api_key(self, key_id: str, name: str, key_hash: str, now: float) -> None:
        with self._lock:
            self._db.execute("INSERT INTO api_keys VALUES (?,?,?,?)", (key_id, name, key_hash, now))

    def count_api_keys(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM api_keys").fetchone()[0])

    def api_key_id(self, key_hash: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT id FROM api_keys WHERE key_hash = ?", (key_hash,)).fetchone()
        return row[0] if row else None

    def has_api_key(self, key_id: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM api_keys WHERE id = ?", (key_id,)).fetchone() is not None

    def list_api_keys(self) -> list[ApiKeyRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, name, created_at FROM api_keys ORDER BY created_at, id"
            ).fetchall()
        return [ApiKeyRecord(id=row[0], name=row[1], created_at=row[2]) for row in rows]

    def delete_api_key(self, key_id: str) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM api_keys WHERE id = ?", (key_id,)).rowcount > 0

    # shared secrets -----------------------------------------------------------------------------------------

    def shared_secret(self, name: str) -> str:
        """A random secret made on first use and kept in the database."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO secrets VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
                (name, secrets.token_hex(32), time.time()),
            )
            row = db.execute("SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()
        return str(row[0])

    # webhooks -----------------------------------------------------------------------------------------------

    def webhook_secrets(self, owner: str, now: float) -> list[str]:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO webhook_secrets (owner, secret, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (owner) DO NOTHING",
                (owner, new_secret(), now),
            )
            row = db.execute(
                "SELECT secret, previous, previous_until FROM webhook_secrets WHERE owner = ?", (owner,)
            ).fetchone()
        return secrets_in_use(row[0], row[1], row[2], now)

    def rotate_webhook_secret(self, owner: str, now: float, overlap_s: float) -> str:
        secret = new_secret()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO webhook_secrets (owner, secret, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (owner) DO UPDATE SET previous = secret, previous_until = ?, "
                "secret = excluded.secret, created_at = excluded.created_at",
                (owner, secret, now, now + overlap_s),
            )
        return secret

    def claim_webhook_deliveries(
        self,
        now: float,
        limit: int,
        lease_s: float,
        *,
        skip_owners: Collection[str] = (),
        skip_origins: Collection[str] = (),
    ) -> list[WebhookDelivery]:
        skipped, args = skipped_deliveries(skip_owners, skip_origins, "?")
        with self._transaction() as db:
            rows = db.execute(
                f"UPDATE webhook_deliveries SET next_attempt_at = ? WHERE id IN (SELECT id FROM "
                f"webhook_deliveries WHERE next_attempt_at <= ?{skipped} ORDER BY next_attempt_at LIMIT ?) "
                f"RETURNING {DELIVERY_COLUMNS}",
                (now + lease_s, now, *args, limit),
            ).fetchall()
        return [delivery_from_row(row) for row in rows]

    def record_webhook_attempt(
        self, delivery_id: str, now: float, *, payload: str, error: str | None, retry_at: float | None
    ) -> None:
        delivered_at = now if error is None else None
        given_up_at = now if error is not None and retry_at is None else None
        with self._lock:
            self._db.execute(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, payload = ?, last_error = ?, "
                "delivered_at = ?, given_up_at = ?, next_attempt_at = ? "
                "WHERE id = ? AND next_attempt_at IS NOT NULL",
                (payload, error, delivered_at, given_up_at, retry_at if error else None, delivery_id),
            )

    def postpone_webhook_delivery(self, delivery_id: str, at: float) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE webhook_deliveries SET next_attempt_at = ? "
                "WHERE id = ? AND next_attempt_at IS NOT NULL",
                (at, delivery_id),
            )

    def webhook_deliveries(self, job_id: str) -> list[WebhookDelivery]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE job_id = ? "
                "ORDER BY created_at, rowid",
                (job_id,),
            ).fetchall()
        return [delivery_from_row(row) for row in rows]


def _job_webhook(db: sqlite3.Connection, job_id: str) -> JobWebhook:
    row = db.execute("SELECT owner, webhook, batch_id FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return JobWebhook(job_id=job_id, owner=row[0], webhook=row[1], batch_id=row[2])


#: Hashes asked about per statement: SQLite before 3.32 takes at most 999 parameters.
HASHES_PER_QUERY = 500


def _hashes_in_use(db: sqlite3.Connection, hashes: Sequence[str]) -> set[str]:
    """Those of `hashes` that an asset record refers to."""
    used: set[str] = set()
    for start in range(0, len(hashes), HASHES_PER_QUERY):
        chunk = hashes[start : start + HASHES_PER_QUERY]
        marks = ",".join("?" * len(chunk))
        used.update(
            row[0] for row in db.execute(f"SELECT sha256 FROM assets WHERE sha256 IN ({marks})", chunk)
        )
    return used
