"""Compatibility: the real `openai` client (3.x) against a running reangle server, base URL changed only.

Jobs are counted through the native API (`GET /v1/jobs`, same key) to show that each SDK call made exactly
one job, even where the SDK would retry by default (2 retries on 5xx and timeouts).
"""

from __future__ import annotations

import io
import time
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from tests.conftest import image_bytes, make_image
from tests.dialects.conftest import API_KEY, OTHER_KEY, RunningServer, png, png_base64
from tests.dialects.openai_support import (
    NewJobs,
    assert_a_disconnect_cancels_the_job,
    assert_one_job_answered_twice,
    client,
    decode,
    job_ids,
    native,
    wait_for_status,
)


@pytest.fixture
def new_jobs(server: RunningServer) -> NewJobs:
    return NewJobs(server)


def test_camera_edit_one_image_sniffed_with_extra_body_and_empty_prompt(
    server: RunningServer, new_jobs: NewJobs
) -> None:
    result = client(server).images.edit(
        image=("holiday-snap.txt", png(96, 64), "text/plain"),  # the bytes are a PNG whatever the part says
        prompt="",
        size="256x192",
        extra_body={"horizontal_angle": 90, "vertical_angle": 30},
    )
    assert new_jobs.collect() == [result._request_id]
    assert result.created > 1_600_000_000
    assert result.output_format == "png"
    assert result.size == "256x192"
    assert result.data is not None
    assert len(result.data) == 1
    assert result.data[0].url is None
    assert result.data[0].revised_prompt == "<sks> right side view elevated shot medium shot"
    picture = decode(result.data[0].b64_json)
    assert (picture.format, picture.size) == ("PNG", (256, 192))
    job = native(server, f"/v1/jobs/{result._request_id}")
    assert job["model"] == "qwen-edit-multiangle-2511"
    assert job["status"] == "succeeded"
    assert (job["input"]["horizontal_angle"], job["input"]["vertical_angle"]) == (90, 30)
    assert job["input"]["prompt"] == ""
    asset = native(server, f"/v1/assets/{job['input']['images'][0]}")
    assert (asset["mime_type"], asset["width"], asset["height"]) == ("image/png", 96, 64)


def test_several_images_default_to_the_instruction_model(server: RunningServer, new_jobs: NewJobs) -> None:
    jpeg = image_bytes(make_image(64, 48), "JPEG")
    webp = image_bytes(make_image(80, 80), "WEBP")
    result = client(server).images.edit(
        image=[png(96, 64), jpeg, ("b.png", webp, "image/png")],  # raw bytes go as upload/octet-stream
        prompt="put all three on one table",
        model="gpt-image-1",
        size="320x256",
    )
    assert new_jobs.collect() == [result._request_id]
    job = native(server, f"/v1/jobs/{result._request_id}")
    assert job["model"] == "qwen-image-edit-2511"
    assert len(job["input"]["images"]) == 3
    mimes = [native(server, f"/v1/assets/{asset_id}")["mime_type"] for asset_id in job["input"]["images"]]
    assert mimes == ["image/png", "image/jpeg", "image/webp"]
    assert result.data is not None
    assert result.data[0].revised_prompt is None
    assert decode(result.data[0].b64_json).size == (320, 256)


def test_rewrite_prompt_rewrites_the_instruction_and_comes_back_as_revised_prompt(
    server: RunningServer,
) -> None:
    result = client(server).images.edit(
        image=png(96, 64), prompt="add snow", extra_body={"rewrite_prompt": True, "azimuth": 90}
    )
    assert result.data is not None
    revised = result.data[0].revised_prompt
    assert revised == "<sks> right side view eye-level shot medium shot add snow (precisely, for 96x64)"
    job = native(server, f"/v1/jobs/{result._request_id}")
    assert job["input"]["rewrite_prompt"] is True
    assert job["output"]["assets"][0]["plan"]["rewrite"]["original_prompt"] == "add snow"


def test_url_response_with_two_outputs_downloads_without_auth(server: RunningServer) -> None:
    result = client(server).images.edit(
        image=png(),
        prompt="rotate the camera 90 degrees left",
        n=2,
        size="320x256",
        response_format="url",
    )
    assert result.data is not None
    urls = [item.url for item in result.data]
    assert len(urls) == 2
    assert len(set(urls)) == 2
    for url in urls:
        assert url is not None
        assert url.startswith(f"{server.url}/")
        download = httpx.get(url, timeout=10)  # no Authorization header
        assert download.status_code == 200
        picture = Image.open(io.BytesIO(download.content))
        assert (picture.format, picture.size) == ("PNG", (320, 256))
    assert result.data[0].revised_prompt == "<sks> left side view eye-level shot medium shot"


def test_n_two_b64_and_jpeg_output(server: RunningServer) -> None:
    result = client(server).images.edit(
        image=png(),
        prompt="",
        n=2,
        size="256x256",
        output_format="jpeg",
        output_compression=70,
        extra_body={"azimuth": 180, "seed": 5},
    )
    assert result.output_format == "jpeg"
    assert result.data is not None
    pictures = [decode(item.b64_json) for item in result.data]
    assert [(picture.format, picture.size) for picture in pictures] == [("JPEG", (256, 256))] * 2
    job = native(server, f"/v1/jobs/{result._request_id}")
    assert [output["seed"] for output in job["output"]["assets"]] == [5, 6]
    assert job["input"]["quality"] == 70


def test_failing_job_is_a_server_error_that_the_sdk_does_not_retry(
    server: RunningServer, new_jobs: NewJobs
) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client(server).images.edit(image=png(), prompt="fake:fail make it blue")  # default max_retries=2
    error = caught.value
    assert error.status_code == 500
    assert error.code == "engine_error"
    assert error.type == "server_error"
    assert "failed on purpose" in str(error.message)
    assert error.response.headers["x-should-retry"] == "false"
    assert new_jobs.collect() == [error.response.headers["x-request-id"]]
    assert native(server, f"/v1/jobs/{new_jobs.ids[0]}")["status"] == "failed"


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"size": "13x7"}, "size"),
        ({"size": "huge"}, "size"),
        ({"n": 9}, "n"),
        ({"image": ("photo.png", b"this is not an image", "image/png")}, "image"),
        ({"image": [png(), png(), png(), png()]}, "image"),
        ({"model": "stable-diffusion-xl"}, "model"),
        ({"extra_body": {"horizontal_angel": 90}}, "horizontal_angel"),
        ({"extra_body": {"zoom": "near"}}, "zoom"),
        ({"extra_body": {"rewrite_prompt": "maybe"}}, "rewrite_prompt"),
        ({"output_format": "gif"}, "output_format"),
    ],
)
def test_bad_input_is_a_bad_request_naming_the_param(
    server: RunningServer, new_jobs: NewJobs, options: dict[str, Any], param: str
) -> None:
    request: dict[str, Any] = {"image": png(), "prompt": "make it blue", **options}
    with pytest.raises(openai.BadRequestError) as caught:
        client(server).images.edit(**request)
    assert caught.value.param == param
    assert caught.value.type == "invalid_request_error"
    assert caught.value.response.headers["content-type"] == "application/json"
    assert new_jobs.collect() == []


def test_a_text_to_image_model_on_the_edit_route_says_which_route_takes_it(
    server: RunningServer, new_jobs: NewJobs
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(server).images.edit(image=png(), prompt="make it blue", model="qwen-image-2512")
    assert caught.value.param == "model"
    assert "model 'qwen-image-2512' does not edit images here; choose one of" in caught.value.message
    assert "POST /images/generations takes the text-to-image models" in caught.value.message
    assert new_jobs.collect() == []


def test_a_field_given_twice_with_different_values_is_a_bad_request(
    server: RunningServer, new_jobs: NewJobs
) -> None:
    def edit(prompts: list[str]) -> httpx.Response:
        return httpx.post(
            f"{server.url}/openai/v1/images/edits",
            headers={"Authorization": f"Bearer {API_KEY}"},
            files=[("image", ("in.png", png(), "image/png"))],
            data={"prompt": prompts, "model": "gpt-image-1", "size": "64x64"},
            timeout=30,
        )

    twice = edit(["make it blue", "make it red"])
    assert twice.status_code == 400, twice.text
    assert twice.json()["error"] | {"message": ""} == {
        "message": "",
        "type": "invalid_request_error",
        "param": "prompt",
        "code": "invalid_input",
    }
    assert twice.json()["error"]["message"] == (
        "prompt is given twice, as 'make it blue' and 'make it red'; send it once"
    )
    assert new_jobs.collect() == []
    assert edit(["make it blue", "make it blue"]).status_code == 200  # the same value twice is no question


def test_fal_endpoint_id_names_the_camera_model(server: RunningServer, new_jobs: NewJobs) -> None:
    result = client(server).images.edit(
        image=png(), prompt="", model="fal-ai/qwen-image-edit-2511-multiple-angles", extra_body={"zoom": 9}
    )
    assert new_jobs.collect() == [result._request_id]
    assert native(server, f"/v1/jobs/{result._request_id}")["model"] == "qwen-edit-multiangle-2511"


def test_fal_input_names_map_to_the_edit(server: RunningServer, new_jobs: NewJobs) -> None:
    result = client(server).images.edit(
        image=png(96, 64),
        prompt="",
        model="qwen-image-edit-2511-multiple-angles",
        extra_body={
            "horizontal_angle": 90,
            "num_images": 2,
            "image_size": "landscape_16_9",
            "additional_prompt": "add snow",
            "enable_safety_checker": True,
            "sync_mode": False,
            "negative_prompt": "",
        },
    )
    assert new_jobs.collect() == [result._request_id]
    job = native(server, f"/v1/jobs/{result._request_id}")
    assert (job["input"]["num_outputs"], job["input"]["aspect_ratio"]) == (2, "16:9")
    assert job["input"]["prompt"] == "add snow"
    assert result.data is not None
    assert len(result.data) == 2
    width, height = decode(result.data[0].b64_json).size
    assert abs(width / height - 16 / 9) < 0.05


def test_fal_image_size_object_sets_width_and_height(server: RunningServer) -> None:
    result = client(server).images.edit(
        image=png(), prompt="make it blue", extra_body={"image_size": {"width": 320, "height": 256}}
    )
    assert result.size == "320x256"
    job = native(server, f"/v1/jobs/{result._request_id}")
    assert (job["input"]["width"], job["input"]["height"]) == (320, 256)


@pytest.mark.parametrize(
    ("extra_body", "param", "words"),
    [
        ({"negative_prompt": "blur"}, "negative_prompt", "no negative prompt"),
        ({"image_size": "portrait_2_1"}, "image_size", "landscape_16_9"),
        ({"image_size": "square_hd", "aspect_ratio": "1:1"}, "image_size", "not both"),
        ({"image_size": {"width": 320}}, "image_size", "both width and height"),
        ({"image_size": {"width": -512, "height": 512}}, "image_size", "image_size: width must be between"),
        ({"num_images": 5}, "num_images", "between 1 and 4"),
        ({"num_images": 2, "n": 2}, "num_images", "not both"),
    ],
)
def test_fal_inputs_that_cannot_be_honoured_are_refused(
    server: RunningServer, new_jobs: NewJobs, extra_body: dict[str, Any], param: str, words: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(server).images.edit(image=png(), prompt="make it blue", extra_body=extra_body)
    assert caught.value.param == param
    assert words in str(caught.value.message)
    assert new_jobs.collect() == []


def test_wrong_key_is_an_authentication_error(server: RunningServer, new_jobs: NewJobs) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        client(server, key="not-a-key").images.edit(image=png(), prompt="make it blue")
    assert caught.value.code == "invalid_api_key"
    assert new_jobs.collect() == []


def test_a_key_sees_only_its_own_jobs(server: RunningServer) -> None:
    other = NewJobs(server, OTHER_KEY)
    result = client(server, key=OTHER_KEY).images.edit(image=png(), prompt="", extra_body={"zoom": 9})
    assert other.collect() == [result._request_id]
    assert result._request_id not in job_ids(server, API_KEY)


def test_client_timeout_bounds_the_wait_one_job_canceled(server: RunningServer, new_jobs: NewJobs) -> None:
    """100 fake steps take 2 s; the client's 1.5 s read timeout (sent as x-stainless-read-timeout) makes the
    server answer 504 half a second before it (a client timeout would be openai.APITimeoutError, after
    retries), cancel the job, and tell the SDK not to retry."""
    openai_client = client(server, timeout=1.5)
    with pytest.raises(openai.InternalServerError) as caught:
        openai_client.images.edit(image=png(), prompt="slow", extra_body={"num_inference_steps": 100})
    assert caught.value.status_code == 504
    assert caught.value.code == "timeout"
    assert new_jobs.collect() == [caught.value.response.headers["x-request-id"]]
    assert wait_for_status(server, new_jobs.ids[0]) == "canceled"


def test_timeout_while_queued_is_still_a_timeout(server: RunningServer) -> None:
    """A job still queued when time runs out is canceled at once; the answer is 504, not a failed job."""
    blocker = httpx.post(
        f"{server.url}/v1/jobs",
        headers={"Authorization": f"Bearer {OTHER_KEY}"},
        json={
            "model": "qwen-image-edit-2511",
            "input": {"images": [png_base64()], "prompt": "block the runner", "num_inference_steps": 100},
        },
        timeout=10,
    ).json()
    try:
        with pytest.raises(openai.InternalServerError) as caught:
            client(server, timeout=1.0).images.edit(image=png(), prompt="queued behind", model="gpt-image-1")
        assert caught.value.status_code == 504
        assert caught.value.code == "timeout"
        assert wait_for_status(server, caught.value.response.headers["x-request-id"]) == "canceled"
    finally:
        httpx.post(
            f"{server.url}/v1/jobs/{blocker['id']}/cancel",
            headers={"Authorization": f"Bearer {OTHER_KEY}"},
            timeout=10,
        )


def test_client_disconnect_cancels_the_job(server: RunningServer, new_jobs: NewJobs) -> None:
    files = {"image": ("in.png", png())}
    data = {"prompt": "slow", "num_inference_steps": "100"}
    assert_a_disconnect_cancels_the_job(server, new_jobs, "images/edits", files=files, data=data)


def test_idempotency_key_returns_the_same_job(server: RunningServer, new_jobs: NewJobs) -> None:
    headers = {"Idempotency-Key": f"openai-test-{time.time_ns()}"}
    first = client(server).images.edit(image=png(), prompt="", extra_headers=headers, extra_body={"zoom": 1})
    again = client(server).images.edit(image=png(), prompt="", extra_headers=headers, extra_body={"zoom": 1})
    assert_one_job_answered_twice(first, again, new_jobs)


def test_models_and_unknown_urls(server: RunningServer) -> None:
    sdk = client(server)
    listed = {model.id for model in sdk.models.list()}
    assert listed == {"qwen-edit-multiangle-2511", "qwen-image-edit-2511", "qwen-image-2512"}
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("wan-2.7-image")  # no images route takes it, so it is not listed
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.post("/images/variations", body={}, cast_to=object)
    assert "images/variations" in str(caught.value.message)
    assert "images/generations" in str(caught.value.message)  # says what is served
    assert caught.value.type == "invalid_request_error"
    for path in ("/openai/v1/models", "/openai/v1/models/qwen-image-2512"):  # HEAD mirrors GET
        headers = {"Authorization": f"Bearer {API_KEY}"}
        assert httpx.head(server.url + path, headers=headers, timeout=10).status_code == 200


@pytest.mark.tiny
def test_tiny_engine_camera_edit_through_the_sdk(tiny_server: RunningServer) -> None:
    result = client(tiny_server).images.edit(
        image=("in.jpg", png(64, 48), "image/jpeg"),
        prompt="",
        size="64x48",
        extra_body={"horizontal_angle": 45, "zoom": 9, "seed": 3},
    )
    assert result.data is not None
    assert result.data[0].revised_prompt == "<sks> front-right quarter view eye-level shot close-up"
    picture = decode(result.data[0].b64_json)
    assert (picture.format, picture.size) == ("PNG", (64, 48))
    job = native(tiny_server, f"/v1/jobs/{result._request_id}")
    assert (job["status"], job["model"]) == ("succeeded", "qwen-edit-multiangle-2511")
