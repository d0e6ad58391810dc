"""`reangle keys create --name`: a name `reangle keys list` can show in its columns. An empty or blank one,
or one holding control characters (a tab, a line break), is refused in one line, exit 2; no key is made."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reangle.api.auth import hash_key
from reangle.cli.main import main
from reangle.compose import open_job_store
from reangle.settings import Settings
from tests.conftest import error_lines

USAGE = "(see reangle keys create --help)"


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "a key's name cannot be empty or blank"),
        ("   ", "a key's name cannot be empty or blank"),
        ("x\ty", "a key's name cannot hold control characters (tabs, line breaks): 'x\\ty'"),
        ("ci\nprod", "a key's name cannot hold control characters (tabs, line breaks): 'ci\\nprod'"),
        ("a\x1b[31mb", "a key's name cannot hold control characters (tabs, line breaks): 'a\\x1b[31mb'"),
    ],
    ids=["empty", "blank", "tab", "newline", "escape"],
)
def test_a_name_the_listing_cannot_show_is_refused(
    name: str, problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["keys", "create", "--name", name, "--data-dir", str(tmp_path)])
    assert exited.value.code == 2
    assert error_lines(capsys.readouterr().err) == [
        f"reangle keys create: error: argument --name: {problem} {USAGE}"
    ]
    assert not (tmp_path / "reangle.sqlite3").exists()


def test_a_name_with_spaces_and_letters_of_any_script_is_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "create", "--name", "Équipe CI 🚀", "--data-dir", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["keys", "list", "--data-dir", str(tmp_path)]) == 0
    [row] = capsys.readouterr().out.splitlines()
    assert row.split("  ")[1] == "Équipe CI 🚀"


def test_a_name_stored_with_control_characters_before_they_were_refused_is_listed_escaped_in_its_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = open_job_store(Settings(data_dir=tmp_path))
    try:
        store.insert_api_key("key_00000000000000aa", "ci\tprod\nline", hash_key("rk_old"), now=1.0e9)
    finally:
        store.close()
    assert main(["keys", "list", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "key_00000000000000aa  ci\\tprod\\nline  2001-09-09T01:46:40Z"
    ]
    assert main(["keys", "list", "--json", "--data-dir", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "ci\tprod\nline"  # the JSON keeps it as stored
