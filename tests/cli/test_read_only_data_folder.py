"""A data folder this process cannot write in (a file system remounted read-only): `reangle serve` and the
`reangle keys` and `reangle admin` commands that change the database refuse it in one line naming the folder,
exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from reangle.cli.main import main
from reangle.compose import open_job_store
from reangle.settings import Settings
from tests.conftest import error_lines
from tests.store.read_only import REASON, read_only_folder


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data folder a server ran on: its database and lock file are there."""
    folder = tmp_path / "data"
    folder.mkdir()
    open_job_store(Settings(data_dir=folder)).close()
    (folder / "server.lock").write_text("")
    return folder


@pytest.mark.parametrize(
    "command",
    [
        ["serve", "--engine", "fake"],
        ["keys", "create", "--name", "ci"],
        ["keys", "revoke", "ci"],
        ["keys", "webhook-secret", "--key-id", "key_0123456789abcdef"],
        ["admin", "cancel", "job_0123456789abcdef01234567"],
    ],
    ids=["serve", "keys-create", "keys-revoke", "keys-webhook-secret", "admin-cancel"],
)
def test_a_read_only_data_folder_is_one_line_naming_it(
    command: list[str],
    data_dir: Path,
    no_engine: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with read_only_folder(data_dir, monkeypatch):
        assert main([*command, "--data-dir", str(data_dir)]) == 2
    err = capsys.readouterr().err
    assert [line for line in error_lines(err) if "error" in line] == [
        f"reangle: error: cannot write in the data folder {data_dir}: {REASON}"
    ]
    assert no_engine == []
