"""Golden request/response JSON of the Segmind dialect. Pure: no server, no engine.

request_*.json: a Segmind body -> the exact native input dict (and whether base64 output was asked for).
request_errors.json: bodies refused with a 400 and a message naming the problem.
job_*.json: canned core Jobs -> the exact v2 submit / status / result bodies and HTTP codes. Placeholders:
<ROOT> the v2 root, <REQUEST_ID> the job id, <OUTPUT:asset_id> what the output reference gives for an asset.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi import Request

from reangle.api.errors import status_for
from reangle.core.jobs import Job, JobError, JobKind, JobStatus, OutputAsset
from reangle.core.models import CAMERA_EDIT, MODELS
from reangle.dialects import segmind
from reangle.errors import InvalidInput, NotFound, QueueFull

GOLDEN = Path(__file__).parent / "golden" / "segmind"
ROOT = "https://reangle.example/segmind/v2"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((GOLDEN / name).read_text())
    return data


REQUEST_FILES = sorted(p.name for p in GOLDEN.glob("request_*.json") if p.name != "request_errors.json")
JOB_FILES = sorted(p.name for p in GOLDEN.glob("job_*.json"))
ERROR_CASES = load("request_errors.json")["cases"]


def test_the_golden_directory_holds_the_expected_cases() -> None:
    assert len(REQUEST_FILES) >= 4
    assert len(JOB_FILES) >= 6
    assert len(ERROR_CASES) >= 15


# requests ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", REQUEST_FILES)
def test_request_translates_to_the_exact_native_input(name: str) -> None:
    golden = load(name)
    translated = segmind.translate(golden["request"])
    assert translated.input == golden["input"]
    assert translated.base64 is golden["base64"]
    assert translated.model == golden.get("model", CAMERA_EDIT)
    assert translated.lora_fields == tuple(golden.get("lora_fields", []))


@pytest.mark.parametrize("name", REQUEST_FILES)
def test_the_translated_input_is_valid_for_the_native_model(name: str) -> None:
    """The dialect's output is accepted as is by the native model's own schema."""
    translated = segmind.translate(load(name)["request"])
    validated = MODELS[translated.model].validate(JobKind.EDIT, translated.input)
    assert validated.model_dump(exclude_unset=True) == translated.input


@pytest.mark.parametrize("case", ERROR_CASES, ids=[str(i) for i in range(len(ERROR_CASES))])
def test_bad_request_is_a_400_with_a_clear_error(case: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as caught:
        segmind.translate(case["request"])
    response = segmind.render_error(cast(Request, None), caught.value, status_for(caught.value))
    assert response.status_code == case["status"]
    body = json.loads(bytes(response.body))
    assert set(body) == {"error"}
    for words in case["mentions"]:
        assert words in body["error"], (words, body["error"])


def test_an_integral_float_is_accepted_as_an_integer() -> None:
    translated = segmind.translate({"prompt": "back view", "image_1": "aGk=", "seed": 5.0, "quality": 70.0})
    assert translated.input["seed"] == 5
    assert translated.input["quality"] == 70


def test_only_segmind_s_slug_and_the_catalog_s_are_served() -> None:
    # None: Segmind's own slug, which runs the camera or the instruction model by the prompt
    assert segmind.slug_model("qwen-image-edit-plus-multiple-angle") is None
    with pytest.raises(NotFound, match="not served here"):
        segmind.slug_model("flux-schnell")


def test_errors_render_with_segmind_field_names_and_codes() -> None:
    render = segmind.render_error
    core = InvalidInput("input.images.1: not an asset id, an http(s) URL", field="input.images.1")
    body = json.loads(bytes(render(cast(Request, None), core, 422).body))
    assert body == {"error": "image_2: not an asset id, an http(s) URL"}
    hinted = InvalidInput("input.images.0: too wide", field="input.images.0", hint="crop input.images.0")
    body = json.loads(bytes(render(cast(Request, None), hinted, 422).body))
    assert body == {"error": "image_1: too wide (crop image_1)"}  # the shape has no place of its own for it
    full = QueueFull("the queue holds 9 jobs", retry_after_s=7)
    response = render(cast(Request, None), full, status_for(full))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert json.loads(bytes(response.body)) == {"error": "the queue holds 9 jobs (retry in 7 s)"}
    missing = NotFound("no request job_x")
    assert render(cast(Request, None), missing, status_for(missing)).status_code == 404


# responses --------------------------------------------------------------------------------------------


def canned_job(data: dict[str, Any]) -> Job:
    return Job(
        id=data["id"],
        owner="env_golden",
        model=CAMERA_EDIT,
        kind=JobKind.EDIT,
        input={"images": ["asset_in"], "prompt": ""},
        status=JobStatus(data["status"]),
        progress=data.get("progress", 0.0),
        created_at=data["created_at"],
        started_at=data.get("started_at"),
        finished_at=data.get("finished_at"),
        outputs=tuple(OutputAsset(**item) for item in data.get("outputs", [])),
        error=JobError(**data["error"]) if data.get("error") else None,
        cancel_requested=data.get("cancel_requested", False),
    )


def fake_output_ref(asset_id: str) -> str:
    """Stands in for the signed-link maker (or the base64 reader) the routes pass."""
    return f"https://files.example/{asset_id}.bin"


def expand(value: Any, job: Job) -> Any:
    if isinstance(value, dict):
        return {key: expand(item, job) for key, item in value.items()}
    if isinstance(value, list):
        return [expand(item, job) for item in value]
    if isinstance(value, str):
        if value.startswith("<OUTPUT:") and value.endswith(">"):
            return fake_output_ref(value[len("<OUTPUT:") : -1])
        return value.replace("<ROOT>", ROOT).replace("<REQUEST_ID>", job.id)
    return value


@pytest.mark.parametrize("name", JOB_FILES)
def test_job_renders_the_exact_status_body(name: str) -> None:
    golden = load(name)
    job = canned_job(golden["job"])
    code, body = segmind.status_json(job)
    assert (code, body) == (golden["status"]["http"], expand(golden["status"]["body"], job))


@pytest.mark.parametrize("name", JOB_FILES)
def test_job_renders_the_exact_result_body(name: str) -> None:
    golden = load(name)
    job = canned_job(golden["job"])
    code, body = segmind.result_json(job, fake_output_ref)
    assert (code, body) == (golden["result"]["http"], expand(golden["result"]["body"], job))


def test_submit_renders_absolute_urls() -> None:
    golden = load("job_queued.json")
    job = canned_job(golden["job"])
    assert segmind.submit_json(job, ROOT, base64=False) == expand(golden["submit"], job)
    assert segmind.submit_json(job, ROOT, base64=True) == expand(golden["submit_base64"], job)


def test_submit_urls_carry_the_segmind_field_of_each_lora() -> None:
    job = canned_job(load("job_queued.json")["job"])
    root = f"{ROOT}/requests/{job.id}"
    plain = segmind.submit_json(job, ROOT, base64=False, lora_fields=("lora_3_url",))
    assert (plain["status_url"], plain["response_url"]) == (
        f"{root}/status?loras=lora_3_url",
        f"{root}?loras=lora_3_url",
    )
    both = segmind.submit_json(job, ROOT, base64=True, lora_fields=("lora_2_url", "lora_3_url"))
    assert (both["status_url"], both["response_url"]) == (
        f"{root}/status?loras=lora_2_url,lora_3_url",
        f"{root}?base64=true&loras=lora_2_url,lora_3_url",
    )


@pytest.mark.parametrize(
    ("query", "fields"),
    [
        (None, ("lora_2_url", "lora_3_url")),
        ("", ("lora_2_url", "lora_3_url")),
        ("lora_3_url", ("lora_3_url",)),
        ("lora_3_url,lora_2_url", ("lora_3_url", "lora_2_url")),
        ("lora_3_url,lora_3_url", ("lora_2_url", "lora_3_url")),
        ("lora_1_url", ("lora_2_url", "lora_3_url")),
        ("image_1", ("lora_2_url", "lora_3_url")),
    ],
)
def test_the_loras_query_is_read_back_or_falls_back_to_the_positional_fields(
    query: str | None, fields: tuple[str, ...]
) -> None:
    assert segmind.lora_fields_from_query(query) == fields


LORA_ERROR_CASES = [
    # (native message, Segmind fields of the request's LoRAs, message the caller sees)
    (
        "loras.0.url: must not contain a NUL character",
        ("lora_2_url",),
        "lora_2_url: must not contain a NUL character",
    ),
    (
        "loras.0.url: must not contain a NUL character",
        ("lora_3_url",),
        "lora_3_url: must not contain a NUL character",
    ),
    (
        "input.loras.1.url: must not contain a NUL character",
        ("lora_2_url", "lora_3_url"),
        "lora_3_url: must not contain a NUL character",
    ),
    (
        "input.loras.0: give exactly one of url, path or id",
        ("lora_3_url",),
        "lora_3_url: give exactly one of url, path or id",
    ),
    (
        "input.loras.0.scale: must be between -4 and 4",
        ("lora_3_url",),
        "lora_3_url: must be between -4 and 4",
    ),
    # a catalog model's own LoRA, and a URL that happens to hold the words, are not the request's fields
    ("catalog.style.loras.0.url: not found", ("lora_3_url",), "catalog.style.loras.0.url: not found"),
    (
        "the LoRA url 'https://h/loras.0.url' is not a LoRA",
        ("lora_3_url",),
        "the LoRA url 'https://h/loras.0.url' is not a LoRA",
    ),
]


@pytest.mark.parametrize(("native", "fields", "shown"), LORA_ERROR_CASES)
def test_lora_errors_at_submit_name_the_segmind_field_sent(
    native: str, fields: tuple[str, ...], shown: str
) -> None:
    field = native.partition(":")[0] if native.startswith(("loras", "input")) else None
    translated = segmind.in_segmind_terms(InvalidInput(native, field=field), fields)
    body = json.loads(bytes(segmind.render_error(cast(Request, None), translated, 422).body))
    assert body == {"error": shown}
    assert isinstance(translated, InvalidInput)
    if field is not None:
        assert translated.field == shown.partition(":")[0]


def test_errors_without_core_field_names_pass_through_unchanged() -> None:
    full = QueueFull("the queue holds 9 jobs", retry_after_s=7)
    assert segmind.in_segmind_terms(full, ("lora_3_url",)) is full
    plain = InvalidInput("lora_3_url must be an http(s) URL of a .safetensors LoRA", field="lora_3_url")
    assert segmind.in_segmind_terms(plain, ("lora_3_url",)) is plain


@pytest.mark.parametrize(("native", "fields", "shown"), LORA_ERROR_CASES)
def test_lora_errors_of_a_failed_job_name_the_segmind_field_on_both_urls(
    native: str, fields: tuple[str, ...], shown: str
) -> None:
    failed = load("job_failed.json")["job"]
    job = canned_job({**failed, "error": {"code": "invalid_input", "message": native}})
    assert segmind.status_json(job, fields) == (
        422,
        {"request_id": job.id, "status": "FAILED", "metrics": {"inference_time": 2.5}, "error": shown},
    )
    code, body = segmind.result_json(job, fake_output_ref, fields)
    assert (code, body["error"]) == (422, shown)


def test_a_failed_job_polled_without_the_loras_query_maps_loras_by_position() -> None:
    """Status URLs handed out before the query existed: loras.0 is lora_2_url, loras.1 lora_3_url."""
    failed = load("job_failed.json")["job"]
    message = "input.loras.1.url: the LoRA url 'https://example.com/x.safetensors' is not a safetensors file"
    job = canned_job({**failed, "error": {"code": "invalid_input", "message": message}})
    _, body = segmind.status_json(job, segmind.lora_fields_from_query(None))
    assert body["error"] == (
        "lora_3_url: the LoRA url 'https://example.com/x.safetensors' is not a safetensors file"
    )


def test_a_result_whose_file_has_expired_is_a_404() -> None:
    job = canned_job(load("job_succeeded.json")["job"])
    with pytest.raises(NotFound, match="expired"):
        segmind.result_json(job, lambda asset_id: None)
