"""Procrastinate's lines about losing the database, for a worker's log. When PostgreSQL goes away its worker
logs each failed side task (its listener, its heartbeat) as an ERROR with a traceback; the worker carries on
and says so in its own lines (see `reangle.runtime.worker`), so an expected outage is one WARNING line each
here, with the reason, and an operator alerting on ERROR is not woken by a database restart.

The same goes for asyncio's "Task exception was never retrieved": a job task that Procrastinate cancels while
the database is away fails to record its status, and Procrastinate, stopping, no longer awaits it."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

QUEUE_LOGGER = "procrastinate"
ASYNCIO_LOGGER = "asyncio"


class QueueOutageLines(logging.Filter):
    """On a handler or a logger: a record whose exception comes from the database being away becomes a
    one-line WARNING; any other passes as it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        away = _database_error(record.exc_info[1] if record.exc_info else None)
        if away is not None:
            reason = str(away).strip().splitlines()[0] if str(away).strip() else type(away).__name__
            message = " ".join(record.getMessage().split())  # Procrastinate's words span lines
            record.msg, record.args = f"{message} (the database is away: {reason})", None
            record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
            record.exc_info, record.exc_text = None, None
        return True


def _database_error(exc: BaseException | None) -> psycopg.OperationalError | None:
    """The psycopg OperationalError (a connection lost or refused) that `exc` is or was raised from."""
    import psycopg  # imported on first use: the CLI's other commands never need it

    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, psycopg.OperationalError):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def queue_handler(format: str) -> logging.Handler:
    """A stderr handler for Procrastinate's loggers, with its outage lines made quiet."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(format))
    handler.addFilter(QueueOutageLines())
    return handler
