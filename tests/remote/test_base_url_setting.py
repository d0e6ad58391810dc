"""`REANGLE_DASHSCOPE_BASE_URL` is checked when the settings load: an unusable endpoint stops `reangle serve`
with one line naming the setting, instead of failing every Wan job later."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from reangle.cli.main import main
from reangle.remote.base_url import base_url_problem
from reangle.settings import DASHSCOPE_INTL, Settings


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("dashscope.aliyuncs.com", "it has no http:// or https:// scheme"),
        ("https://", "it has no host"),
        (
            "https://user:sk-secret@dashscope.aliyuncs.com",
            "it must not carry credentials (the API key has a setting of its own)",
        ),
        (
            "https://dashscope-intl.aliyuncs.com/api/v1/",
            "it must not end in /api/v1 (the API's paths, /api/v1/..., are appended to it)",
        ),
        (
            "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
            "/compatible-mode/v1 is the vendor's OpenAI-compatible API, not the one its image models "
            "take: use the scheme and host",
        ),
    ],
)
def test_serve_stops_with_one_line_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], value: str, problem: str
) -> None:
    monkeypatch.setenv("REANGLE_DASHSCOPE_BASE_URL", value)

    def fake_server_start(*args: object, **kwargs: object) -> None:
        raise AssertionError("the server started despite the bad setting")

    monkeypatch.setattr("uvicorn.Server.run", fake_server_start)
    assert main(["serve", "--engine", "fake"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert line.startswith("reangle: error: bad setting: REANGLE_DASHSCOPE_BASE_URL: ")
    assert f"as {DASHSCOPE_INTL}" in line
    assert line.endswith(f"; {problem}")
    assert "sk-secret" not in line


@pytest.mark.parametrize(
    "value",
    [
        "https://dashscope.aliyuncs.com",
        " https://dashscope-intl.aliyuncs.com/ ",
        "http://127.0.0.1:9",
        "https://proxy.example.com/dashscope",
    ],
)
def test_a_usable_endpoint_is_kept_without_surrounding_spaces(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("REANGLE_DASHSCOPE_BASE_URL", value)
    assert Settings().dashscope_base_url == value.strip()


def test_the_default_endpoint_is_usable() -> None:
    assert base_url_problem(DASHSCOPE_INTL) is None
    assert Settings().dashscope_base_url == DASHSCOPE_INTL


def test_a_bad_value_passed_in_code_is_refused_too() -> None:
    with pytest.raises(ValidationError, match="it has no host"):
        Settings(dashscope_base_url="http://")
