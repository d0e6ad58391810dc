"""Edges of the native API a client can hit at once: LoRA URLs refused at submit as image and webhook URLs
are, JSON nested too deeply, and the forms of POST /v1/assets that are not an upload."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from reangle.core.models import CAMERA_EDIT
from tests.api.conftest import assert_error, edit_input, png, upload


def post_job(client: httpx.Client, input: Any) -> httpx.Response:
    return client.post("/v1/jobs", json={"model": CAMERA_EDIT, "input": input})


# LoRA URLs at submit ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://example.com/style.safetensors", ("ftp:", "only http and https")),
        ("http://127.0.0.1:9/style.safetensors", ("refusing to fetch", "loopback")),
        ("http://localhost/style.safetensors", ("refusing to fetch", "loopback")),
        ("http://[::1]/style.safetensors", ("loopback",)),
        ("http://169.254.169.254/latest/meta-data", ("link-local",)),
        ("http://127.1/style.safetensors", ("loopback",)),
        ("http://2130706433/style.safetensors", ("loopback",)),
        ("style.safetensors", ("no scheme",)),
    ],
    ids=[
        "ftp",
        "loopback-ip",
        "localhost",
        "loopback-ipv6",
        "metadata",
        "short-ip",
        "integer-ip",
        "no-scheme",
    ],
)
def test_a_lora_url_the_download_would_refuse_is_refused_at_submit(
    api: httpx.Client, url: str, words: tuple[str, ...]
) -> None:
    asset = upload(api)["id"]
    loras = [{"url": "https://example.com/fine.safetensors"}, {"url": url, "scale": 0.5}]
    response = post_job(api, edit_input(asset, loras=loras))
    error = assert_error(response, 422, "invalid_input", *words)
    assert error["message"].startswith("input.loras.1.url")
    assert api.get("/v1/jobs").json()["data"] == []  # nothing was queued


def test_a_public_lora_url_is_not_looked_up_at_submit(api: httpx.Client) -> None:
    """Host names are left to the download (which resolves and checks every address): `.invalid` never
    resolves (RFC 6761), yet the job is queued."""
    asset = upload(api)["id"]
    response = post_job(api, edit_input(asset, loras=[{"url": "https://loras.invalid/a.safetensors"}]))
    assert response.status_code == 202, response.text
    # not left to run: unless the runner already took it (and failed it on the download), it is canceled
    api.post(f"/v1/jobs/{response.json()['id']}/cancel")


# bodies the parser gives up on ------------------------------------------------------------------------------


def deep_json(depth: int) -> bytes:
    return ('{"model": "x", "input": {"a": ' + "[" * depth + "]" * depth + "}}").encode()


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/batches", "/v1/assets"])
def test_json_nested_thousands_deep_is_invalid_input(api: httpx.Client, path: str) -> None:
    response = api.post(path, content=deep_json(5000), headers={"Content-Type": "application/json"})
    error = assert_error(response, 422, "invalid_input", "body", "too deeply")
    assert "hint" in error


def test_json_nested_a_little_is_read_as_ever(api: httpx.Client) -> None:
    response = api.post("/v1/jobs", content=deep_json(50), headers={"Content-Type": "application/json"})
    assert_error(response, 422, "invalid_input", "unknown model")


# POST /v1/assets -------------------------------------------------------------------------------------------


def multipart(data: bytes, boundary: str = "b0undary") -> bytes:
    return (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="in.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )


def test_a_truncated_multipart_upload_says_the_body_could_not_be_read(api: httpx.Client) -> None:
    body = multipart(png())
    headers = {"Content-Type": "multipart/form-data; boundary=b0undary"}
    whole = api.post("/v1/assets", content=body, headers=headers)
    assert whole.status_code == 201, whole.text
    for cut in (len(body) - 4, len(body) // 2, 40):
        error = assert_error(
            api.post("/v1/assets", content=body[:cut], headers=headers), 422, "invalid_input", "multipart"
        )
        assert "could not be read" in error["message"]
        assert "field `file`" not in error["message"]


@pytest.mark.parametrize("url", ["ftp://example.com/a.png", "file:///etc/passwd", "FTP://example.com/a.png"])
def test_an_asset_url_of_another_scheme_says_only_http_urls_are_fetched(api: httpx.Client, url: str) -> None:
    error = assert_error(api.post("/v1/assets", json={"url": url}), 422, "invalid_input", "url", "http")
    assert "not an asset id" not in error["message"]


def test_an_asset_body_with_both_url_and_data_is_refused(api: httpx.Client) -> None:
    data = json.dumps({"url": "https://example.com/a.png", "data": "iVBORw0KGgo="})
    response = api.post("/v1/assets", content=data, headers={"Content-Type": "application/json"})
    assert_error(response, 422, "invalid_input", "url", "data", "not both")


def test_an_asset_body_reads_as_it_always_did(api: httpx.Client) -> None:
    inline = base64.b64encode(png()).decode()
    # a null is absent, as before; a data URL may come as the url
    assert api.post("/v1/assets", json={"url": None, "data": inline}).status_code == 201
    as_url = api.post("/v1/assets", json={"url": f"data:image/png;base64,{inline}"})
    assert as_url.status_code == 201, as_url.text
    assert_error(api.post("/v1/assets", json={"url": 7}), 422, "invalid_input", "url")
    assert_error(api.post("/v1/assets", json={}), 422, "invalid_input", "data", "url")
