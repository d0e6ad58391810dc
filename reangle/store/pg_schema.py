"""The PostgreSQL schema as numbered migrations, and `upgrade`, which applies the missing ones.

`reangle_schema_version` holds one row per applied migration. `upgrade` runs under a session advisory lock,
so that N processes starting at once apply each migration once: the first migrates, the others wait, then
find nothing left to do. Each migration commits with its version row, or not at all.

JSON columns are TEXT, as in SQLite: reads hand them to `rows.job_from_row` unchanged (no jsonb rendering on
the status-read hot path), and the few queries that look inside them cast to jsonb.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

import psycopg

from reangle.core.jobs import SOURCE_UNRECORDED
from reangle.store.newer_schema import newer_schema
from reangle.store.pg_dispatch import DEFER_RUNS
from reangle.store.schema import WEBHOOK_TABLES

#: Any fixed number: the key of the advisory lock that serializes migrations.
MIGRATION_LOCK = 0x5245414E474C45  # "REANGLE"


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str


V1_TABLES = """
CREATE TABLE jobs (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    model TEXT NOT NULL,
    kind TEXT NOT NULL,
    input TEXT NOT NULL,
    status TEXT NOT NULL,
    progress DOUBLE PRECISION NOT NULL DEFAULT 0,
    attempt INTEGER NOT NULL DEFAULT 1,
    priority INTEGER NOT NULL DEFAULT 0,
    created_at DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    history TEXT NOT NULL,
    outputs TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    timings TEXT NOT NULL DEFAULT '{}',
    batch_id TEXT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    idempotency_key TEXT,
    request_hash TEXT,
    CONSTRAINT jobs_idempotency UNIQUE (owner, idempotency_key)
);
CREATE INDEX jobs_queue ON jobs (status, priority DESC, seq);
CREATE INDEX jobs_owner ON jobs (owner, seq DESC);
CREATE INDEX jobs_batch ON jobs (batch_id);
CREATE TABLE assets (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    mime_type TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    bytes BIGINT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    job_id TEXT
);
CREATE INDEX assets_expiry ON assets (expires_at);
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    created_at DOUBLE PRECISION NOT NULL
);
"""

V2_SECRETS_AND_INDEXES = """
CREATE TABLE secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX jobs_queued_by_model ON jobs (model, priority DESC, seq) WHERE status = 'queued';
CREATE INDEX assets_sha256 ON assets (sha256);
"""

#: Procrastinate's own tables and functions, as the installed Procrastinate ships them (a later Procrastinate
#: is brought in by a migration that applies its migration files, procrastinate/sql/migrations), and a run
#: deferred for every job waiting, or left running by a single-box server (its claim then makes it the next
#: attempt).
V3_PROCRASTINATE = (
    resources.files("procrastinate") / "sql" / "schema.sql"
).read_text() + f";\n{DEFER_RUNS} WHERE status IN ('queued', 'processing');\n"

V4_WORKERS = """
CREATE TABLE IF NOT EXISTS workers (
    name TEXT PRIMARY KEY,
    device TEXT NOT NULL,
    engine TEXT NOT NULL,
    models TEXT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    seen_at DOUBLE PRECISION NOT NULL,
    job_id TEXT
);
"""

V5_WEBHOOKS = "ALTER TABLE jobs ADD COLUMN webhook TEXT;\n" + WEBHOOK_TABLES

V6_VENDOR_TASKS = "ALTER TABLE jobs ADD COLUMN vendor_task TEXT;\n"

# the jobs stored before are marked as such: a RunPod endpoint sees them as it did then
V7_SOURCES = f"ALTER TABLE jobs ADD COLUMN source TEXT;\nUPDATE jobs SET source = '{SOURCE_UNRECORDED}';\n"

V8_LIMITS = "ALTER TABLE jobs ADD COLUMN limits TEXT;\n"

V9_ASSETS_BY_OWNER = "CREATE INDEX assets_owner ON assets (owner, created_at DESC, id DESC);\n"

V10_ASSET_NAMES = "ALTER TABLE assets ADD COLUMN name TEXT;\n"

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "jobs, asset records and API keys", V1_TABLES),
    Migration(
        2, "shared secrets; indexes for the queue by model and assets by content", V2_SECRETS_AND_INDEXES
    ),
    Migration(3, "Procrastinate 3.10's schema: the queue the workers take jobs from", V3_PROCRASTINATE),
    Migration(4, "the workers: what each runs, when it was last heard from, its job in hand", V4_WORKERS),
    Migration(5, "webhooks: each job's target, the outbox of deliveries, each key's secrets", V5_WEBHOOKS),
    Migration(6, "each remote job's vendor task, followed again after a server stop", V6_VENDOR_TASKS),
    Migration(7, "the client route that submitted each job (a RunPod endpoint's own jobs)", V7_SOURCES),
    Migration(8, "the time limits a client set on each job (RunPod's policy)", V8_LIMITS),
    Migration(
        9, "an index of each key's assets, newest first (Scenario's asset listing)", V9_ASSETS_BY_OWNER
    ),
    Migration(10, "the file name an upload was given", V10_ASSET_NAMES),
)

VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS reangle_schema_version (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at DOUBLE PRECISION NOT NULL
)
"""


def upgrade(
    conninfo: str, migrations: Sequence[Migration] = MIGRATIONS, *, connect_timeout_s: int = 5
) -> list[Migration]:
    """Apply the migrations newer than the database's version, in order; returns those it applied.
    NewerSchema when the database holds a migration newer than `migrations` know."""
    applied: list[Migration] = []
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=connect_timeout_s) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            conn.execute(VERSION_TABLE)
            current = schema_version(conn)
            known = max((migration.version for migration in migrations), default=0)
            if current > known:
                raise newer_schema("the PostgreSQL database", current, known)
            for migration in sorted(migrations, key=lambda m: m.version):
                if migration.version <= current:
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode())  # bytes: the SQL is data, not a literal
                    conn.execute(
                        "INSERT INTO reangle_schema_version VALUES (%s, %s, %s)",
                        (migration.version, migration.description, time.time()),
                    )
                applied.append(migration)
        finally:
            if not conn.broken:
                conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
    return applied


def schema_version(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    """The highest applied migration; 0 for an empty database."""
    exists = conn.execute("SELECT to_regclass('reangle_schema_version') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM reangle_schema_version").fetchone()
    return int(row[0]) if row else 0  # type: ignore[call-overload]
