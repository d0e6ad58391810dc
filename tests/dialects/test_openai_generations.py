"""Compatibility: `client.images.generate(...)` of the real `openai` client (3.x) against a running reangle
server (fake engine), base URL changed only: text-to-image on qwen-image-2512 through POST
/openai/v1/images/generations. The request translation is also checked pure, without a server.

Jobs are counted through the native API (`GET /v1/jobs`, same key) to show that each SDK call made exactly one
job, and none when the request is refused.
"""

from __future__ import annotations

import io
import time
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from reangle.dialects.openai_schemas import error_payload, translate_generation
from reangle.errors import InvalidInput
from tests.dialects.conftest import API_KEY, RunningServer
from tests.dialects.openai_support import (
    NewJobs,
    assert_a_disconnect_cancels_the_job,
    assert_one_job_answered_twice,
    client,
    decode,
    native,
    wait_for_status,
)

TEXT_TO_IMAGE = "qwen-image-2512"


@pytest.fixture
def new_jobs(server: RunningServer) -> NewJobs:
    return NewJobs(server)


def pixels(picture: Image.Image) -> bytes:
    return picture.convert("RGB").tobytes()


# through the SDK -------------------------------------------------------------------------------------


def test_b64_json_with_n_two_gives_two_distinct_images_of_the_asked_size(
    server: RunningServer, new_jobs: NewJobs
) -> None:
    result = client(server).images.generate(
        model=TEXT_TO_IMAGE,
        prompt="a red bicycle",
        n=2,
        size="96x64",
        response_format="b64_json",
        extra_body={"seed": 11},
    )
    assert new_jobs.collect() == [result._request_id]
    assert result.created > 1_600_000_000
    assert (result.output_format, result.size) == ("png", "96x64")
    assert result.data is not None
    assert len(result.data) == 2
    pictures = [decode(item.b64_json) for item in result.data]
    assert [(picture.format, picture.size) for picture in pictures] == [("PNG", (96, 64))] * 2
    assert pixels(pictures[0]) != pixels(pictures[1])
    assert [item.url for item in result.data] == [None, None]
    assert [item.revised_prompt for item in result.data] == [None, None]  # the prompt ran as given
    job = native(server, f"/v1/jobs/{result._request_id}")
    assert (job["model"], job["status"]) == (TEXT_TO_IMAGE, "succeeded")
    assert (job["input"]["prompt"], job["input"]["num_outputs"], job["input"]["size"]) == (
        "a red bicycle",
        2,
        "96x64",
    )
    assert [asset["seed"] for asset in job["output"]["assets"]] == [11, 12]


def test_url_response_downloads_without_auth_in_the_asked_format(server: RunningServer) -> None:
    result = client(server).images.generate(
        prompt="a lighthouse at dusk",
        size="80x48",
        response_format="url",
        output_format="jpeg",
        output_compression=60,
    )
    assert result.output_format == "jpeg"
    assert result.data is not None
    assert len(result.data) == 1
    (item,) = result.data
    assert item.b64_json is None
    assert item.url is not None
    assert item.url.startswith(f"{server.url}/")
    download = httpx.get(item.url, timeout=10)  # no Authorization header
    assert download.status_code == 200
    picture = Image.open(io.BytesIO(download.content))
    assert (picture.format, picture.size) == ("JPEG", (80, 48))
    assert native(server, f"/v1/jobs/{result._request_id}")["input"]["quality"] == 60


def test_default_model_is_text_to_image_and_openai_model_names_map_to_it(
    server: RunningServer, new_jobs: NewJobs
) -> None:
    sdk = client(server)
    default = sdk.images.generate(prompt="a teapot", size="64x64")
    aliased = sdk.images.generate(prompt="a teapot", size="64x64", model="gpt-image-1", quality="high")
    assert new_jobs.collect() == [aliased._request_id, default._request_id]
    for result, acceleration in ((default, "high"), (aliased, "regular")):
        job = native(server, f"/v1/jobs/{result._request_id}")
        assert (job["model"], job["input"]["acceleration"]) == (TEXT_TO_IMAGE, acceleration)
        assert result.data is not None
        assert decode(result.data[0].b64_json).size == (64, 64)


def test_revised_prompt_reports_the_rewrite_asked_for_through_extra_body(server: RunningServer) -> None:
    result = client(server).images.generate(
        prompt="a red bicycle", size="64x64", extra_body={"rewrite_prompt": True, "negative_prompt": "blur"}
    )
    assert result.data is not None
    job = native(server, f"/v1/jobs/{result._request_id}")
    assert (job["input"]["rewrite_prompt"], job["input"]["negative_prompt"]) == (True, "blur")
    (plan,) = [asset["plan"] for asset in job["output"]["assets"]]
    assert plan["rewrite"]["rewritten"] is True
    # the fake engine's rewriter keeps the words and adds its own: what the model ran is what is reported
    revised = result.data[0].revised_prompt
    assert revised == plan["prompt"]
    assert revised is not None
    assert revised.startswith("a red bicycle")
    assert revised != "a red bicycle"


def test_an_image_set_through_extra_body_reports_each_shot_as_revised_prompt(server: RunningServer) -> None:
    result = client(server).images.generate(
        prompt="a red bicycle",
        size="64x64",
        extra_body={"image_set": True, "set_prompts": ["from the front", "from above"], "seed": 3},
    )
    assert result.data is not None
    assert [item.revised_prompt for item in result.data] == [
        "a red bicycle. from the front",
        "a red bicycle. from above",
    ]


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"model": "qwen-image-edit-2511"}, "model"),
        ({"model": "qwen-edit-multiangle-2511"}, "model"),
        ({"model": "stable-diffusion-xl"}, "model"),
        ({"size": "huge"}, "size"),
        ({"size": "13x7"}, "size"),  # below the engine's smallest side once floored to multiples of 16
        ({"size": "9000x9000"}, "size"),
        ({"n": 9}, "n"),
        ({"n": 0}, "n"),
        ({"output_format": "gif"}, "output_format"),
        ({"background": "transparent"}, "background"),
        ({"quality": "ultra"}, "quality"),
        ({"extra_body": {"horizontal_angle": 90}}, "horizontal_angle"),
        ({"extra_body": {"seed": "lucky"}}, "seed"),
        ({"extra_body": {"aspect_ratio": "7:5"}}, "aspect_ratio"),
        ({"prompt": "   "}, "prompt"),
    ],
)
def test_bad_input_is_a_bad_request_naming_the_param(
    server: RunningServer, new_jobs: NewJobs, options: dict[str, Any], param: str
) -> None:
    request: dict[str, Any] = {"prompt": "a red bicycle", "size": "64x64", **options}
    with pytest.raises(openai.BadRequestError) as caught:
        client(server).images.generate(**request)
    assert caught.value.param == param
    assert caught.value.type == "invalid_request_error"
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert new_jobs.collect() == []


def test_dall_e_3_style_is_accepted_and_ignored(server: RunningServer, new_jobs: NewJobs) -> None:
    result = client(server).images.generate(
        prompt="a teapot", model="dall-e-3", size="64x64", style="natural"
    )
    assert new_jobs.collect() == [result._request_id]
    job = native(server, f"/v1/jobs/{result._request_id}")
    assert job["model"] == TEXT_TO_IMAGE
    assert "style" not in job["input"]


def test_wrong_model_says_which_models_generate(server: RunningServer) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(server).images.generate(prompt="a red bicycle", model="qwen-image-edit-2511")
    assert TEXT_TO_IMAGE in str(caught.value.message)
    assert "images/edits" in str(caught.value.message)


def test_missing_prompt_bad_json_and_forms_are_openai_400s_not_500s(
    server: RunningServer, new_jobs: NewJobs
) -> None:
    url = f"{server.url}/openai/v1/images/generations"
    headers = {"Authorization": f"Bearer {API_KEY}"}
    sent = [
        httpx.post(url, headers=headers, json={"model": TEXT_TO_IMAGE, "n": 1}, timeout=10),
        httpx.post(url, headers=headers, json={"prompt": None}, timeout=10),
        httpx.post(url, headers=headers, json={"prompt": ["a", "b"]}, timeout=10),
        httpx.post(
            url, headers={**headers, "content-type": "application/json"}, content=b'{"prompt": ', timeout=10
        ),
        httpx.post(url, headers=headers, json=["a red bicycle"], timeout=10),
        httpx.post(url, headers=headers, content=b"", timeout=10),
        httpx.post(url, headers=headers, content=b"\xff\xfe\x00garbage", timeout=10),
        httpx.post(url, headers=headers, data={"prompt": "a red bicycle"}, timeout=10),
    ]
    for response in sent:
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/json"
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "invalid_request_error"
        assert error["message"]
    assert [response.json()["error"]["param"] for response in sent[:3]] == ["prompt"] * 3
    assert "JSON" in sent[3].json()["error"]["message"]
    assert new_jobs.collect() == []


def test_missing_prompt_through_the_sdk(server: RunningServer, new_jobs: NewJobs) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(server).images.generate(prompt=None, size="64x64")  # type: ignore[call-overload]
    assert caught.value.param == "prompt"
    assert "required" in str(caught.value.message)
    assert new_jobs.collect() == []


def test_wrong_key_is_an_authentication_error(server: RunningServer, new_jobs: NewJobs) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        client(server, key="not-a-key").images.generate(prompt="a red bicycle")
    assert caught.value.code == "invalid_api_key"
    assert new_jobs.collect() == []


def test_failing_job_is_a_server_error_that_the_sdk_does_not_retry(
    server: RunningServer, new_jobs: NewJobs
) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client(server).images.generate(prompt="fake:fail a red bicycle", size="64x64")
    assert (caught.value.status_code, caught.value.code) == (500, "engine_error")
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert new_jobs.collect() == [caught.value.response.headers["x-request-id"]]


def test_client_timeout_bounds_the_wait_one_job_canceled(server: RunningServer, new_jobs: NewJobs) -> None:
    """As for edits: 100 fake steps take 2 s; the 1.5 s client timeout makes the server answer 504 first."""
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as caught:
        client(server, timeout=1.5).images.generate(
            prompt="slow", size="64x64", extra_body={"num_inference_steps": 100}
        )
    assert time.monotonic() - started < 1.5
    assert (caught.value.status_code, caught.value.code) == (504, "timeout")
    assert new_jobs.collect() == [caught.value.response.headers["x-request-id"]]
    assert wait_for_status(server, new_jobs.ids[0]) == "canceled"


def test_client_disconnect_cancels_the_job(server: RunningServer, new_jobs: NewJobs) -> None:
    body = {"prompt": "slow", "size": "64x64", "num_inference_steps": 100}
    assert_a_disconnect_cancels_the_job(server, new_jobs, "images/generations", json=body)


def test_idempotency_key_returns_the_same_job(server: RunningServer, new_jobs: NewJobs) -> None:
    headers = {"Idempotency-Key": f"openai-generate-{time.time_ns()}"}
    first = client(server).images.generate(prompt="a red bicycle", size="64x64", extra_headers=headers)
    again = client(server).images.generate(prompt="a red bicycle", size="64x64", extra_headers=headers)
    assert_one_job_answered_twice(first, again, new_jobs)
    with pytest.raises(openai.ConflictError):  # the same key for another request
        client(server).images.generate(prompt="a blue bicycle", size="64x64", extra_headers=headers)


# the translation, pure -------------------------------------------------------------------------------


def test_translation_of_the_openai_fields() -> None:
    call = translate_generation(
        {
            "prompt": "a red bicycle",
            "model": "dall-e-3",
            "n": 2,
            "size": "1024x1024",
            "response_format": "url",
            "output_format": "webp",
            "output_compression": 0,
            "quality": "hd",
            "background": "opaque",
            "moderation": "low",
            "user": "someone",
            "stream": False,
            "style": None,  # null: as if omitted
            "seed": 7,
        }
    )
    assert (call.model, call.response_format) == (TEXT_TO_IMAGE, "url")
    assert call.input == {
        "prompt": "a red bicycle",
        "seed": 7,
        "num_outputs": 2,
        "size": "1024x1024",
        "output_format": "webp",
        "quality": 1,
        "acceleration": "regular",
    }


@pytest.mark.parametrize(
    ("size", "native_size"), [("auto", None), (" 1536 X 1024 ", "1536x1024"), ("2k", "2K"), (None, None)]
)
def test_size_translation(size: str | None, native_size: str | None) -> None:
    call = translate_generation({"prompt": "a red bicycle", "size": size})
    assert call.input.get("size") == native_size
    assert call.response_format == "b64_json"


def test_an_acceleration_given_wins_over_quality() -> None:
    call = translate_generation({"prompt": "x", "quality": "high", "acceleration": "none"})
    assert call.input["acceleration"] == "none"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "x", "stream": True}, "stream"),
        ({"prompt": "x", "n": 2.5}, "n"),
        ({"prompt": "x", "n": {"count": 2}}, "n"),
        ({"prompt": "x", "moderation": "strict"}, "moderation"),
        ({"prompt": "x", "svg": {"model": "m"}}, "svg"),
        ({"prompt": "x", "frame_count": 4}, "frame_count"),
        ({"prompt": "x", "mask": "data"}, "mask"),
        ({"prompt": "x", "model": "wan-2.7-image"}, "model"),
    ],
)
def test_refused_fields_name_their_param(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        translate_generation(body)
    status, error = error_payload(caught.value)
    assert (status, error["error"]["param"], error["error"]["type"]) == (400, param, "invalid_request_error")
