"""`reangle db upgrade`: applies the missing migrations once and says which; SQLite has nothing to do."""

from __future__ import annotations

import pytest

from reangle.cli.main import main
from reangle.store.pg_schema import MIGRATIONS
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
