"""The download links' signing key kept in the data folder: made whole or not at all, its owner's only, and
refused when it is empty or cut short (every link could be forged with it)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from reangle.api.signing import KEY_FILE, UrlSigner
from reangle.cli.main import main
from reangle.errors import ReangleError


def test_a_new_key_is_made_once_and_kept(tmp_path: Path) -> None:
    first = UrlSigner.from_setting_or_file(None, tmp_path)
    key = (tmp_path / KEY_FILE).read_text()
    assert len(key) == 64
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    again = UrlSigner.from_setting_or_file(None, tmp_path)
    assert again.signature("asset_1", 100) == first.signature("asset_1", 100)
    assert [path.name for path in tmp_path.iterdir()] == [KEY_FILE]  # no draft left beside it


def test_a_key_readable_by_others_is_narrowed_to_its_owner(tmp_path: Path) -> None:
    UrlSigner.from_setting_or_file(None, tmp_path)
    (tmp_path / KEY_FILE).chmod(0o644)
    UrlSigner.from_setting_or_file(None, tmp_path)
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600


@pytest.mark.parametrize(("content", "state"), [("", "empty"), ("\n", "empty"), ("abc123\n", "too short")])
def test_an_empty_or_cut_key_is_refused(tmp_path: Path, content: str, state: str) -> None:
    (tmp_path / KEY_FILE).write_text(content)
    with pytest.raises(
        ReangleError, match=f"signing key {tmp_path / KEY_FILE} is {state}: anyone could sign"
    ):
        UrlSigner.from_setting_or_file(None, tmp_path)


def test_serve_stops_with_one_line_on_an_empty_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / KEY_FILE).write_text("")
    monkeypatch.setenv("REANGLE_DATA_DIR", str(tmp_path))
    assert main(["serve", "--engine", "fake", "--port", "1"]) == 1
    assert (
        capsys.readouterr()
        .err.splitlines()[-1]
        .startswith(f"reangle: error: the download links' signing key {tmp_path / KEY_FILE} is empty")
    )
