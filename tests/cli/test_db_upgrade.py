"""`reangle db upgrade`: applies the missing migrations once and says which; SQLite has nothing to do. A
server does the same at start, and stops in one line on a database a newer reangle upgraded."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import psycopg
import pytest

from reangle.cli.main import main
from reangle.compose import SQLITE_FILE
from reangle.store.pg_schema import MIGRATIONS, schema_version, upgrade
from reangle.store.schema import SQLITE_SCHEMA_VERSION
from reangle.store.sqlite import SqliteStore
from tests.conftest import error_lines
from tests.pg_cluster import free_port


def test_it_applies_the_migrations_once_and_then_says_up_to_date(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REANGLE_DATABASE_URL", pg_url)
    assert main(["db", "upgrade"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"applied migration {m.version}: {m.description}" for m in MIGRATIONS]
    assert main(["db", "upgrade"]) == 0
    assert capsys.readouterr().out.strip() == "the database schema is up to date"


def test_on_sqlite_there_is_nothing_to_upgrade(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "upgrade"]) == 0
    assert "needs no upgrade" in capsys.readouterr().out


def test_an_unreachable_database_is_one_line_without_the_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    monkeypatch.setenv("REANGLE_DATABASE_URL", f"postgresql://u:hunter2@127.0.0.1:{port}/db")
    assert main(["db", "upgrade"]) == 1
    err = capsys.readouterr().err
    assert f"the database at 127.0.0.1:{port} cannot be reached" in err
    assert "hunter2" not in err
    assert "retry in" not in err  # an API client's hint: a command is simply run again
    monkeypatch.setenv("REANGLE_DATABASE_URL", f"postgresql://127.0.0.1:{port}/db")
    assert main(["keys", "list"]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"reangle: error: the database at 127.0.0.1:{port} cannot be reached")
    assert "retry in" not in line


def test_a_database_that_does_not_exist_is_refused_not_unreachable(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REANGLE_DATABASE_URL", pg_url.rsplit("/", 1)[0] + "/no_such_db")
    assert main(["db", "upgrade"]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert " refused the connection (" in line
    assert 'database "no_such_db" does not exist' in line


def test_a_url_of_another_database_is_one_line_naming_the_schemes_taken(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REANGLE_DATABASE_URL", "mysql://u:hunter2@db.internal/reangle")
    assert main(["db", "upgrade"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert "REANGLE_DATABASE_URL='mysql://db.internal/reangle': use postgresql://..., postgres://..." in line


def test_serve_says_which_migrations_it_applied_before_an_engine_loads(
    pg_url: str, no_engine: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    upgrade(pg_url, MIGRATIONS[:1])
    monkeypatch.setenv("REANGLE_DATABASE_URL", pg_url)
    with socket.socket() as taken:  # so that it stops at its port, once it has upgraded the schema
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--engine", "fake", "--role", "api", "--port", str(port)]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert [line for line in lines if "migration" in line] == [
        f"reangle: applied schema migration {m.version}: {m.description}" for m in MIGRATIONS[1:]
    ]
    assert lines[-1].startswith(f"reangle: error: cannot listen on 127.0.0.1:{port}")
    assert no_engine == []


def test_serve_on_a_sqlite_file_a_newer_reangle_upgraded_stops_in_one_line_before_an_engine_loads(
    tmp_path: Path, no_engine: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / SQLITE_FILE
    SqliteStore(database).close()
    with sqlite3.connect(database) as db:
        db.execute(f"PRAGMA user_version = {SQLITE_SCHEMA_VERSION + 1}")
    assert main(["serve", "--engine", "fake", "--port", str(free_port()), "--data-dir", str(tmp_path)]) == 1
    assert error_lines(capsys.readouterr().err)[-1] == (
        f"reangle: error: the database {database} has schema version {SQLITE_SCHEMA_VERSION + 1}, from a "
        f"newer reangle; this one knows versions up to {SQLITE_SCHEMA_VERSION} (run that newer reangle on "
        "it, or restore the backup taken before the upgrade)"
    )
    assert no_engine == []


@pytest.mark.parametrize("command", [["admin", "jobs"], ["keys", "list"]])
def test_a_reading_command_neither_makes_nor_migrates_a_postgresql_schema(
    command: list[str], pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped database gets no tables; a live one is not migrated under its workers."""
    monkeypatch.setenv("REANGLE_DATABASE_URL", pg_url)
    assert main(command) == 2
    [line] = error_lines(capsys.readouterr().err)
    assert line.startswith("reangle: error: no reangle database in postgresql://")
    assert "it holds no reangle tables" in line
    with psycopg.connect(pg_url) as conn:
        assert schema_version(conn) == 0
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
    assert tables == (0,)

    upgrade(pg_url, MIGRATIONS[:1])
    assert main(command) == 2
    [line] = error_lines(capsys.readouterr().err)
    assert f"has schema version 1; this reangle's is {len(MIGRATIONS)} (upgrade it with" in line
    with psycopg.connect(pg_url) as conn:
        assert schema_version(conn) == 1

    upgrade(pg_url)
    assert main(command) == 0
