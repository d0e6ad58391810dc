"""The scale-out job store: PostgreSQL, shared by many API and worker processes. Same semantics as
`SqliteStore` (the reference), made safe across processes:

- every runner write is fenced by the job's attempt, in the statement's WHERE or under the row's lock;
- an idempotency key is a UNIQUE (owner, idempotency_key) constraint: two processes racing on one key make one
  job (the loser's INSERT does nothing and it reads the winner's job);
- `max_queued` is checked under a transaction-level advisory lock, so concurrent submits cannot overfill;
- `claim_next` takes its row with FOR UPDATE SKIP LOCKED: concurrent workers never claim one job twice;
- every change that leaves a job queued also defers its run for the Procrastinate workers, in the same
  transaction (`pg_dispatch`): a queued job always has a run waiting, even if the process dies right after.

Once the store is open, every failure to reach the database surfaces as `Unavailable` (the API answers 503),
never a hang: connects, the pool's wait and every wait for the server's answer (`BoundedConnection`) are
bounded. Opening it runs the schema migrations, whose lock and statements may rightly take long: unbounded.
Once the database has failed, each call first tries one quick connection and fails fast while it is down;
when it is back, broken pooled connections are dropped and work resumes.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import weakref
from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any, TypeVar

import psycopg
from psycopg.abc import PQGen
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from reangle.core.jobs import Job, JobError, JobStatus, OutputAsset
from reangle.core.ports import ApiKeyRecord, AssetKey, AssetRecord, NewJob, WebhookDelivery, WorkerStatus
from reangle.core.webhooks import new_secret, secrets_in_use, target_json
from reangle.errors import Unavailable
from reangle.store.outbox import (
    INSERT_DELIVERY,
    JobWebhook,
    progress_delivery,
    skipped_deliveries,
    status_delivery,
)
from reangle.store.pg_dispatch import defer_run
from reangle.store.pg_schema import upgrade
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
from reangle.store.schema import ASSET_COLUMNS, DELIVERY_COLUMNS, JOB_COLUMNS, WORKER_COLUMNS

Row = tuple[Any, ...]
Cursor = psycopg.Cursor[Row]

SELECT_JOBS = f"SELECT {JOB_COLUMNS} FROM jobs"
SELECT_JOB_BY_ID = f"{SELECT_JOBS} WHERE id = %s"
SELECT_JOBS_WITH_HASH = f"SELECT {JOB_COLUMNS}, request_hash FROM jobs"
#: A job and, in its last column, the asset records of its outputs (as JSON arrays in ASSET_COLUMNS order):
#: one round trip for the status read of a finished job, however many outputs it has.
SELECT_JOB_WITH_OUTPUTS = (
    f"SELECT {JOB_COLUMNS}, (SELECT json_agg(json_build_array({ASSET_COLUMNS})) FROM assets WHERE "
    "assets.id IN (SELECT kept ->> 'asset_id' FROM json_array_elements(jobs.outputs::json) AS kept)) "
    "FROM jobs WHERE id = %s"
)
#: The job's history with one more status change (parameters: status, at).
HISTORY_PLUS = (
    "(history::jsonb || jsonb_build_array(jsonb_build_object('status', %s::text, 'at', %s::float8)))::text"
)
#: Any fixed number: the key of the advisory lock that serializes inserts checked against `max_queued`.
QUEUE_LOCK = 0x5245414E474C46
IDLE_CHECK_S = 5.0
#: While the database is failing, the call that starts the check that it is back waits this long for it (a
#: refused connection answers at once; a silent network would hold the caller, the event loop of a replica,
#: for the whole connect_timeout). Calls made while a check is under way fail at once.
PROBE_WAIT_S = 0.5
#: Sent data unacknowledged this long breaks the connection: a statement on a network gone silent fails in
#: seconds (as Unavailable) instead of waiting out TCP's retransmissions (many minutes).
TCP_USER_TIMEOUT_MS = 5000
#: The longest one exchange with the server (a statement, a commit, the idle check) waits for its answer: a
#: server that takes the bytes and never answers (hung, wedged, behind a frozen proxy) is then given up on.
ANSWER_WAIT_S = 5.0
#: The retention sweep's statements wait longer: off the request path, a large backlog takes a while.
SWEEP_ANSWER_WAIT_S = 300.0
#: How often a wait for the server wakes up to notice Ctrl-C (psycopg's own default).
WAKE_UP_S = 0.1

Answer = TypeVar("Answer")


class BoundedConnection(psycopg.Connection[Row]):
    """A connection whose every exchange with the server ends within `answer_wait_s` (ANSWER_WAIT_S unless a
    caller gives it longer): without an answer by then the connection is closed and the call fails
    (OperationalError, without SQL state: a lost connection).

    Nothing else bounds a server that accepts the bytes and never answers: `statement_timeout` is enforced by
    the server, which is not running; `tcp_user_timeout` and keepalives act on TCP acknowledgements, which
    the kernel under a hung server (or a frozen proxy) still sends; the pool's `timeout` bounds only the wait
    for a free connection; a cancel request goes to the same silent server. psycopg waits for the answer in
    Python (`Connection.wait`, which takes a deadline), so the deadline is set there. The connection is
    closed, not reused: its query may still be answered later, mid-protocol; the pool replaces it."""

    answer_wait_s: float = ANSWER_WAIT_S

    def wait(self, gen: PQGen[Answer], interval: float = WAKE_UP_S, timeout: float | None = None) -> Answer:
        if timeout is not None:  # the caller's own deadline (notifies): its expiry is not a failure
            return super().wait(gen, interval, timeout)
        try:
            return super().wait(gen, interval, self.answer_wait_s)
        except psycopg.errors._WaitTimeout:
            self.pgconn.finish()
            raise psycopg.OperationalError(
                f"the server did not answer within {self.answer_wait_s:g} s"
            ) from None


class PostgresStore:
    """The JobStore of the scale-out deployment (REANGLE_DATABASE_URL=postgresql://...)."""

    def __init__(
        self,
        conninfo: str,
        *,
        max_connections: int = 10,
        timeout_s: float = 3.0,
        connect_timeout_s: int = 3,
    ) -> None:
        """Upgrade the schema, then open a pool of up to `max_connections`; a call waits at most `timeout_s`
        for a connection."""
        self._conninfo = conninfo
        self._connect_timeout_s = connect_timeout_s
        self._where = database_address(conninfo)
        self._failed = False
        self._probe: Future[psycopg.OperationalError | None] | None = None
        self._probe_lock = threading.Lock()
        self._prober = ThreadPoolExecutor(1, thread_name_prefix="reangle-db-probe")
        try:
            upgrade(conninfo, connect_timeout_s=connect_timeout_s)
        except psycopg.OperationalError as exc:
            raise self._unavailable(exc) from None
        self._returned_at: weakref.WeakKeyDictionary[psycopg.Connection[Row], float] = (
            weakref.WeakKeyDictionary()
        )
        self._pool: ConnectionPool[BoundedConnection] = ConnectionPool(
            conninfo,
            connection_class=BoundedConnection,
            min_size=1,
            max_size=max_connections,
            kwargs={
                "connect_timeout": connect_timeout_s,
                "autocommit": True,
                "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
            },
            timeout=timeout_s,
            name="reangle",
            reset=self._note_returned,
            open=True,
        )

    def close(self) -> None:
        self._pool.close()
        self._prober.shutdown(wait=False, cancel_futures=True)

    def _note_returned(self, conn: psycopg.Connection[Row]) -> None:
        self._returned_at[conn] = time.monotonic()

    def _broke_while_idle(self, conn: psycopg.Connection[Row]) -> bool:
        """One empty round trip on a connection idle for IDLE_CHECK_S: after a database restart in a quiet
        hour, a request finds the broken connection here, not in its own statement (which would answer 503).
        Busy connections are not checked: no round trip is added to the reads clients poll."""
        if time.monotonic() - self._returned_at.get(conn, 0.0) <= IDLE_CHECK_S:  # never used: checked
            return False
        try:
            conn.execute("")
        except psycopg.OperationalError:
            return True
        return False

    @contextmanager
    def _transaction(self, *, answer_wait_s: float | None = None) -> Iterator[Cursor]:
        """A cursor in one transaction: committed when the block ends, rolled back when it raises. Each
        exchange in it waits `answer_wait_s` for the server's answer (default ANSWER_WAIT_S)."""
        with self._connection() as conn:
            conn.answer_wait_s = answer_wait_s or ANSWER_WAIT_S
            try:
                with conn.transaction(), conn.cursor() as cursor:
                    yield cursor
            finally:
                conn.answer_wait_s = ANSWER_WAIT_S

    @contextmanager
    def _read(self) -> Iterator[Cursor]:
        """A cursor for one read statement, outside any transaction: one round trip, not three (BEGIN, the
        read, COMMIT), on the status reads clients poll."""
        with self._connection() as conn, conn.cursor() as cursor:
            yield cursor

    @contextmanager
    def _connection(self) -> Iterator[BoundedConnection]:
        if self._failed:
            self._check_back()
        try:
            with self._pool.connection() as conn:
                if not self._broke_while_idle(conn):
                    yield conn
                    return
            self._check_back()  # Unavailable while the database is down; else drops every broken connection
            with self._pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:
            self._failed = True
            raise Unavailable(
                f"no connection to the database at {self._where} came free within {self._pool.timeout:g} s "
                f"({first_line(exc)})"
            ) from None
        except psycopg.OperationalError as exc:
            if _lost_connection(exc):
                self._failed = True
            raise self._unavailable(exc) from None

    def _check_back(self) -> None:
        """The database failed earlier: fail fast while it is still down; once it is back, drop the pooled
        connections that broke. One probe at a time, in a thread."""
        with self._probe_lock:
            probe, started = self._probe, self._probe is None
            if probe is None:
                probe = self._probe = self._prober.submit(self._connect_error)
        try:
            error = probe.result(timeout=PROBE_WAIT_S if started else 0)
        except FutureTimeout:
            raise Unavailable(f"the database at {self._where} cannot be reached (no answer yet)") from None
        with self._probe_lock:
            if self._probe is probe:
                self._probe = None
        if error is not None:
            raise self._unavailable(error)
        self._failed = False
        self._pool.check()

    def _connect_error(self) -> psycopg.OperationalError | None:
        try:
            psycopg.connect(self._conninfo, connect_timeout=self._connect_timeout_s).close()
        except psycopg.OperationalError as exc:
            return exc
        return None

    def _unavailable(self, exc: psycopg.OperationalError) -> Unavailable:
        return connection_failure(self._where, exc)

    # jobs ---------------------------------------------------------------------------------------------------

    def insert_jobs(
        self,
        new_jobs: Sequence[NewJob],
        *,
        max_queued: int | None = None,
        max_queued_per_owner: int | None = None,
    ) -> list[tuple[Job, str | None]]:
        """Insert all or none; an idempotent repeat returns the job stored under its key. QueueFull when the
        new jobs would take the queued count past `max_queued`, or an owner's past `max_queued_per_owner`,
        checked under a lock that every such insert takes, in the insert's transaction."""
        out: list[tuple[Job, str | None]] = []
        with self._transaction() as cur:
            queued = 0
            if max_queued is not None or max_queued_per_owner is not None:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (QUEUE_LOCK,))
                queued = _one(cur.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'"))
            room = QueueRoom(
                queued,
                max_queued=max_queued,
                max_per_owner=max_queued_per_owner,
                count_owner=lambda owner: _one(
                    cur.execute("SELECT COUNT(*) FROM jobs WHERE owner = %s AND status = 'queued'", (owner,))
                ),
            )
            for new in new_jobs:
                job = new.job
                if new.idempotency_key is not None:
                    stored = self._by_key(cur, job.owner, new.idempotency_key)
                    if stored is not None:
                        out.append(stored)
                        continue
                room.take(job.owner)
                cur.execute(
                    "INSERT INTO jobs (id, owner, model, kind, input, status, attempt, priority, created_at, "
                    "history, batch_id, idempotency_key, request_hash, webhook, source, limits) "
                    "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) "
                    "ON CONFLICT (owner, idempotency_key) DO NOTHING RETURNING seq",
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
                if cur.fetchone() is None:  # another process inserted this key since we looked
                    assert new.idempotency_key is not None
                    raced = self._by_key(cur, job.owner, new.idempotency_key)
                    assert raced is not None, "a conflicting key is committed before ON CONFLICT gives way"
                    out.append(raced)
                    continue
                defer_run(cur, job.id)
                out.append((job, new.request_hash))
        return out

    @staticmethod
    def _by_key(cur: Cursor, owner: str, key: str) -> tuple[Job, str | None] | None:
        row = cur.execute(
            f"{SELECT_JOBS_WITH_HASH} WHERE owner = %s AND idempotency_key = %s", (owner, key)
        ).fetchone()
        return (job_from_row(row), row[-1]) if row else None

    def job_by_idempotency_key(self, owner: str, key: str) -> tuple[Job, str | None] | None:
        with self._read() as cur:
            return self._by_key(cur, owner, key)

    def get_job(self, job_id: str) -> Job | None:
        with self._read() as cur:
            row = cur.execute(SELECT_JOB_BY_ID, (job_id,)).fetchone()
        return job_from_row(row) if row else None

    def get_job_with_outputs(self, job_id: str) -> tuple[Job, list[AssetRecord]] | None:
        with self._read() as cur:
            row = cur.execute(SELECT_JOB_WITH_OUTPUTS, (job_id,)).fetchone()
        if row is None:
            return None
        return job_from_row(row), [asset_from_row(values) for values in row[-1] or ()]

    def list_jobs(
        self, owner: str, *, status: JobStatus | None, limit: int, before_seq: int | None
    ) -> tuple[list[Job], int | None]:
        """Newest first. Returns the page and the cursor (a sequence number) for the next one."""
        sql = f"SELECT {JOB_COLUMNS}, seq FROM jobs WHERE owner = %s"
        args: list[Any] = [owner]
        if status is not None:
            sql += " AND status = %s"
            args.append(status.value)
        if before_seq is not None:
            sql += " AND seq < %s"
            args.append(before_seq)
        sql += " ORDER BY seq DESC LIMIT %s"
        args.append(limit + 1)
        with self._read() as cur:
            rows = cur.execute(sql, args).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        return [job_from_row(row) for row in rows], (rows[-1][-1] if more else None)

    def list_all_jobs(
        self,
        *,
        status: JobStatus | None = None,
        owner: str | None = None,
        model: str | None = None,
        limit: int,
    ) -> list[Job]:
        sql, args = all_jobs_query("%s", status=status, owner=owner, model=model, limit=limit)
        with self._read() as cur:
            rows = cur.execute(sql, args).fetchall()
        return [job_from_row(row) for row in rows]

    def batch_jobs(self, batch_id: str) -> list[Job]:
        with self._read() as cur:
            rows = cur.execute(f"{SELECT_JOBS} WHERE batch_id = %s ORDER BY seq", (batch_id,)).fetchall()
        return [job_from_row(row) for row in rows]

    def claim_next(self, now: float, *, models: Collection[str] | None = None) -> Job | None:
        """Move the next queued job (highest priority, then oldest; of `models` only, when given) to
        processing. A row another worker is claiming is skipped, not waited for."""
        if models is not None and not models:
            return None
        which = "status = 'queued'" + ("" if models is None else " AND model = ANY(%s)")
        args: list[Any] = [JobStatus.PROCESSING.value, JobStatus.PROCESSING.value, now, now]
        if models is not None:
            args.append(list(models))
        with self._transaction() as cur:
            row = cur.execute(
                f"UPDATE jobs SET status = %s, history = {HISTORY_PLUS}, started_at = %s WHERE seq = ("
                f"SELECT seq FROM jobs WHERE {which} ORDER BY priority DESC, seq LIMIT 1 "
                f"FOR UPDATE SKIP LOCKED) RETURNING {JOB_COLUMNS}",
                args,
            ).fetchone()
            if row is not None:
                _queue_webhook(cur, row[0], JobStatus.PROCESSING, now)
        return job_from_row(row) if row else None

    def claim_job(self, job_id: str, now: float, max_attempts: int) -> Job | None:
        """Hand one job to the caller's runner (given it by the dispatcher): a queued job becomes processing;
        a processing one, whose runner went silent, becomes its next attempt, or fails after `max_attempts`,
        or ends canceled when a cancel was asked for. None when it does not exist or had ended."""
        with self._transaction() as cur:
            row = cur.execute(
                "SELECT status, attempt, cancel_requested FROM jobs WHERE id = %s FOR UPDATE", (job_id,)
            ).fetchone()
            if row is None or row[0] not in (JobStatus.QUEUED, JobStatus.PROCESSING):
                return None
            status, attempt, cancel_requested = row
            if status == JobStatus.QUEUED:
                self._set_status(cur, job_id, JobStatus.PROCESSING, now, "started_at = %s", [now])
            elif cancel_requested:
                self._set_status(cur, job_id, JobStatus.CANCELED, now, "finished_at = %s", [now])
            elif attempt >= max_attempts:
                error = json.dumps(interrupted_error(attempt).to_dict())
                self._set_status(
                    cur, job_id, JobStatus.FAILED, now, "finished_at = %s, error = %s", [now, error]
                )
            else:
                again = "attempt = attempt + 1, progress = 0, started_at = %s"
                self._set_status(cur, job_id, JobStatus.PROCESSING, now, again, [now])
            claimed = cur.execute(SELECT_JOB_BY_ID, (job_id,)).fetchone()
        assert claimed is not None
        return job_from_row(claimed)

    def set_progress(
        self, job_id: str, attempt: int, progress: float, *, webhook_at: float | None = None
    ) -> bool:
        with self._transaction() as cur:
            cur.execute(
                "UPDATE jobs SET progress = %s WHERE id = %s AND attempt = %s AND status = 'processing'",
                (progress, job_id, attempt),
            )
            if cur.rowcount != 1:
                return False
            if webhook_at is not None:
                delivery = progress_delivery(_job_webhook(cur, job_id), webhook_at)
                if delivery is not None:
                    cur.execute(INSERT_DELIVERY.format("%s"), delivery)
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
        with self._transaction() as cur:
            row = self._lock_running(cur, job_id, attempt)
            if row is None:
                return None
            if status == JobStatus.SUCCEEDED and row[0]:
                status, outputs = JobStatus.CANCELED, ()
            done = cur.execute(
                f"UPDATE jobs SET status = %s, history = {HISTORY_PLUS}, finished_at = %s, outputs = %s, "
                f"error = %s, timings = %s, progress = COALESCE(%s, progress) WHERE id = %s "
                f"RETURNING {JOB_COLUMNS}",
                (
                    status.value,
                    status.value,
                    now,
                    now,
                    json.dumps([asdict(output) for output in outputs]),
                    json.dumps(error.to_dict()) if error else None,
                    json.dumps(timings or {}),
                    1.0 if status == JobStatus.SUCCEEDED else None,
                    job_id,
                ),
            ).fetchone()
            _queue_webhook(cur, job_id, status, now)
        assert done is not None
        return job_from_row(done)

    @staticmethod
    def _lock_running(cur: Cursor, job_id: str, attempt: int) -> Row | None:
        """Lock the job when it is processing as this attempt: (cancel_requested,); None otherwise."""
        return cur.execute(
            "SELECT cancel_requested FROM jobs WHERE id = %s AND attempt = %s AND status = 'processing' "
            "FOR UPDATE",
            (job_id, attempt),
        ).fetchone()

    def set_vendor_task(self, job_id: str, attempt: int, task_id: str) -> bool:
        with self._transaction() as cur:
            cur.execute(
                "UPDATE jobs SET vendor_task = %s WHERE id = %s AND attempt = %s AND status = 'processing'",
                (task_id, job_id, attempt),
            )
            return cur.rowcount == 1

    def cancel(self, job_id: str, now: float) -> Job | None:
        """Cancel a queued job at once, or flag a processing one for its runner; terminal jobs stay."""
        with self._transaction() as cur:
            row = cur.execute("SELECT status FROM jobs WHERE id = %s FOR UPDATE", (job_id,)).fetchone()
            if row is None:
                return None
            if row[0] == JobStatus.QUEUED:
                self._set_status(cur, job_id, JobStatus.CANCELED, now, "finished_at = %s", [now])
            elif row[0] == JobStatus.PROCESSING:
                cur.execute("UPDATE jobs SET cancel_requested = TRUE WHERE id = %s", (job_id,))
            updated = cur.execute(SELECT_JOB_BY_ID, (job_id,)).fetchone()
        assert updated is not None
        return job_from_row(updated)

    def release(self, job_id: str, attempt: int, now: float) -> bool:
        """Put a processing job of this attempt back in the queue, attempt unchanged: its runner stopped
        cleanly (a graceful shutdown), so no stale writer remains. A requested cancel wins."""
        with self._transaction() as cur:
            row = self._lock_running(cur, job_id, attempt)
            if row is None:
                return False
            if row[0]:
                self._set_status(cur, job_id, JobStatus.CANCELED, now, "finished_at = %s", [now])
            else:
                self._set_status(cur, job_id, JobStatus.QUEUED, now, "progress = 0, started_at = NULL")
        return True

    def recover(self, now: float, max_attempts: int) -> tuple[list[Job], list[Job]]:
        """At the start of a single-box server: jobs left processing go back to the queue as the next attempt,
        or fail after `max_attempts`, or end canceled when a cancel was asked. Returns (requeued, ended).

        It takes every processing job, so it is right only when no other process runs jobs on this database;
        scale-out workers get stalled jobs back by heartbeat-based redelivery instead."""
        requeued, ended = [], []
        with self._transaction() as cur:
            rows = cur.execute(
                "SELECT id, attempt, cancel_requested FROM jobs WHERE status = 'processing' FOR UPDATE"
            ).fetchall()
            for job_id, attempt, cancel_requested in rows:
                if cancel_requested:
                    self._set_status(cur, job_id, JobStatus.CANCELED, now, "finished_at = %s", [now])
                    ended.append(job_id)
                elif attempt >= max_attempts:
                    error = interrupted_error(attempt)
                    self._set_status(
                        cur,
                        job_id,
                        JobStatus.FAILED,
                        now,
                        "finished_at = %s, error = %s",
                        [now, json.dumps(error.to_dict())],
                    )
                    ended.append(job_id)
                else:
                    self._set_status(
                        cur,
                        job_id,
                        JobStatus.QUEUED,
                        now,
                        "attempt = attempt + 1, progress = 0, started_at = NULL",
                    )
                    requeued.append(job_id)
            touched = requeued + ended
            jobs = {
                job.id: job
                for job in map(
                    job_from_row, cur.execute(f"{SELECT_JOBS} WHERE id = ANY(%s)", (touched,)).fetchall()
                )
            }
        return [jobs[i] for i in requeued], [jobs[i] for i in ended]

    def count_by_status(self) -> dict[str, int]:
        with self._read() as cur:
            rows = cur.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        return {status: int(n) for status, n in rows}

    def queued_by_model(self) -> dict[str, int]:
        with self._read() as cur:
            rows = cur.execute(
                "SELECT model, COUNT(*) FROM jobs WHERE status = 'queued' GROUP BY model"
            ).fetchall()
        return {model: int(n) for model, n in rows}

    def queued_job_ids(self, model: str, limit: int) -> list[str]:
        with self._read() as cur:
            rows = cur.execute(
                "SELECT id FROM jobs WHERE status = 'queued' AND model = %s ORDER BY seq LIMIT %s",
                (model, limit),
            ).fetchall()
        return [job_id for (job_id,) in rows]

    def queued_with_time_limits(self, limit: int) -> list[Job]:
        with self._read() as cur:
            rows = cur.execute(
                f"{SELECT_JOBS} WHERE status = 'queued' AND limits IS NOT NULL ORDER BY seq LIMIT %s",
                (limit,),
            ).fetchall()
        return [job_from_row(row) for row in rows]

    def fail_queued(self, job_id: str, error: JobError, now: float) -> Job | None:
        """Fail a queued job that will never run; None when it is not queued (any more). Its Procrastinate
        task, if a worker ever takes it, finds the job ended and does nothing."""
        with self._transaction() as cur:
            row = cur.execute("SELECT status FROM jobs WHERE id = %s FOR UPDATE", (job_id,)).fetchone()
            if row is None or row[0] != JobStatus.QUEUED:
                return None
            failure = "finished_at = %s, error = %s"
            self._set_status(cur, job_id, JobStatus.FAILED, now, failure, [now, json.dumps(error.to_dict())])
            failed = cur.execute(SELECT_JOB_BY_ID, (job_id,)).fetchone()
        assert failed is not None
        return job_from_row(failed)

    def delete_finished_before(self, cutoff: float) -> int:
        with self._transaction(answer_wait_s=SWEEP_ANSWER_WAIT_S) as cur:
            cur.execute(
                "UPDATE assets SET expires_at = LEAST(expires_at, %s) WHERE id IN (SELECT "
                "kept ->> 'asset_id' FROM jobs, json_array_elements(jobs.outputs::json) AS kept "
                "WHERE finished_at IS NOT NULL AND finished_at < %s)",
                (cutoff, cutoff),
            )
            cur.execute("DELETE FROM jobs WHERE finished_at IS NOT NULL AND finished_at < %s", (cutoff,))
            deleted = cur.rowcount
            cur.execute(
                "DELETE FROM webhook_deliveries WHERE next_attempt_at IS NULL AND created_at < %s", (cutoff,)
            )
            return deleted

    @staticmethod
    def _set_status(
        cur: Cursor, job_id: str, status: JobStatus, now: float, extra: str = "", args: Sequence[Any] = ()
    ) -> None:
        sets = f"status = %s, history = {HISTORY_PLUS}" + (", " + extra if extra else "")
        cur.execute(f"UPDATE jobs SET {sets} WHERE id = %s", (status.value, status.value, now, *args, job_id))
        if status == JobStatus.QUEUED:
            defer_run(cur, job_id)
        _queue_webhook(cur, job_id, status, now)

    # assets -------------------------------------------------------------------------------------------------

    def insert_asset(self, record: AssetRecord, *, if_absent: bool = False) -> None:
        with self._transaction() as cur:
            cur.execute(
                f"INSERT INTO assets ({ASSET_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
                + (" ON CONFLICT (id) DO NOTHING" if if_absent else ""),
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
        with self._read() as cur:
            row = cur.execute(f"SELECT {ASSET_COLUMNS} FROM assets WHERE id = %s", (asset_id,)).fetchone()
        return asset_from_row(row) if row else None

    def get_assets(self, asset_ids: Sequence[str]) -> list[AssetRecord]:
        if not asset_ids:
            return []
        with self._read() as cur:
            rows = cur.execute(
                f"SELECT {ASSET_COLUMNS} FROM assets WHERE id = ANY(%s)", (list(asset_ids),)
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
            "%s", owner, now=now, limit=limit, before=before, outputs_only=outputs_only
        )
        with self._read() as cur:
            rows = cur.execute(sql, args).fetchall()
        return asset_page(rows, limit)

    def extend_asset(self, asset_id: str, expires_at: float) -> None:
        """Keep an input alive at least as long as a job that uses it."""
        with self._transaction() as cur:
            cur.execute(
                "UPDATE assets SET expires_at = GREATEST(expires_at, %s) WHERE id = %s",
                (expires_at, asset_id),
            )

    def extend_job_inputs(self, expires_at: float, *, job_id: str | None = None) -> None:
        """Keep the input assets of one job, or of every queued or processing job, until `expires_at`."""
        which, args = ("id = %s", [job_id]) if job_id else ("status IN ('queued', 'processing')", [])
        with self._transaction(answer_wait_s=None if job_id else SWEEP_ANSWER_WAIT_S) as cur:
            cur.execute(
                "UPDATE assets SET expires_at = GREATEST(expires_at, %s) WHERE id IN ("
                f"SELECT jsonb_array_elements_text(input::jsonb -> 'images') FROM jobs WHERE {which} "
                f"UNION SELECT input::jsonb ->> 'image' FROM jobs WHERE {which})",
                (expires_at, *args, *args),
            )

    def delete_expired_assets(self, now: float) -> set[str]:
        """Delete expired asset rows, and the outputs an ended job did not keep (an interrupted attempt's,
        a canceled run's); returns the content hashes no remaining asset refers to."""
        with self._transaction(answer_wait_s=SWEEP_ANSWER_WAIT_S) as cur:
            deleted = cur.execute(
                "DELETE FROM assets WHERE expires_at < %s OR id IN ("
                "SELECT asset.id FROM assets AS asset JOIN jobs ON jobs.id = asset.job_id "
                "WHERE jobs.status IN ('succeeded', 'failed', 'canceled') "
                "AND asset.created_at <= jobs.finished_at AND NOT jobs.outputs::jsonb @> "
                "jsonb_build_array(jsonb_build_object('asset_id', asset.id))) RETURNING sha256",
                (now,),
            )
            hashes = {row[0] for row in deleted.fetchall()}
            return hashes - _hashes_in_use(cur, list(hashes))

    def hashes_without_assets(self, hashes: Sequence[str]) -> set[str]:
        with self._read() as cur:
            return set(hashes) - _hashes_in_use(cur, hashes)

    # workers ------------------------------------------------------------------------------------------------

    def record_worker(self, worker: WorkerStatus) -> None:
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO workers VALUES (%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (name) DO UPDATE SET "
                "device = EXCLUDED.device, engine = EXCLUDED.engine, models = EXCLUDED.models, "
                "started_at = EXCLUDED.started_at, seen_at = EXCLUDED.seen_at, job_id = EXCLUDED.job_id",
                worker_values(worker),
            )

    def list_workers(self, seen_since: float) -> list[WorkerStatus]:
        with self._read() as cur:
            rows = cur.execute(
                f"SELECT {WORKER_COLUMNS} FROM workers WHERE seen_at >= %s ORDER BY name", (seen_since,)
            ).fetchall()
        return [worker_from_row(row) for row in rows]

    def forget_worker(self, name: str) -> None:
        with self._transaction() as cur:
            cur.execute("DELETE FROM workers WHERE name = %s", (name,))

    # API keys -----------------------------------------------------------------------------------------------

    def insert_api_key(self, key_id: str, name: str, key_hash: str, now: float) -> None:
        with self._transaction() as cur:
            cur.execute("INSERT INTO api_keys VALUES (%s,%s,%s,%s)", (key_id, name, key_hash, now))

    def count_api_keys(self) -> int:
        with self._read() as cur:
            return _one(cur.execute("SELECT COUNT(*) FROM api_keys"))

    def api_key_id(self, key_hash: str) -> str | None:
        with self._read() as cur:
            row = cur.execute("SELECT id FROM api_keys WHERE key_hash = %s", (key_hash,)).fetchone()
        return str(row[0]) if row else None

    def has_api_key(self, key_id: str) -> bool:
        with self._transaction() as cur:
            return cur.execute("SELECT 1 FROM api_keys WHERE id = %s", (key_id,)).fetchone() is not None

    def list_api_keys(self) -> list[ApiKeyRecord]:
        with self._read() as cur:
            rows = cur.execute("SELECT id, name, created_at FROM api_keys ORDER BY created_at, id").fetchall()
        return [ApiKeyRecord(id=str(row[0]), name=str(row[1]), created_at=float(row[2])) for row in rows]

    def delete_api_key(self, key_id: str) -> bool:
        with self._transaction() as cur:
            return cur.execute("DELETE FROM api_keys WHERE id = %s", (key_id,)).rowcount > 0

    # shared secrets -----------------------------------------------------------------------------------------

    def shared_secret(self, name: str) -> str:
        """A random secret made by whichever process asks first, the same for every process after."""
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO secrets VALUES (%s, %s, %s) ON CONFLICT (name) DO NOTHING",
                (name, secrets.token_hex(32), time.time()),
            )
            row = cur.execute("SELECT value FROM secrets WHERE name = %s", (name,)).fetchone()
        assert row is not None
        return str(row[0])

    # webhooks -----------------------------------------------------------------------------------------------

    def webhook_secrets(self, owner: str, now: float) -> list[str]:
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO webhook_secrets (owner, secret, created_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (owner) DO NOTHING",
                (owner, new_secret(), now),
            )
            row = cur.execute(
                "SELECT secret, previous, previous_until FROM webhook_secrets WHERE owner = %s", (owner,)
            ).fetchone()
        assert row is not None
        return secrets_in_use(row[0], row[1], row[2], now)

    def rotate_webhook_secret(self, owner: str, now: float, overlap_s: float) -> str:
        secret = new_secret()
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO webhook_secrets (owner, secret, created_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (owner) DO UPDATE SET previous = webhook_secrets.secret, previous_until = %s, "
                "secret = EXCLUDED.secret, created_at = EXCLUDED.created_at",
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
        """Due rows another sender is claiming are skipped, not waited for; the lease keeps them from being
        claimed again while their attempt is under way."""
        skipped, args = skipped_deliveries(skip_owners, skip_origins, "%s")
        with self._transaction() as cur:
            rows = cur.execute(
                f"UPDATE webhook_deliveries SET next_attempt_at = %s WHERE id IN (SELECT id FROM "
                f"webhook_deliveries WHERE next_attempt_at <= %s{skipped} ORDER BY next_attempt_at LIMIT %s "
                f"FOR UPDATE SKIP LOCKED) RETURNING {DELIVERY_COLUMNS}",
                (now + lease_s, now, *args, limit),
            ).fetchall()
        return [delivery_from_row(row) for row in rows]

    def record_webhook_attempt(
        self, delivery_id: str, now: float, *, payload: str, error: str | None, retry_at: float | None
    ) -> None:
        delivered_at = now if error is None else None
        given_up_at = now if error is not None and retry_at is None else None
        with self._transaction() as cur:
            cur.execute(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, payload = %s, last_error = %s, "
                "delivered_at = %s, given_up_at = %s, next_attempt_at = %s "
                "WHERE id = %s AND next_attempt_at IS NOT NULL",
                (payload, error, delivered_at, given_up_at, retry_at if error else None, delivery_id),
            )

    def postpone_webhook_delivery(self, delivery_id: str, at: float) -> None:
        with self._transaction() as cur:
            cur.execute(
                "UPDATE webhook_deliveries SET next_attempt_at = %s "
                "WHERE id = %s AND next_attempt_at IS NOT NULL",
                (at, delivery_id),
            )

    def webhook_deliveries(self, job_id: str) -> list[WebhookDelivery]:
        with self._transaction() as cur:
            rows = cur.execute(
                f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE job_id = %s "
                "ORDER BY created_at, id",
                (job_id,),
            ).fetchall()
        return [delivery_from_row(row) for row in rows]


def _job_webhook(cur: Cursor, job_id: str) -> JobWebhook:
    row = cur.execute("SELECT owner, webhook, batch_id FROM jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return JobWebhook(job_id=job_id, owner=row[0], webhook=row[1], batch_id=row[2])


def _queue_webhook(cur: Cursor, job_id: str, status: JobStatus, now: float) -> None:
    """The outbox: the job's delivery for this change, if its webhook asked for it, in the change's
    transaction."""
    delivery = status_delivery(_job_webhook(cur, job_id), status, now)
    if delivery is not None:
        cur.execute(INSERT_DELIVERY.format("%s"), delivery)


def _one(cursor: Cursor) -> int:
    row = cursor.fetchone()
    assert row is not None
    return int(row[0])


def database_address(conninfo: str) -> str:
    """Where the database is, for messages: host:port, never the password."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "the configured address"
    host = str(params.get("host") or params.get("hostaddr") or "localhost")
    return f"{host}:{params.get('port') or 5432}"


def _lost_connection(exc: psycopg.OperationalError) -> bool:
    """The server is gone or going (no SQL state: the connection broke; 08: connection; 57P: shutdown), as
    opposed to a statement that failed on a live connection (a deadlock, a cancel)."""
    state = exc.sqlstate
    return state is None or state.startswith(("08", "57P"))


def connection_failure(where: str, exc: psycopg.OperationalError) -> Unavailable:
    """Why the database at `where` could not be used: it refused the connection (a FATAL answer: no such
    database, a login refused), or it could not be reached at all."""
    reason = first_line(exc)
    if "FATAL:" in reason:  # the server answered, and said no: check the URL, not the network
        return Unavailable(f"the database at {where} refused the connection ({reason})")
    return Unavailable(f"the database at {where} cannot be reached ({reason})")


def first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _hashes_in_use(cur: Cursor, hashes: Sequence[str]) -> set[str]:
    """Those of `hashes` that an asset record refers to."""
    if not hashes:
        return set()
    rows = cur.execute("SELECT DISTINCT sha256 FROM assets WHERE sha256 = ANY(%s)", (list(hashes),))
    return {row[0] for row in rows.fetchall()}
