"""Golden tests of the OpenAI Images dialect, pure (no server).

Requests: a canonical multipart body, built from tests/dialects/golden/openai/request_*.json and parsed by the
dialect's own form reader, translates to exactly the native model and input expected; each file part named
`image`/`image[]` stands as `<image-N>` where the server puts that part's bytes as base64 (the core ingests
them at submit).
Responses: a canned core Job renders to exactly the expected JSON; `<b64:ID>` stands for the base64 of the
bytes the fake asset reader returns for asset ID.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from reangle.core.jobs import Job, JobError, JobKind, JobStatus, OutputAsset
from reangle.dialects import openai_images
from reangle.errors import InvalidInput, QueueFull, ReangleError, Unauthorized
from tests.dialects.openai_support import posted

GOLDEN = Path(__file__).parent / "golden" / "openai"
URL_BASE = "https://reangle.test/v1/files"


def load(name: str) -> Any:
    return json.loads((GOLDEN / name).read_text())


def file_content(index: int) -> bytes:
    return f"file-{index}".encode()


def encode_multipart(spec: dict[str, Any]) -> tuple[bytes, str]:
    """The body and content type httpx (as the openai SDK does) sends for these fields and file parts."""
    files = [
        (part["name"], (part["filename"], file_content(index), part["content_type"]))
        for index, part in enumerate(spec["files"])
    ]
    request = httpx.Request(
        "POST", "http://reangle.test/openai/v1/images/edits", data=spec["fields"], files=files or None
    )
    if not files:  # httpx sends no multipart body without files; the SDK always has one
        request = httpx.Request(
            "POST",
            "http://reangle.test/openai/v1/images/edits",
            files=[(name, (None, value)) for name, value in spec["fields"].items()],
        )
    return request.read(), request.headers["content-type"]


def parse_multipart(spec: dict[str, Any]) -> tuple[dict[str, str], list[bytes | str]]:
    body, content_type = encode_multipart(spec)
    return asyncio.run(openai_images.read_form(posted("/openai/v1/images/edits", body, content_type)))


def translate_spec(spec: dict[str, Any]) -> openai_images.EditCall:
    fields, images = parse_multipart(spec)
    for index, content in enumerate(images):
        assert content == file_content(index), "the form reader must keep each image part's bytes, in order"
    return openai_images.translate(fields, [f"<image-{index}>" for index in range(len(images))])


REQUESTS = sorted(path.name for path in GOLDEN.glob("request_*.json"))


def test_golden_files_exist() -> None:
    assert len(REQUESTS) >= 5
    assert (GOLDEN / "errors.json").is_file()
    assert len(sorted(GOLDEN.glob("response_*.json"))) >= 2


@pytest.mark.parametrize("name", REQUESTS)
def test_request_translates_to_native_input(name: str) -> None:
    case = load(name)
    call = translate_spec(case["multipart"])
    assert {"model": call.model, "response_format": call.response_format, "input": call.input} == case[
        "expect"
    ]


ERROR_CASES = load("errors.json")["cases"]


@pytest.mark.parametrize("case", ERROR_CASES, ids=[case["id"] for case in ERROR_CASES])
def test_bad_request_renders_openai_error(case: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as caught:
        translate_spec(case["multipart"])
    status, body = openai_images.error_payload(caught.value)
    assert {"status": status, "body": body} == case["expect"]


def error(message: str, kind: str, param: str | None, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


@pytest.mark.parametrize(
    ("exc", "status", "body"),
    [
        (
            Unauthorized("this API key is not valid"),
            401,
            error("this API key is not valid", "invalid_request_error", None, "invalid_api_key"),
        ),
        (
            QueueFull("the queue is full", retry_after_s=3),
            429,
            error("the queue is full (retry in 3 s)", "rate_limit_error", None, "queue_full"),
        ),
        (
            InvalidInput("input.width: must be between 16 and 2048", field="input.width"),
            400,
            error(
                "size: width: must be between 16 and 2048", "invalid_request_error", "size", "invalid_input"
            ),
        ),
        (
            InvalidInput("input.num_outputs: must be at most 4", field="input.num_outputs"),
            400,
            error("n: num_outputs: must be at most 4", "invalid_request_error", "n", "invalid_input"),
        ),
        (
            InvalidInput("input.images.1: no asset asset_x", field="input.images.1"),
            400,
            error("image: images.1: no asset asset_x", "invalid_request_error", "image", "invalid_input"),
        ),
    ],
)
def test_core_errors_render_openai_error(exc: ReangleError, status: int, body: dict[str, Any]) -> None:
    assert openai_images.error_payload(exc) == (status, body)


# responses -------------------------------------------------------------------------------------------


def canned_job(data: dict[str, Any]) -> Job:
    error = data.get("error")
    return Job(
        id=data["id"],
        owner="env_owner",
        model=data["model"],
        kind=JobKind.EDIT,
        input=data["input"],
        status=JobStatus(data["status"]),
        created_at=data["created_at"],
        finished_at=data.get("finished_at"),
        outputs=tuple(OutputAsset(**output) for output in data.get("outputs", [])),
        error=JobError(**error) if error else None,
    )


def fake_asset_bytes(asset_id: str) -> bytes:
    """A fake asset reader: the bytes of asset ID are `bytes-of-ID`."""
    return f"bytes-of-{asset_id}".encode()


def fake_url(asset_id: str) -> str:
    return f"{URL_BASE}/{asset_id}?expires=1767229200&sig=fake"


def fill_placeholders(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: fill_placeholders(item) for key, item in value.items()}
    if isinstance(value, list):
        return [fill_placeholders(item) for item in value]
    if isinstance(value, str) and value.startswith("<b64:") and value.endswith(">"):
        return base64.b64encode(fake_asset_bytes(value[5:-1])).decode()
    return value


RESPONSES = sorted(path.name for path in GOLDEN.glob("response_*.json"))


@pytest.mark.parametrize("name", RESPONSES)
def test_job_renders_to_images_response(name: str) -> None:
    case = load(name)
    body = openai_images.render_edit(
        canned_job(case["job"]), case["response_format"], read=fake_asset_bytes, url_for=fake_url
    )
    assert body == fill_placeholders(case["expect"])


JOB_ERRORS = load("job_errors.json")["cases"]


@pytest.mark.parametrize("case", JOB_ERRORS, ids=[case["id"] for case in JOB_ERRORS])
def test_unsuccessful_job_renders_openai_error(case: dict[str, Any]) -> None:
    status, body = openai_images.job_error_payload(canned_job(case["job"]))
    assert {"status": status, "body": body} == case["expect"]


def test_wait_budget_stays_under_the_client_read_timeout() -> None:
    assert openai_images.wait_budget({}) == openai_images.MAX_WAIT_S
    assert openai_images.wait_budget({"x-stainless-read-timeout": "600"}) == 570.0
    assert openai_images.wait_budget({"x-stainless-read-timeout": "30"}) == 27.0
    assert openai_images.wait_budget({"x-stainless-read-timeout": "2"}) == 1.5
    assert openai_images.wait_budget({"x-stainless-read-timeout": "nonsense"}) == openai_images.MAX_WAIT_S
