"""A refusal that names a key the client made up shows it quoted, so that no text in it reads as part of the
message (a plain name such as `negativePrompt` is shown bare, as every field is)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from reangle.dialects.openai_images import read_form
from reangle.dialects.scenario_schemas import translate_request
from reangle.errors import InvalidInput
from tests.dialects.openai_support import posted

CAMERA = "model_qwen-edit-multiangle-2511"


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        ("negativePrompt", "negativePrompt"),
        ("zoom: fine; its inputs are", "'zoom: fine; its inputs are'"),
        ("a\nb", "'a\\nb'"),
    ],
)
def test_a_scenario_key_not_a_plain_name_is_quoted(key: str, shown: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        translate_request(CAMERA, {"images": ["asset_x"], key: 1})
    assert caught.value.message.startswith(f"{shown}: unknown input for {CAMERA}; its inputs are ")
    assert caught.value.field == key


def form_fields(fields: list[tuple[str, str]]) -> tuple[dict[str, str], list[bytes | str]]:
    """`read_form` over a multipart body of these text fields."""
    sent = httpx.Request("POST", "http://x/openai/v1/images/edits", files=[(n, (None, v)) for n, v in fields])
    body, content_type = sent.read(), sent.headers["content-type"]
    return asyncio.run(read_form(posted("/openai/v1/images/edits", body, content_type)))


def test_an_openai_field_given_twice_is_named_only_once_it_is_known() -> None:
    with pytest.raises(InvalidInput) as caught:
        form_fields([("made up: x", "1"), ("made up: x", "2")])
    assert caught.value.message == "Unknown parameter: 'made up: x'."
    with pytest.raises(InvalidInput) as caught:
        form_fields([("prompt", "a"), ("prompt", "b")])
    assert caught.value.message == "prompt is given twice, as 'a' and 'b'; send it once"
