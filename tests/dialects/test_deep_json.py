"""JSON nested deeper than the parser goes is the request's fault in every dialect: a 4xx in the dialect's own
error shape, never a 500."""

from __future__ import annotations

import httpx
import pytest

from tests.dialects.conftest import API_KEY, RunningServer

DEEP = b'{"input": ' + b"[" * 5000 + b"]" * 5000 + b"}"


@pytest.mark.parametrize(
    ("path", "headers", "status", "message_at", "words"),
    [
        ("/v1/jobs", {"Authorization": f"Bearer {API_KEY}"}, 422, ("error", "message"), "too deeply"),
        (
            "/runpod/v2/qwen-camera-edit/run",
            {"Authorization": f"Bearer {API_KEY}"},
            400,
            ("error",),
            "too deeply",
        ),
        (
            "/segmind/v1/qwen-image-edit-plus-multiple-angle",
            {"x-api-key": API_KEY},
            400,
            ("error",),
            "too deeply",
        ),
        (
            "/scenario/v1/generate/custom/model_qwen-image-edit-2511",
            {"Authorization": f"Bearer {API_KEY}"},
            400,
            ("error",),
            "too deeply",
        ),
        (
            "/openai/v1/images/generations",
            {"Authorization": f"Bearer {API_KEY}"},
            400,
            ("error", "message"),
            "too deeply",
        ),
    ],
)
def test_json_nested_thousands_deep_is_the_dialects_own_4xx(
    server: RunningServer,
    path: str,
    headers: dict[str, str],
    status: int,
    message_at: tuple[str, ...],
    words: str,
) -> None:
    response = httpx.post(
        server.url + path, content=DEEP, headers={**headers, "Content-Type": "application/json"}, timeout=30
    )
    assert response.status_code == status, response.text
    message = response.json()
    for key in message_at:
        message = message[key]
    assert isinstance(message, str)
    assert words in message
