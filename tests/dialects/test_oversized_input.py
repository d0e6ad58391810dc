"""Integers of hundreds of digits (valid JSON, too large for a float) and ids no client would send: every
dialect refuses them in its own error shape, naming the field, never a 500 and never a job."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from tests.dialects.conftest import API_KEY, RunningServer, png, png_base64

#: A JSON integer of 401 digits: Python reads it as an int, which overflows any conversion to float.
HUGE = "1" + "0" * 400


def post(server: RunningServer, path: str, raw_json: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}{path}",
        content=raw_json,
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        timeout=30,
    )


def jobs_of(server: RunningServer) -> list[str]:
    listed = httpx.get(f"{server.url}/v1/jobs?limit=100", headers={"Authorization": f"Bearer {API_KEY}"})
    return [job["id"] for job in listed.json()["data"]]


@pytest.mark.parametrize("field", ["seed", "num_outputs", "num_inference_steps", "horizontal_angle"])
def test_native_submissions_refuse_a_huge_integer_naming_the_field(server: RunningServer, field: str) -> None:
    before = jobs_of(server)
    item = f'{{"input": {{"images": ["{png_base64()}"], "{field}": {HUGE}}}}}'
    for path, body in [
        ("/v1/jobs", f'{{"model": "qwen-edit-multiangle-2511", {item[1:-1]}}}'),
        ("/v1/batches", f'{{"model": "qwen-edit-multiangle-2511", "items": [{item}]}}'),
    ]:
        refused = post(server, path, body)
        assert refused.status_code == 422, refused.text
        assert field in refused.json()["error"]["message"], refused.text
        assert HUGE not in refused.text  # never echoed: an int is shown by its length
    assert jobs_of(server) == before


def test_native_lora_scale_refuses_a_huge_integer(server: RunningServer) -> None:
    body = (
        f'{{"model": "qwen-image-edit-2511", "input": {{"images": ["{png_base64()}"], "prompt": "x", '
        f'"loras": [{{"url": "https://example.com/a.safetensors", "scale": {HUGE}}}]}}}}'
    )
    refused = post(server, "/v1/jobs", body)
    assert refused.status_code == 422, refused.text
    assert "loras" in refused.json()["error"]["message"]


@pytest.mark.parametrize(
    ("path", "status", "message_at"),
    [
        ("/v1/jobs", 422, ("error", "message")),
        ("/v1/assets", 422, ("error", "message")),
        ("/runpod/v2/ep/run", 400, ("error",)),
        ("/scenario/v1/generate/custom/model_qwen-edit-multiangle-2511", 400, ("error",)),
    ],
)
def test_a_body_with_an_integer_past_pythons_digit_limit_is_named(
    server: RunningServer, path: str, status: int, message_at: tuple[str, ...]
) -> None:
    refused = post(server, path, '{"model": "x", "input": {"seed": 1' + "0" * 5000 + "}}")
    assert refused.status_code == status, refused.text
    message: Any = refused.json()
    for key in message_at:
        message = message[key]
    assert message == "body: a number in the request body has more than 4,300 digits"


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        (
            "/scenario/v1/generate/custom/model_qwen-edit-multiangle-2511",
            '{{"images": ["{image}"], "seed": {huge}}}',
            "seed",
        ),
        ("/runpod/v2/abc123/run", '{{"input": {{"image": "{image}", "seed": {huge}}}}}', "seed"),
        ("/runpod/v2/abc123/runsync", '{{"input": {{"image": "{image}", "seed": {huge}}}}}', "seed"),
        ("/openai/v1/images/generations", '{{"prompt": "a cat", "seed": {huge}}}', "seed"),
    ],
)
def test_dialects_refuse_a_huge_integer_in_their_own_shape(
    server: RunningServer, path: str, body: str, words: str
) -> None:
    before = jobs_of(server)
    refused = post(server, path, body.format(image=png_base64(), huge=HUGE))
    assert refused.status_code == 400, refused.text
    error: Any = refused.json()["error"]
    message = error["message"] if isinstance(error, dict) else error  # OpenAI's object, or a text
    assert words in message
    assert jobs_of(server) == before


@pytest.mark.parametrize(
    "token",
    [
        b"[1" + b"0" * 400 + b', "asset_x"]',  # a time too large for a float
        b"[" * 1500 + b"]" * 1500,  # nested deeper than the JSON parser goes
    ],
)
def test_a_forged_scenario_page_token_is_refused(server: RunningServer, token: bytes) -> None:
    encoded = base64.urlsafe_b64encode(token).decode().rstrip("=")
    refused = httpx.get(
        f"{server.url}/scenario/v1/assets",
        params={"paginationToken": encoded},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "paginationToken is not one this server returned"


@pytest.mark.parametrize("endpoint_id", ["%00", "a" * 101, "a%20b"])
def test_a_runpod_endpoint_id_no_client_sends_is_refused(server: RunningServer, endpoint_id: str) -> None:
    before = jobs_of(server)
    refused = post(server, f"/runpod/v2/{endpoint_id}/run", f'{{"input": {{"image": "{png_base64()}"}}}}')
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"].startswith("endpoint id ")
    assert jobs_of(server) == before


def test_openai_edits_name_an_empty_image_and_a_seed_too_large(server: RunningServer) -> None:
    def edit(files: list[tuple[str, Any]], **fields: str) -> dict[str, Any]:
        response = httpx.post(
            f"{server.url}/openai/v1/images/edits",
            headers={"Authorization": f"Bearer {API_KEY}"},
            files=files,
            data={"prompt": "make it blue", **fields},
            timeout=30,
        )
        assert response.status_code == 400, response.text
        error: dict[str, Any] = response.json()["error"]
        return error

    empty = edit([("image", ("in.png", b"", "image/png"))])
    assert (empty["param"], empty["message"]) == ("image", "image is empty: send an image file")
    huge = edit([("image", ("in.png", png(), "image/png"))], seed=HUGE)
    assert (huge["param"], huge["message"]) == ("seed", "seed is too large: a number of 401 digits")
