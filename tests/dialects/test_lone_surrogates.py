"""Half a UTF-16 surrogate pair (JSON's "\\ud800" escape alone; valid JSON, but no character) in any text of a
body, a key included, is the request's fault in every dialect: a 4xx in its own error shape naming where it
is, never a 500 (no database, log or answer can write such text as UTF-8)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from reangle.core.inputs import SURROGATE_MESSAGE
from tests.dialects.conftest import API_KEY, RunningServer, png_base64

BEARER = {"Authorization": f"Bearer {API_KEY}"}
LONE = "\\ud800"  # as the body's bytes carry it: an escape, six characters


@pytest.mark.parametrize(
    ("path", "body", "status", "message_at", "place"),
    [
        ("/v1/assets", '{"data": "%s", "name": "snow%s.png"}', 422, ("error", "message"), "name:"),
        ("/scenario/v1/assets", '{"image": "%s", "name": "a%sb"}', 400, ("error",), "name:"),
        (
            "/scenario/v1/assets/get-bulk",
            '{"assetIds": ["%s", "asset_%s"]}',
            400,
            ("error",),
            "assetIds.1:",
        ),
        (
            "/scenario/v1/generate/custom/model_qwen-image-2512",
            '{"prompt": "x", "pad": "%s", "k%s": 1}',
            400,
            ("error",),
            "body:",
        ),
        (
            "/openai/v1/images/generations",
            '{"prompt": "x", "pad": "%s", "k%s": 1}',
            400,
            ("error", "message"),
            "body:",
        ),
        (
            "/runpod/v2/ep/run",
            '{"input": {"image": "%s", "prompt": "a%s"}}',
            400,
            ("error",),
            "input.prompt:",
        ),
    ],
    ids=[
        "native-upload",
        "scenario-upload",
        "scenario-get-bulk",
        "scenario-key",
        "openai-key",
        "runpod-prompt",
    ],
)
def test_a_lone_surrogate_is_the_dialects_own_4xx_naming_its_place(
    server: RunningServer, path: str, body: str, status: int, message_at: tuple[str, ...], place: str
) -> None:
    content = (body % (png_base64(), LONE)).encode()
    response = httpx.post(
        server.url + path, content=content, headers={**BEARER, "Content-Type": "application/json"}, timeout=30
    )
    assert response.status_code == status, response.text
    message: Any = response.json()
    for key in message_at:
        message = message[key]
    assert isinstance(message, str)
    assert message.startswith(place)
    assert SURROGATE_MESSAGE in message
