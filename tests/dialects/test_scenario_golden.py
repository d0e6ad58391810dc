"""Golden request/response JSON for the Scenario dialect: pure translations, no server.

Requests: a Scenario body (golden/scenario/request_*.json) -> the exact native (model, input).
Responses: a canned core Job or asset record (job_*.json, asset_*.json) -> the exact Scenario JSON. The canned
values are fixed, so ids, timestamps and URLs are compared as they are rather than through placeholders.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request

from reangle.core.jobs import Job, JobError, JobKind, JobStatus, OutputAsset, StatusChange
from reangle.core.ports import AssetRecord
from reangle.core.service import model_spec
from reangle.dialects.scenario import credentials, render_error
from reangle.dialects.scenario_schemas import (
    asset_json,
    job_json,
    scenario_model,
    scenario_models,
    target_format,
    translate_request,
)
from reangle.errors import EngineError, InvalidInput, NotFound, QueueFull, TooLarge, Unauthorized

GOLDEN = Path(__file__).parent / "golden" / "scenario"


def golden(pattern: str) -> list[Any]:
    paths = sorted(GOLDEN.glob(pattern))
    assert paths, f"no golden files {pattern} in {GOLDEN}"
    return [pytest.param(json.loads(path.read_text()), id=path.stem) for path in paths]


def core_job(data: dict[str, Any]) -> Job:
    """A canned core Job; its input goes through the model's validation, as the service stores it."""
    stored = model_spec(data["model"]).validate(JobKind.EDIT, data["input"]).model_dump(mode="json")
    error = data.get("error")
    return Job(
        id=data["id"],
        owner=data["owner"],
        model=data["model"],
        kind=JobKind.EDIT,
        input=stored,
        status=JobStatus(data["status"]),
        progress=data["progress"],
        created_at=data["created_at"],
        started_at=data.get("started_at"),
        finished_at=data.get("finished_at"),
        history=tuple(StatusChange(status=JobStatus(s), at=at) for s, at in data["history"]),
        outputs=tuple(OutputAsset(role="image", **output) for output in data.get("outputs", [])),
        error=JobError(**error) if error else None,
    )


@pytest.mark.parametrize("case", golden("request_*.json"))
def test_request_translates_to_native_input(case: dict[str, Any]) -> None:
    model, native = translate_request(case["modelId"], case["request"])
    assert {"model": model, "input": native} == case["native"]
    # and the core accepts what the dialect produced
    model_spec(model).validate(JobKind.EDIT, native)


@pytest.mark.parametrize("case", golden("job_*.json"))
def test_core_job_renders_as_scenario_job(case: dict[str, Any]) -> None:
    assert job_json(core_job(case["core"])) == case["scenario"]


@pytest.mark.parametrize("case", golden("asset_*.json"))
def test_asset_renders_as_scenario_asset(case: dict[str, Any]) -> None:
    record = AssetRecord(**case["record"])
    job = core_job(case["job"]) if "job" in case else None
    assert asset_json(record, case["url"], job=job) == case["scenario"]


@pytest.mark.parametrize("case", golden("model_*.json"))
def test_model_renders_with_inputs(case: dict[str, Any]) -> None:
    assert scenario_model(case["modelId"]).to_json() == case["scenario"]


def test_every_model_maps_to_a_native_model() -> None:
    assert sorted(model.native for model in scenario_models().values()) == [
        "qwen-edit-multiangle-2511",
        "qwen-image-2512",
        "qwen-image-edit-2511",
        "wan-2.7-image",
    ]


CAMERA = "model_qwen-edit-multiangle-2511"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"images": ["asset_x"], "zoom": 50}, "zoom"),
        ({"images": ["asset_x"], "horizontalAngle": -1}, "horizontalAngle"),
        ({"images": ["asset_x"], "verticalAngle": -45}, "verticalAngle"),
        ({"images": ["asset_x"], "loraScale": 4.5}, "loraScale"),
        ({"images": ["asset_x"], "numOutputs": 2.5}, "numOutputs"),
        ({"images": ["asset_x"], "numInferenceSteps": 51}, "numInferenceSteps"),
        ({"images": ["asset_x"], "guidanceScale": 0.5}, "guidanceScale"),
        ({"images": ["asset_x"], "seed": 2**31}, "seed"),
        ({"images": ["asset_x"], "zoom": True}, "zoom"),
        ({"images": ["asset_x"], "zoom": "5"}, "zoom"),
        ({"images": ["asset_x"], "acceleration": "turbo"}, "acceleration"),
        ({"images": ["asset_x"], "acceleration": 1}, "acceleration"),
        ({"images": ["asset_x"], "horizontal_angle": 90}, "horizontal_angle"),
        ({"images": ["asset_x"], "prompt": 3}, "prompt"),
        ({"images": []}, "images"),
        ({"images": ["a", "b", "c", "d"]}, "images"),
        ({"images": [""]}, "images"),
        ({"images": [{"id": "asset_x"}]}, "images"),
        ({"zoom": 5}, "images"),
    ],
)
def test_bad_input_names_the_scenario_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        translate_request(CAMERA, body)
    assert caught.value.field == field
    assert field in caught.value.message


def test_instruction_model_requires_a_prompt_and_has_no_camera_inputs() -> None:
    with pytest.raises(InvalidInput, match="prompt: field required"):
        translate_request("model_qwen-image-edit-2511", {"images": ["asset_x"]})
    with pytest.raises(InvalidInput, match="zoom: unknown input"):
        translate_request("model_qwen-image-edit-2511", {"images": ["asset_x"], "prompt": "p", "zoom": 5})


TEXT_TO_IMAGE = "model_qwen-image-2512"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (
            {"numOutputs": 5},
            "numOutputs must be between 1 and 4 without imageSetMode (up to 8 with it), got 5",
        ),
        (
            {"numOutputs": 9, "imageSetMode": True},
            "numOutputs must be between 1 and 8 in image set mode, got 9",
        ),
        (
            {"numOutputs": 0, "imageSetMode": True},
            "numOutputs must be between 1 and 8 in image set mode, got 0",
        ),
        (
            {"numOutputs": 9},
            "numOutputs must be between 1 and 4 without imageSetMode (up to 8 with it), got 9",
        ),
        ({"numOutputs": 2.5, "imageSetMode": True}, "numOutputs must be a whole number, got 2.5"),
        ({"images": ["asset_x"]}, "images: unknown input for model_qwen-image-2512"),
        ({"images": "asset_x"}, "images: unknown input for model_qwen-image-2512"),
    ],
)
def test_text_to_image_outputs_and_images_are_refused_naming_the_scenario_field(
    body: dict[str, Any], words: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        translate_request(TEXT_TO_IMAGE, {"prompt": "a lighthouse", **body})
    assert caught.value.field == next(iter(body))
    assert words in caught.value.message


@pytest.mark.parametrize("count", [1, 4, 8])
def test_an_image_set_takes_up_to_the_model_s_set_limit(count: int) -> None:
    _, native = translate_request(TEXT_TO_IMAGE, {"prompt": "p", "imageSetMode": True, "numOutputs": count})
    assert (native["image_set"], native["num_outputs"]) == (True, count)
    model_spec("qwen-image-2512").validate(JobKind.EDIT, native)


@pytest.mark.parametrize("images", [None, []])
def test_a_text_to_image_request_needs_no_image(images: list[str] | None) -> None:
    model, native = translate_request(TEXT_TO_IMAGE, {"prompt": "a lighthouse", "images": images})
    assert "images" not in native
    model_spec(model).validate(JobKind.EDIT, native)


def test_the_text_to_image_model_shows_generation_defaults_and_its_set_limit() -> None:
    inputs = {spec["name"]: spec for spec in scenario_model(TEXT_TO_IMAGE).to_json()["inputs"]}
    assert "images" not in inputs
    assert (inputs["numInferenceSteps"]["default"], inputs["guidanceScale"]["default"]) == (50, 4.0)
    assert (inputs["numOutputs"]["min"], inputs["numOutputs"]["max"]) == (1, 8)
    assert "above 4 only in image set mode" in inputs["numOutputs"]["description"]
    camera = {spec["name"]: spec for spec in scenario_model(CAMERA).to_json()["inputs"]}
    assert camera["numOutputs"]["max"] == 4


def test_unknown_model_is_not_found() -> None:
    with pytest.raises(NotFound, match="model_flux"):
        translate_request("model_flux", {"images": ["asset_x"]})
    with pytest.raises(NotFound):
        scenario_model("qwen-edit-multiangle-2511")  # the native id without Scenario's model_ prefix


@pytest.mark.parametrize(
    ("value", "expected"), [(None, None), ("png", "png"), ("JPG", "jpeg"), ("jpeg", "jpeg"), ("webp", "webp")]
)
def test_target_format(value: str | None, expected: str | None) -> None:
    assert target_format(value) == expected


def test_unsupported_target_format_is_invalid() -> None:
    with pytest.raises(InvalidInput, match="targetFormat"):
        target_format("svg")


# auth and errors -----------------------------------------------------------------------------------------


def basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def test_basic_auth_carries_the_key_as_the_secret_and_any_user_name() -> None:
    assert credentials(basic("any-label", "rk_key")) == ("any-label", "rk_key")
    assert credentials(basic("", "rk:with:colons")) == ("", "rk:with:colons")
    assert credentials("Bearer rk_key") == ("", "rk_key")
    assert credentials("bearer   rk_key ") == ("", "rk_key")
    assert credentials(None) is None
    assert credentials("Bearer ") is None
    assert credentials(basic("label", "")) == ("label", "")


@pytest.mark.parametrize(
    ("header", "says"),
    [
        ("Basic not*base64", "not base64 of label:secret"),
        ("Token rk_key", "unsupported authorization scheme 'Token'"),
        ("rk_key", "neither Basic nor Bearer"),
        ("Basic " + base64.b64encode(b"no-colon").decode(), "hold no ':'"),
    ],
)
def test_malformed_authorization_is_unauthorized(header: str, says: str) -> None:
    with pytest.raises(Unauthorized, match=says):
        credentials(header)


def fake_request(method: str) -> Request:
    """A bare ASGI scope: enough for the error renderer, which reads only the method."""
    return Request({"type": "http", "method": method, "path": "/scenario/v1/x", "headers": []})


def rendered(method: str, exc: Exception, status: int) -> tuple[int, dict[str, Any], dict[str, str]]:
    assert isinstance(exc, InvalidInput | EngineError | QueueFull | Unauthorized)
    response = render_error(fake_request(method), exc, status)
    return response.status_code, json.loads(bytes(response.body)), dict(response.headers)


def test_invalid_input_is_400_in_scenario_error_shape() -> None:
    status, body, headers = rendered("POST", TooLarge("image is too big", field="image"), 413)
    assert status == 400
    assert body == {"error": "image is too big", "code": "too_large"}
    assert "x-should-retry" not in headers


def test_server_errors_on_posts_tell_the_client_not_to_retry() -> None:
    status, body, headers = rendered("POST", EngineError("boom", hint="see the log"), 500)
    assert (status, headers["x-should-retry"]) == (500, "false")
    assert body == {"error": "boom", "code": "engine_error", "hint": "see the log"}
    status, _, headers = rendered("GET", EngineError("boom"), 500)
    assert status == 500
    assert "x-should-retry" not in headers


def test_queue_full_and_unauthorized_headers() -> None:
    status, _, headers = rendered("POST", QueueFull(retry_after_s=7), 429)
    assert (status, headers["retry-after"]) == (429, "7")
    status, body, headers = rendered("GET", Unauthorized("no key"), 401)
    assert status == 401
    assert body["code"] == "unauthorized"
    assert headers["www-authenticate"].startswith("Basic")
