"""Settings an operator gets wrong are caught at start: numbers of seconds that are infinite or absurdly
large (every link or expiry would then fail to render), misspelled REANGLE_ variables (otherwise silently
ignored) and an unusable cache folder (a traceback otherwise)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from reangle.cli.main import main
from reangle.compose import SettingsError, lora_sources, make_cache_dir
from reangle.settings import ONE_DAY_S, TEN_YEARS_S, Settings, setting_names, unknown_settings
from tests.conftest import error_lines

REANGLE = Path(__file__).parents[1] / "reangle"
FLOAT_SETTINGS = [name for name, field in Settings.model_fields.items() if field.annotation is float]
LIFETIMES = ["result_ttl_s", "upload_ttl_s", "url_ttl_s", "sweep_interval_s"]
TIMEOUTS = [
    "header_timeout_s",
    "body_timeout_s",
    "url_fetch_timeout_s",
    "lora_fetch_timeout_s",
    "rewriter_timeout_s",
    "dashscope_task_timeout_s",
    "webhook_retry_base_s",
    "fake_step_seconds",
]


@pytest.mark.parametrize("name", FLOAT_SETTINGS)
@pytest.mark.parametrize("value", ["inf", "1e400", "-inf", "nan"])
def test_no_number_of_seconds_may_be_infinite(name: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"REANGLE_{name.upper()}", value)
    with pytest.raises(ValidationError, match="Input should be a finite number"):
        Settings()


@pytest.mark.parametrize(("names", "limit"), [(LIFETIMES, TEN_YEARS_S), (TIMEOUTS, ONE_DAY_S)])
def test_numbers_of_seconds_are_taken_up_to_their_bound(
    names: list[str], limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in names:
        monkeypatch.setenv(f"REANGLE_{name.upper()}", str(limit))
    settings = Settings()
    assert [getattr(settings, name) for name in names] == [limit] * len(names)
    for name in names:
        monkeypatch.setenv(f"REANGLE_{name.upper()}", str(limit + 1))
        with pytest.raises(
            ValidationError, match=f" {limit + 1} seconds is more than .*: use at most {limit} "
        ):
            Settings()
        monkeypatch.setenv(f"REANGLE_{name.upper()}", str(limit))


# misspelled variables -----------------------------------------------------------------------------------


def test_every_reangle_variable_the_code_names_is_a_known_one() -> None:
    named = {
        name
        for path in REANGLE.rglob("*.py")
        for name in re.findall(r"REANGLE_[A-Z0-9_]*[A-Z0-9]\b", path.read_text())
    }
    assert {"REANGLE_FUSE_LORAS", "REANGLE_SERVER", "REANGLE_API_KEY"} <= named
    assert named <= setting_names()


def test_unknown_names_come_with_the_closest_known_one() -> None:
    environ = {
        "REANGLE_RESULT_TTL": "60",
        "REANGLE_MAX_QUEUE_SIZE": "5",
        "reangle_prot": "80",
        "REANGLE_WHATEVER_ELSE": "x",
        "REANGLE_MAX_QUEUE": "5",
        "REANGLE_SERVER": "http://x",
        "REANGLE_API_KEY": "k",
        "REANGLE_FUSE_LORAS": "off",
        "HOME": "/root",
    }
    assert unknown_settings(environ) == [
        ("REANGLE_MAX_QUEUE_SIZE", "REANGLE_MAX_QUEUE"),
        ("REANGLE_RESULT_TTL", "REANGLE_RESULT_TTL_S"),
        ("REANGLE_WHATEVER_ELSE", None),
        ("reangle_prot", "REANGLE_PORT"),
    ]


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_misspelled_variable_is_warned_about_once_at_start(
    command: str,
    tmp_path: Path,
    no_engine: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("REANGLE_RESULT_TTL", "60")
    monkeypatch.setenv("REANGLE_MAX_QUEUE_SIZE", "5")
    monkeypatch.setenv("REANGLE_MAX_QUEUE", "5")  # known: no warning
    monkeypatch.setenv("REANGLE_PORT", "99999")  # stops the start right after the warnings
    assert main([command, "--engine", "fake", "--data-dir", str(tmp_path)]) == 2
    assert error_lines(capsys.readouterr().err) == [
        "reangle: warning: REANGLE_MAX_QUEUE_SIZE is not a reangle setting: ignored "
        "(did you mean REANGLE_MAX_QUEUE?)",
        "reangle: warning: REANGLE_RESULT_TTL is not a reangle setting: ignored "
        "(did you mean REANGLE_RESULT_TTL_S?)",
        "reangle: error: bad setting: REANGLE_PORT: 99999 is not a TCP port: use 1 to 65535",
    ]


def test_known_variables_are_not_warned_about(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REANGLE_MAX_QUEUE", "5")
    monkeypatch.setenv("REANGLE_SERVER", "http://127.0.0.1:1")
    assert main(["poses"]) == 0
    assert capsys.readouterr().err == ""


# the cache folder ---------------------------------------------------------------------------------------


def test_the_lora_cache_refuses_an_unusable_cache_folder_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "loras").write_text("")  # a file where its folder goes
    with pytest.raises(SettingsError) as refused:
        lora_sources(Settings(cache_dir=tmp_path))
    assert refused.value.with_hint() == (
        f"bad setting: REANGLE_CACHE_DIR: cannot create folders in {tmp_path}: Not a directory"
    )


# empty values ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["LORA_DIR", "DATA_DIR", "CACHE_DIR", "CATALOG_FILE", "MAX_QUEUE_PER_KEY"])
def test_a_setting_set_to_the_empty_string_is_unset(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """As an env file's `REANGLE_LORA_DIR=` writes it: not the working directory (whose .safetensors files
    requests could then name), and not a refused integer."""
    monkeypatch.setenv(f"REANGLE_{name}", "")
    field = name.lower()
    assert getattr(Settings(), field) == Settings.model_fields[field].get_default(call_default_factory=True)


@pytest.mark.parametrize(
    ("location", "problem"),
    [
        ("ftp://host/y.safetensors", "a: ftp:// is not taken: give an http(s) URL or a file's path"),
        (
            "https://user:pw@host/y.safetensors",
            "a: the URL holds a user name or password, which is not taken",
        ),
        ("loras/y.safetensors", "a: 'loras/y.safetensors' is not the absolute path of a .safetensors file"),
        ("/loras/y.bin", "a: '/loras/y.bin' is not the absolute path of a .safetensors file"),
    ],
)
def test_a_registered_lora_that_cannot_be_used_stops_the_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], location: str, problem: str
) -> None:
    monkeypatch.setenv("REANGLE_LORAS", json.dumps({"b": "https://example.com/b.safetensors", "a": location}))
    assert main(["serve", "--engine", "fake"]) == 2
    err = capsys.readouterr().err
    assert error_lines(err) == [f"reangle: error: bad setting: REANGLE_LORAS: {problem}"]
    assert ":pw@" not in err  # a password is never repeated


def test_registered_loras_by_url_or_absolute_path_are_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    taken = {"a": "https://example.com/a.safetensors", "b": "/srv/b.safetensors", "c": "~/c.safetensors"}
    monkeypatch.setenv("REANGLE_LORAS", json.dumps(taken))
    assert Settings().loras == taken


def test_a_lora_cache_smaller_than_the_largest_lora_stops_the_start_before_an_engine_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_engine: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REANGLE_LORA_MAX_BYTES", "100000")
    monkeypatch.setenv("REANGLE_LORA_CACHE_BYTES", "3000")
    assert main(["serve", "--engine", "tiny", "--data-dir", str(tmp_path)]) == 2
    assert error_lines(capsys.readouterr().err) == [
        "reangle: error: bad setting: REANGLE_LORA_CACHE_BYTES: 3,000 bytes cannot hold the largest LoRA a "
        "request may name (REANGLE_LORA_MAX_BYTES, 100,000 bytes)"
    ]
    assert no_engine == []
    assert main(["pose", "--horizontal-angle", "90"]) == 0  # a command that caches no LoRA runs
    capsys.readouterr()
    monkeypatch.setenv("REANGLE_LORA_CACHE_BYTES", "100000")  # as large as it: fine
    make_cache_dir(Settings(cache_dir=tmp_path))
