"""The SQLite tables: jobs, asset records, API keys, secrets and webhook deliveries."""

from __future__ import annotations

from reangle.core.jobs import SOURCE_UNRECORDED

#: The outbox of webhook deliveries and each key's signing secrets; the same SQL on SQLite and PostgreSQL.
WEBHOOK_TABLES = """
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    url TEXT NOT NULL,
    type TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION,
    payload TEXT,
    delivered_at DOUBLE PRECISION,
    given_up_at DOUBLE PRECISION,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE next_attempt_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS webhook_deliveries_job ON webhook_deliveries (job_id, created_at);
CREATE TABLE IF NOT EXISTS webhook_secrets (
    owner TEXT PRIMARY KEY,
    secret TEXT NOT NULL,
    previous TEXT,
    previous_until DOUBLE PRECISION,
    created_at DOUBLE PRECISION NOT NULL
);
"""

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    model TEXT NOT NULL,
    kind TEXT NOT NULL,
    input TEXT NOT NULL,
    status TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    attempt INTEGER NOT NULL DEFAULT 1,
    priority INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    history TEXT NOT NULL,
    outputs TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    timings TEXT NOT NULL DEFAULT '{}',
    batch_id TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    idempotency_key TEXT,
    request_hash TEXT,
    webhook TEXT,
    vendor_task TEXT,
    source TEXT,
    limits TEXT,
    UNIQUE (owner, idempotency_key)
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (status, priority DESC, seq);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, seq DESC);
CREATE INDEX IF NOT EXISTS jobs_batch ON jobs (batch_id);
CREATE TABLE IF NOT EXISTS assets (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    mime_type TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    job_id TEXT,
    name TEXT
);
CREATE INDEX IF NOT EXISTS assets_expiry ON assets (expires_at);
CREATE INDEX IF NOT EXISTS assets_owner ON assets (owner, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS assets_sha256 ON assets (sha256);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS workers (
    name TEXT PRIMARY KEY,
    device TEXT NOT NULL,
    engine TEXT NOT NULL,
    models TEXT NOT NULL,
    started_at REAL NOT NULL,
    seen_at REAL NOT NULL,
    job_id TEXT
);
CREATE TABLE IF NOT EXISTS secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""
    + WEBHOOK_TABLES
)

#: The version `PRAGMA user_version` records once the schema is this one: one more for each change of it. A
#: reangle that knows an older version refuses the file (it would misread the rows). Files from before it
#: was recorded hold 0.
SQLITE_SCHEMA_VERSION = 1

#: Columns added to tables that older databases already have (CREATE TABLE IF NOT EXISTS leaves those be),
#: and the value the rows stored before the column existed take (None: NULL).
ADDED_COLUMNS = (
    ("jobs", "webhook", "TEXT", None),
    ("jobs", "vendor_task", "TEXT", None),
    ("jobs", "source", "TEXT", SOURCE_UNRECORDED),
    ("jobs", "limits", "TEXT", None),
    ("assets", "job_id", "TEXT", None),
    ("assets", "name", "TEXT", None),
)

#: The columns a Job is read from, in the order `rows.job_from_row` unpacks them. Queries that need more
#: (`seq`, `request_hash`) select these first and the others after.
JOB_COLUMNS = (
    "id, owner, model, kind, input, status, progress, attempt, priority, created_at, started_at, "
    "finished_at, history, outputs, error, timings, batch_id, cancel_requested, webhook, vendor_task, "
    "source, limits"
)
JOB_COLUMN_COUNT = len(JOB_COLUMNS.split(","))

#: The columns of `workers`, in the order of WorkerStatus's fields.
WORKER_COLUMNS = "name, device, engine, models, started_at, seen_at, job_id"

#: The columns of `webhook_deliveries`, in the order of WebhookDelivery's fields.
DELIVERY_COLUMNS = (
    "id, job_id, owner, url, type, created_at, attempts, next_attempt_at, payload, delivered_at, "
    "given_up_at, last_error"
)

#: The columns of `assets`, in the order of AssetRecord's fields.
ASSET_COLUMNS = "id, owner, sha256, mime_type, width, height, bytes, created_at, expires_at, job_id, name"
