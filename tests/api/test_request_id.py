"""X-Request-Id on every answer, and a 500 that names it in its hint and in the server's log line."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from reangle.api.app import create_app
from reangle.core.service import JobService
from reangle.dialects import openai_images, runpod
from reangle.settings import Settings

GENERATED = re.compile(r"req_[0-9a-f]{24}")


@pytest.fixture
def http(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(engine="fake", data_dir=tmp_path, auth="off", cache_dir=tmp_path)
    # an unexpected error is answered and logged once, not raised again to the server (here the test client,
    # which would raise it), whose log would show its traceback a second time
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        yield client


def test_every_answer_names_its_request(http: TestClient) -> None:
    first, second = http.get("/healthz"), http.get("/v1/jobs/job_missing")
    assert second.status_code == 404
    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert all(GENERATED.fullmatch(named) for named in ids), ids
    assert ids[0] != ids[1]


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("9f2c1e0a-proxy-id", True),  # as nginx's $request_id or Envoy's UUID: the proxy's log ties to ours
        ("spaces and\ttabs", False),
        ("x" * 201, False),
        ("", False),
    ],
)
def test_a_callers_plain_request_id_is_kept_and_any_other_replaced(
    http: TestClient, sent: str, kept: bool
) -> None:
    named = http.get("/healthz", headers={"X-Request-Id": sent}).headers["x-request-id"]
    assert named == sent if kept else GENERATED.fullmatch(named), named


def broken(*_args: Any, **_kwargs: Any) -> Any:
    raise RuntimeError("a bug, not the request's fault")


def assert_named_failure(answer: Any, message: str, caplog: pytest.LogCaptureFixture, route: str) -> None:
    """A 500 whose message hints at its request id, which the log line with the traceback names too, with
    the route (`GET /v1/jobs/job_any`)."""
    assert answer.status_code == 500, answer.text
    named = re.search(r"report it with request id (req_[0-9a-f]{24}), which the server's log names", message)
    assert named, message
    assert answer.headers["x-request-id"] == named[1]
    (logged,) = [record for record in caplog.records if record.exc_info]
    assert logged.getMessage() == f"unexpected error in {route} (request id {named[1]})"
    assert "a bug, not the request's fault" in caplog.text  # the traceback


def test_a_native_500_names_its_request(
    http: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(JobService, "get_with_outputs", broken)
    answer = http.get("/v1/jobs/job_any")
    error = answer.json()["error"]
    assert error["code"] == "internal_error"
    assert answer.headers["connection"] == "close"
    assert_named_failure(answer, error["hint"], caplog, "GET /v1/jobs/job_any")


def test_a_dialect_500_names_its_request(
    http: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(runpod, "_lookup", broken)
    answer = http.get("/runpod/v2/any-endpoint/status/any-job")
    assert_named_failure(answer, answer.json()["error"], caplog, "GET /runpod/v2/any-endpoint/status/any-job")


def test_an_openai_500_names_its_request(
    http: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(openai_images, "translate_generation", broken)
    answer = http.post("/openai/v1/images/generations", json={"prompt": "a red chair"})
    assert_named_failure(
        answer, answer.json()["error"]["message"], caplog, "POST /openai/v1/images/generations"
    )


def test_an_openai_image_answer_names_its_job_unless_the_caller_named_the_request(http: TestClient) -> None:
    body = {"model": "qwen-image-2512", "prompt": "a lighthouse", "size": "256x256", "response_format": "url"}
    unnamed = http.post("/openai/v1/images/generations", json=body)
    assert unnamed.status_code == 200, unnamed.text
    job_id = unnamed.headers["x-request-id"]
    assert http.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"
    named = http.post("/openai/v1/images/generations", json=body, headers={"X-Request-Id": "proxy-7"})
    assert named.status_code == 200, named.text
    assert named.headers.get_list("x-request-id") == ["proxy-7"]
