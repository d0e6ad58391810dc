"""What a refusal says and does not say: never the key, never megabytes of the request back, the same words
for the same fault on every route; and a client that goes away mid-upload is the client's doing, not a
server failure."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from reangle.core.models import CAMERA_EDIT
from tests.api.conftest import ServerProcess, assert_error, poll, upload

HUGE = 1_000_000
#: a refusal is a sentence, not an echo of the request
SHORT_BODY = 3000

#: (path, its auth header, the content type it reads)
UPLOAD_ROUTES = [
    ("/v1/assets", "Authorization: Bearer", "application/json"),
    ("/scenario/v1/assets", "Authorization: Bearer", "application/json"),
    ("/segmind/v1/qwen-image-edit-plus-multiple-angle", "x-api-key:", "application/json"),
    ("/runpod/v2/ep/run", "Authorization: Bearer", "application/json"),
    ("/openai/v1/images/edits", "Authorization: Bearer", "multipart/form-data; boundary=b"),
]


def send_part_and_leave(server: ServerProcess, path: str, auth: str, content_type: str) -> None:
    """A POST that promises a body, sends part of it, and closes the connection (an upload aborted)."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: 100000\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(head.encode() + b'--b\r\nContent-Disposition: form-data; name="image"\r\n\r\n')
        time.sleep(0.3)  # the server is reading the body by now


@pytest.mark.parametrize(("path", "auth", "content_type"), UPLOAD_ROUTES)
def test_a_client_that_leaves_mid_upload_is_one_info_line_not_a_server_failure(
    api: httpx.Client, shared_server: ServerProcess, path: str, auth: str, content_type: str
) -> None:
    since = shared_server.log_size()
    key = str(api.headers["Authorization"]).removeprefix("Bearer ")
    send_part_and_leave(shared_server, path, f"{auth} {key}", content_type)

    line = f"POST {path}: the client went away before its request was read"
    poll(lambda: line in shared_server.full_log(since) or None, what="the server noticing", timeout=10)
    # and no ERROR, no traceback, no 500 (the `api` fixture checks those too)
    assert "ERROR" not in shared_server.full_log(since)
    assert api.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    "authorization",
    ["Bearer {key} {key}", "Bearer {key} x", "{key} x"],
    ids=["twice", "trailing-word", "bare-then-word"],
)
def test_a_malformed_authorization_header_is_refused_without_repeating_the_key(
    api: httpx.Client, authorization: str
) -> None:
    key = str(api.headers["Authorization"]).removeprefix("Bearer ")
    headers = {"Authorization": authorization.format(key=key)}
    for path in ("/v1/jobs", "/runpod/v2/ep/health", "/scenario/v1/jobs"):
        response = httpx.get(f"{api.base_url}{path}", headers=headers)
        assert response.status_code == 401, response.text
        assert key not in response.text
        assert key[:12] not in response.text
    native = httpx.get(f"{api.base_url}/v1/jobs", headers=headers)
    assert_error(native, 401, "unauthorized", "more than the key")


def test_another_authorization_scheme_is_still_named(api: httpx.Client) -> None:
    response = httpx.get(f"{api.base_url}/v1/jobs", headers={"Authorization": "Digest username=x"})
    assert_error(response, 401, "unauthorized", "the Digest authorization scheme is not taken here")


def test_refusals_repeat_at_most_a_little_of_a_huge_value(api: httpx.Client) -> None:
    image = upload(api)["id"]
    huge = "x" * HUGE
    requests = [
        ("/v1/jobs", {"model": huge, "input": {}}),
        ("/v1/jobs", {"model": CAMERA_EDIT, "input": {"images": ["asset_" + huge]}}),
        ("/v1/jobs", {"model": CAMERA_EDIT, "input": {"images": [image], huge: 1}}),
        ("/v1/batches", {"model": huge, "inputs": [{}]}),
        ("/segmind/v1/qwen-image-edit-plus-multiple-angle", {"image_1": image, huge: 1}),
        ("/runpod/v2/ep/run", {"input": {"image": image, huge: 1}}),
    ]
    key = str(api.headers["Authorization"]).removeprefix("Bearer ")
    for path, body in requests:
        response = api.post(path, json=body, headers={"x-api-key": key})  # Segmind's header; others ignore it
        assert 400 <= response.status_code < 500, response.text[:300]
        assert len(response.content) < SHORT_BODY, (path, response.text[:300])
        if "xxxxxxxx" in response.text:  # what was refused may be repeated, marked as cut
            assert "…" in str(response.json()), response.text


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/batches", "/v1/assets"])
def test_a_body_that_is_not_utf8_is_refused_as_json_that_is_not_valid(api: httpx.Client, path: str) -> None:
    response = api.post(path, content=b'{"a": "\xff"}', headers={"Content-Type": "application/json"})
    assert_error(response, 422, "invalid_input", "body: the request body is not valid JSON")


def test_a_method_a_native_path_does_not_take_is_refused_with_the_methods_it_does(api: httpx.Client) -> None:
    response = api.delete("/v1/jobs")
    assert_error(response, 405, "method_not_allowed", "DELETE", "/v1/jobs", "GET", "POST")
    assert set(response.headers["Allow"].replace(" ", "").split(",")) == {"GET", "POST"}


def test_a_path_that_is_not_served_is_named_with_where_the_routes_are(api: httpx.Client) -> None:
    response = api.get("/v1/nothing-here")
    assert_error(response, 404, "not_found", "GET /v1/nothing-here", "/docs")


def test_an_idempotency_key_too_long_is_refused_in_the_dialect_shape(api: httpx.Client) -> None:
    response = api.post(
        "/openai/v1/images/generations",
        json={"prompt": "a red cube"},
        headers={"Idempotency-Key": "k" * 10_000},
    )
    assert response.status_code == 400, response.text[:300]
    error = response.json()["error"]
    assert "Idempotency-Key: at most 200 characters" in error["message"]
    assert len(response.content) < SHORT_BODY
