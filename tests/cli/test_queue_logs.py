"""Procrastinate's lines about a database outage are one WARNING line each; its other lines pass as is. A
worker logs its own lines from INFO, the libraries' from WARNING."""

from __future__ import annotations

import logging
import re
import subprocess
import sys

import procrastinate.exceptions
import psycopg
import pytest

from reangle.cli.queue_logs import QueueOutageLines


def record_of(
    exc: BaseException, message: str = "Side task listener failed with exception: "
) -> logging.LogRecord:
    try:
        raise exc
    except BaseException:
        exc_info = sys.exc_info()
    return logging.LogRecord("procrastinate.worker.w1", logging.ERROR, __file__, 1, message, None, exc_info)


def connector_error(reason: str) -> procrastinate.exceptions.ConnectorException:
    try:
        try:
            raise psycopg.OperationalError(reason)
        except psycopg.OperationalError as exc:
            raise procrastinate.exceptions.ConnectorException() from exc
    except procrastinate.exceptions.ConnectorException as wrapped:
        return wrapped


def test_a_lost_database_is_one_warning_line_with_its_reason() -> None:
    error = connector_error("connection failed: the database system is shutting down\nmore")
    record = record_of(
        error, "Side task listener failed with exception: \n    Database error.\n    , stopping"
    )

    assert QueueOutageLines().filter(record)
    assert record.levelno == logging.WARNING
    assert record.exc_info is None
    line = logging.Formatter("%(levelname)s %(message)s").format(record)
    assert line == (
        "WARNING Side task listener failed with exception: Database error. , stopping (the database is away: "
        "connection failed: the database system is shutting down)"
    )


@pytest.mark.parametrize("exc", [ValueError("a bug"), procrastinate.exceptions.TaskNotFound()])
def test_any_other_error_passes_as_it_is(exc: BaseException) -> None:
    record = record_of(exc, "Task was not found")

    assert QueueOutageLines().filter(record)
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert "Traceback" in logging.Formatter().format(record)


UNRETRIEVED_OUTAGE_ERROR = """
import asyncio, gc
import procrastinate.exceptions, psycopg

async def persist_status():  # as Procrastinate's job task, cancelled while the database is away
    try:
        raise psycopg.OperationalError("connection failed: the database system is shutting down")
    except psycopg.OperationalError as exc:
        raise procrastinate.exceptions.ConnectorException() from exc

async def main():
    task = asyncio.create_task(persist_status())
    await asyncio.sleep(0.01)
    del task  # never awaited: asyncio logs its exception when it is collected
    gc.collect()

asyncio.run(main())
"""


@pytest.mark.parametrize(
    "set_up",
    [
        "from reangle.cli.serve import worker_logging; worker_logging()",
        "import logging.config; from reangle.cli.serve import server_logging; "
        "logging.config.dictConfig(server_logging())",
    ],
    ids=["worker", "server"],
)
def test_a_task_exception_left_by_the_outage_is_one_warning_line(set_up: str) -> None:
    code = f"{set_up}\n{UNRETRIEVED_OUTAGE_ERROR}"
    ran = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )

    assert ran.returncode == 0, ran.stderr
    assert "Traceback" not in ran.stderr, ran.stderr
    (line,) = ran.stderr.strip().splitlines()
    assert re.fullmatch(
        r"[\d-]+ [\d:,]+ WARNING asyncio: Task exception was never retrieved future: <Task finished .*> "
        r"\(the database is away: connection failed: the database system is shutting down\)",
        line,
    ), line


def test_a_worker_logs_its_own_lines_at_info_and_the_libraries_only_from_warning() -> None:
    code = (
        "import logging; from reangle.cli.serve import worker_logging; worker_logging()\n"
        "logging.getLogger('httpx').info('HTTP Request: POST http://hooks.example/in?token=SECRET')\n"
        "logging.getLogger('reangle.webhooks').info('webhook evt_1 delivered')\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert ran.returncode == 0, ran.stderr
    (line,) = ran.stderr.strip().splitlines()  # a receiver's token stays out of the log
    assert line.endswith("INFO reangle.webhooks: webhook evt_1 delivered")
