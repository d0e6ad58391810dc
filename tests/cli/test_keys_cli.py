"""`reangle keys list` and `reangle keys revoke` (the README's "a key removed from the database stops working
within 10 seconds"), and an unusable data folder for `keys create`: one line, exit 2."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from reangle.api.auth import KeyRing, hash_key
from reangle.cli.main import main
from reangle.compose import open_job_store
from reangle.settings import Settings
from tests.conftest import error_lines


def create(data_dir: Path, name: str, capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """(key id, key) of a key made with `reangle keys create`."""
    assert main(["keys", "create", "--name", name, "--data-dir", str(data_dir)]) == 0
    captured = capsys.readouterr()
    key_id = captured.err.split("created ", 1)[1].split(" ", 1)[0]
    return key_id, captured.out.strip()


def listed(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, str]]:
    assert main(["keys", "list", "--json", "--data-dir", str(data_dir)]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_list_shows_ids_names_and_dates_never_the_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    open_job_store(Settings(data_dir=tmp_path)).close()  # a server ran here, and made no key
    assert main(["keys", "list", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == ""  # no keys yet (said on stderr)
    ci_id, ci_key = create(tmp_path, "ci", capsys)
    laptop_id, laptop_key = create(tmp_path, "laptop", capsys)
    assert main(["keys", "list", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()]
    assert [row[:2] for row in rows] == [[ci_id, "ci"], [laptop_id, "laptop"]]
    assert all(row[2].endswith("Z") and row[2][:2] == "20" for row in rows)
    for secret in (ci_key, laptop_key, hash_key(ci_key), hash_key(laptop_key)):
        assert secret not in out
    assert [(row["id"], row["name"]) for row in listed(tmp_path, capsys)] == [
        (ci_id, "ci"),
        (laptop_id, "laptop"),
    ]


def test_list_shows_the_keys_of_reangle_api_keys_by_the_id_their_work_is_owned_under(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stored_id, _ = create(tmp_path, "ci", capsys)
    monkeypatch.setenv("REANGLE_API_KEYS", "first-secret, second-secret")
    store = open_job_store(Settings(data_dir=tmp_path))
    ring = KeyRing(store, enabled=True, env_keys="first-secret,second-secret")
    owners = [ring.owner("first-secret"), ring.owner("second-secret")]
    store.close()

    assert main(["keys", "list", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()]
    assert [row[0] for row in rows] == [stored_id, *owners]
    assert [row[1:] for row in rows[1:]] == [["REANGLE_API_KEYS", "#1", "-"], ["REANGLE_API_KEYS", "#2", "-"]]
    assert "secret" not in out
    assert [(row["id"], row["name"]) for row in listed(tmp_path, capsys)] == [
        (stored_id, "ci"),
        (owners[0], "REANGLE_API_KEYS #1"),
        (owners[1], "REANGLE_API_KEYS #2"),
    ]


@pytest.mark.parametrize("by", ["id", "name"])
def test_revoke_removes_the_key_from_the_database(
    by: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_id, key = create(tmp_path, "ci", capsys)
    kept_id, _ = create(tmp_path, "laptop", capsys)
    assert main(["keys", "revoke", key_id if by == "id" else "ci", "--data-dir", str(tmp_path)]) == 0
    assert f"revoked {key_id} (ci)" in capsys.readouterr().err
    assert [row["id"] for row in listed(tmp_path, capsys)] == [kept_id]
    store = open_job_store(Settings(data_dir=tmp_path))
    try:
        assert store.api_key_id(hash_key(key)) is None  # what a server asks (at most 10 s after)
    finally:
        store.close()


def test_revoking_an_unknown_key_is_one_line_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_id, _ = create(tmp_path, "ci", capsys)
    assert main(["keys", "revoke", "key_0000000000000000", "--data-dir", str(tmp_path)]) == 2
    assert error_lines(capsys.readouterr().err) == [
        f"reangle: error: no API key 'key_0000000000000000' in {tmp_path}"
    ]
    assert [row["id"] for row in listed(tmp_path, capsys)] == [key_id]


def test_a_name_two_keys_share_needs_the_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, _ = create(tmp_path, "ci", capsys)
    second, _ = create(tmp_path, "ci", capsys)
    assert main(["keys", "revoke", "ci", "--data-dir", str(tmp_path)]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1
    assert lines[0].startswith("reangle: error: 2 keys are named 'ci'")
    assert first in lines[0]
    assert second in lines[0]
    assert len(listed(tmp_path, capsys)) == 2


def test_a_key_of_the_setting_cannot_be_revoked_here(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "revoke", "env_0123456789abcdef", "--data-dir", str(tmp_path)]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1
    assert "REANGLE_API_KEYS" in lines[0]


@pytest.mark.parametrize("action", [["list"], ["revoke", "ci"]])
def test_listing_or_revoking_in_a_folder_without_a_database_says_so_and_makes_none(
    action: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mistyped = tmp_path / "dta"
    assert main(["keys", *action, "--data-dir", str(mistyped)]) == 2
    [line] = error_lines(capsys.readouterr().err)
    assert line.startswith(f"reangle: error: no reangle database in {mistyped} (check --data-dir")
    assert not mistyped.exists()


def test_a_data_folder_that_cannot_be_made_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a-file").write_text("")
    unusable = tmp_path / "a-file" / "data"
    assert main(["keys", "create", "--name", "ci", "--data-dir", str(unusable)]) == 2
    assert error_lines(capsys.readouterr().err) == [
        f"reangle: error: cannot create the data folder {unusable}: Not a directory"
    ]


def test_on_postgres_the_keys_live_in_the_database_and_need_no_data_folder(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REANGLE_DATABASE_URL", pg_url)
    (tmp_path / "a-file").write_text("")
    unusable = tmp_path / "a-file" / "data"
    key_id, _ = create(unusable, "ci", capsys)
    assert [row["id"] for row in listed(unusable, capsys)] == [key_id]
    assert main(["keys", "revoke", key_id, "--data-dir", str(unusable)]) == 0
    capsys.readouterr()
    assert listed(unusable, capsys) == []


def test_a_second_rotation_within_the_overlap_is_refused_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It would stop at once the secret the first rotation left signing for 24 h."""
    key_id, _ = create(tmp_path, "ci", capsys)

    def secret(*flags: str) -> int:
        return main(["keys", "webhook-secret", "--key-id", key_id, *flags, "--data-dir", str(tmp_path)])

    def in_use() -> list[str]:
        store = open_job_store(Settings(data_dir=tmp_path))
        try:
            return store.webhook_secrets(key_id, time.time())
        finally:
            store.close()

    assert secret() == 0
    first = capsys.readouterr().out.strip()
    assert secret("--rotate") == 0
    second = capsys.readouterr().out.strip()
    assert in_use() == [second, first]

    assert secret("--rotate") == 2
    assert error_lines(capsys.readouterr().err) == [
        f"reangle: error: the previous webhook secret of {key_id} still signs beside the current one "
        "(for 24 h after a rotation): rotating again now would stop it at once, and receivers still holding "
        "it would refuse the deliveries (to stop it at once anyway, for a leaked secret, give --force as "
        "well)"
    ]
    assert in_use() == [second, first]

    assert secret("--rotate", "--force") == 0
    third = capsys.readouterr().out.strip()
    assert in_use() == [third, second]


def test_webhook_secret_makes_no_database_in_a_mistyped_folder_and_force_goes_with_rotate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mistyped = tmp_path / "mistyped"
    assert (
        main(["keys", "webhook-secret", "--key-id", "key_0123456789abcdef", "--data-dir", str(mistyped)]) == 2
    )
    assert "no reangle database in" in error_lines(capsys.readouterr().err)[0]
    assert not (mistyped / "reangle.sqlite3").exists()
    key_id, _ = create(tmp_path, "ci", capsys)
    assert main(["keys", "webhook-secret", "--key-id", key_id, "--force", "--data-dir", str(tmp_path)]) == 2
    assert error_lines(capsys.readouterr().err) == [
        "reangle: error: --force goes with --rotate: give both, or neither"
    ]
