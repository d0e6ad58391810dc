"""The OpenAI Images dialect's refusals say what was wrong in the request's own terms: every method on an
/openai/v1 path it does not serve is answered alike, in OpenAI's error shape; fal's additional_prompt is
named when it is the text at fault; a generations body that is no JSON object, or a value outside a choice,
is described in JSON's words, not Python's."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import httpx
import pytest

from reangle.core.edit import MAX_PROMPT_CHARS
from reangle.dialects.openai_images import read_json
from reangle.dialects.openai_schemas import error_payload, translate, translate_generation
from reangle.errors import InvalidInput
from tests.dialects.conftest import API_KEY, RunningServer
from tests.dialects.openai_support import posted


@pytest.mark.parametrize(
    ("method", "path"),
    [
        *((method, "/images/edits") for method in ("OPTIONS", "HEAD", "GET", "PUT")),
        *((method, "/models") for method in ("OPTIONS", "POST")),  # HEAD mirrors its GET
        *((method, "/no/such/thing") for method in ("OPTIONS", "HEAD", "GET")),
    ],
)
def test_every_method_not_served_is_an_openai_404_without_an_allow_header(
    server: RunningServer, method: str, path: str
) -> None:
    response = httpx.request(
        method, f"{server.url}/openai/v1{path}", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10
    )
    assert response.status_code == 404, response.text
    assert "allow" not in response.headers
    assert response.headers["x-should-retry"] == "false"
    if method != "HEAD":  # a HEAD answer has no body
        error = response.json()["error"]
        assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", None, "not_found")
        assert error["message"].startswith(f"Unknown request URL: {method} /openai/v1{path}. ")


def edit_refusal(fields: dict[str, str]) -> dict[str, Any]:
    with pytest.raises(InvalidInput) as caught:
        translate(fields, ["aW1n"])
    status, body = error_payload(caught.value)
    assert status == 400
    error: dict[str, Any] = body["error"]
    return error


def test_an_overlong_additional_prompt_is_named_as_itself() -> None:
    error = edit_refusal({"prompt": "", "horizontal_angle": "90", "additional_prompt": "x" * 5000})
    assert error["param"] == "additional_prompt"
    assert error["message"] == (
        f"additional_prompt is 5,000 characters, more than the limit of {MAX_PROMPT_CHARS:,}"
    )


def test_a_prompt_and_additional_prompt_too_long_together_name_both() -> None:
    error = edit_refusal({"prompt": "p" * 1500, "horizontal_angle": "90", "additional_prompt": "a" * 1000})
    assert error["param"] == "additional_prompt"
    assert error["message"] == (
        f"prompt and additional_prompt together are 2,501 characters, more than the limit of "
        f"{MAX_PROMPT_CHARS:,}"
    )


def test_a_prompt_too_long_alone_is_named_as_the_prompt() -> None:
    error = edit_refusal({"prompt": "p" * 2500, "horizontal_angle": "90", "additional_prompt": "add snow"})
    assert error["param"] == "prompt"
    assert error["message"].startswith("prompt is ")


def test_a_nul_in_additional_prompt_is_named_as_itself() -> None:
    error = edit_refusal({"prompt": "", "horizontal_angle": "90", "additional_prompt": "add\x00snow"})
    assert error["param"] == "additional_prompt"
    assert error["message"] == "additional_prompt: must not contain a NUL character"


def read(raw: bytes) -> dict[str, Any]:
    """`read_json` over a request whose body is `raw`."""
    return asyncio.run(read_json(posted("/openai/v1/images/generations", raw, "application/json")))


@pytest.mark.parametrize(
    ("raw", "kind"),
    [(b"null", "null"), (b'["a red bicycle"]', "an array"), (b"NaN", "a number"), (b'"x"', "a text")],
)
def test_a_body_that_is_no_object_is_named_in_json_words(raw: bytes, kind: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        read(raw)
    assert caught.value.message == f"the body must be a JSON object, not {kind}"


def test_a_number_of_too_many_digits_is_said_to_be_one() -> None:
    with pytest.raises(InvalidInput) as caught:
        read(b'{"prompt": "x", "seed": ' + b"9" * 5000 + b"}")
    limit = sys.get_int_max_str_digits()
    assert caught.value.message == f"a number in the body has more than {limit:,} digits"
    assert "sys." not in caught.value.message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"prompt": 5}, "prompt must be a string, not a number: say what to generate"),
        ({"prompt": "x", "size": ["1024x1024"]}, "size must be a string or a number, not an array"),
        (
            {"prompt": "x", "quality": {"level": "high"}},
            "quality must be a string or a number, not an object",
        ),
    ],
)
def test_generation_values_of_the_wrong_kind_are_named_in_json_words(
    body: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        translate_generation(body)
    assert caught.value.message == message


def test_an_unknown_background_says_which_values_are_taken() -> None:
    with pytest.raises(InvalidInput) as caught:
        translate_generation({"prompt": "x", "background": "abc"})
    assert caught.value.message == "background must be auto or opaque (got background='abc')"
    assert caught.value.field == "background"
    error = edit_refusal({"prompt": "x", "background": "abc"})
    assert (error["param"], error["message"]) == (
        "background",
        "background must be auto or opaque (got background='abc')",
    )
    transparent = edit_refusal({"prompt": "x", "background": "transparent"})  # its own reason, as before
    assert (
        transparent["message"] == "transparent backgrounds are not supported (got background='transparent')"
    )
