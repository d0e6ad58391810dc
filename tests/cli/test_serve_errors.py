"""`reangle serve` and `reangle worker` refuse what cannot work in one line, exit 2, before any engine loads:
an unusable data folder, a port out of range, a role the database cannot take."""

from __future__ import annotations

from pathlib import Path

import pytest

from reangle.cli import serve
from reangle.cli.main import main
from reangle.settings import Settings


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The engines the command asked for: none may be made (with qwen, loading one takes minutes)."""
    made: list[str] = []

    def create_engine(name: str, settings: Settings) -> None:
        made.append(name)
        raise AssertionError(f"the {name} engine was made before the settings were checked")

    monkeypatch.setattr(serve, "create_engine", create_engine)
    return made


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


@pytest.fixture
def unusable(tmp_path: Path) -> Path:
    """A data folder that cannot be made: its parent is a file."""
    (tmp_path / "a-file").write_text("")
    return tmp_path / "a-file" / "data"


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_data_folder_that_cannot_be_made_is_one_line(
    command: str,
    unusable: Path,
    no_engine: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if command == "worker":  # a database it could share (never reached): the role check passes
        monkeypatch.setenv("REANGLE_DATABASE_URL", "postgresql://db.invalid/reangle")
    assert main([command, "--engine", "fake", "--data-dir", str(unusable)]) == 2
    assert error_lines(capsys.readouterr().err) == [
        f"reangle: error: cannot create the data folder {unusable}: Not a directory"
    ]
    assert no_engine == []


def test_serve_on_postgres_and_s3_needs_no_data_folder(unusable: Path) -> None:
    settings = Settings(
        data_dir=unusable, database_url="postgresql://db.invalid/x", storage_url="s3://bucket/assets"
    )
    serve.make_data_dir(settings)  # nothing is kept in it: no error
    assert not unusable.exists()


@pytest.mark.parametrize("port", ["0", "65536", "99999"])
def test_a_port_flag_out_of_range_is_refused(
    port: str, no_engine: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--engine", "fake", "--port", port])
    assert exited.value.code == 2
    assert error_lines(capsys.readouterr().err) == [
        f"reangle serve: error: argument --port: port {port} is out of range: use 1 to 65535 "
        "(see reangle serve --help)"
    ]


def test_a_port_setting_out_of_range_is_refused(
    monkeypatch: pytest.MonkeyPatch, no_engine: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REANGLE_PORT", "99999")
    assert main(["serve", "--engine", "fake"]) == 2
    assert error_lines(capsys.readouterr().err) == [
        "reangle: error: bad setting: REANGLE_PORT: 99999 is not a TCP port: use 1 to 65535"
    ]


@pytest.mark.parametrize(
    ("args", "role"),
    [
        (["worker", "--engine", "fake"], "worker"),
        (["serve", "--engine", "fake", "--role", "worker"], "worker"),
        (["serve", "--engine", "fake", "--role", "api"], "api"),
    ],
)
def test_a_role_sqlite_cannot_take_says_what_to_set_before_loading_an_engine(
    args: list[str],
    role: str,
    tmp_path: Path,
    no_engine: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([*args, "--data-dir", str(tmp_path)]) == 2
    assert error_lines(capsys.readouterr().err) == [
        f"reangle: error: role {role!r} needs a database shared between processes (set "
        "REANGLE_DATABASE_URL=postgresql://...; the embedded SQLite default runs role all)"
    ]
    assert no_engine == []
