"""Every class of bad input gets its status, the error shape and a message naming the field; never a 500."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from reangle.core.models import CAMERA_EDIT, INSTRUCTION_EDIT
from tests.api.conftest import (
    KEY_A,
    ServerFactory,
    ServerProcess,
    assert_error,
    cancel,
    data_url,
    download,
    edit_input,
    get_job,
    hold_input,
    png,
    running,
    submit,
    succeeded,
    upload,
    wait_job,
)


def gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "blue").save(buffer, format="GIF")
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose header claims another size: a decompression bomb, in a few bytes."""
    data = bytearray(png(1, 1))
    header = bytearray(data[16:29])  # IHDR data, after the 8-byte signature and the chunk's length and type
    header[0:8] = struct.pack(">II", width, height)
    data[16:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(header)))
    return bytes(data)


def noise_png(side: int) -> bytes:
    """A PNG that does not compress: about 3 bytes per pixel."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buffer, format="PNG")
    return buffer.getvalue()


def post_file(client: httpx.Client, data: bytes, name: str = "in.png") -> httpx.Response:
    return client.post("/v1/assets", files={"file": (name, data, "application/octet-stream")})


def post_job(client: httpx.Client, input: Any, **body: Any) -> httpx.Response:
    return client.post("/v1/jobs", json={"model": CAMERA_EDIT, "input": input} | body)


# images -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "status", "code", "words"),
    [
        (b"hello, I am not an image", 422, "invalid_image", ("file", "not an image")),
        (gif(), 415, "unsupported_image", ("file", "GIF", "PNG, JPEG and WebP")),
        (png(64, 64)[:200], 422, "invalid_image", ("file", "truncated")),
        (png_claiming(20_000, 20_000), 413, "too_large", ("file", "pixels")),
        (png_claiming(7_000, 7_000), 413, "too_large", ("file", "7000x7000", "pixels")),
        (b"", 422, "invalid_image", ("file",)),
    ],
    ids=["not-an-image", "gif", "truncated", "bomb", "over-pixel-limit", "empty"],
)
def test_bad_images_on_upload(
    api: httpx.Client, data: bytes, status: int, code: str, words: tuple[str, ...]
) -> None:
    assert_error(post_file(api, data), status, code, *words)


def test_bad_images_inline_in_a_job_name_their_place(api: httpx.Client) -> None:
    good = upload(api)["id"]
    assert_error(
        post_job(api, edit_input(good, images=[good, data_url(gif(), "image/gif")])),
        415,
        "unsupported_image",
        "input.images.1",
    )
    truncated = base64.b64encode(png(64, 64)[:200]).decode()
    assert_error(post_job(api, edit_input(truncated)), 422, "invalid_image", "input.images.0")
    orbit = {"image": data_url(b"not an image")}
    assert_error(post_job(api, orbit, kind="orbit"), 422, "invalid_image", "input.image")


def test_upload_limits_in_bytes_and_pixels(serve: ServerFactory) -> None:
    server = serve(max_upload_bytes=20_000, max_upload_pixels=100 * 100)
    with server.client(KEY_A) as api:
        assert_error(post_file(api, noise_png(90)), 413, "too_large", "file", "bytes", "20,000")
        huge = api.post("/v1/assets", files={"file": ("in.png", b"x" * 200_000, "image/png")})
        assert_error(huge, 413, "too_large", "bytes", "20,000")
        inline = api.post("/v1/assets", json={"data": base64.b64encode(noise_png(90)).decode()})
        assert_error(inline, 413, "too_large", "data", "bytes")
        assert_error(post_file(api, png(120, 100)), 413, "too_large", "file", "120x100", "10,000")
        in_job = post_job(api, edit_input(data_url(png(120, 100))))
        assert_error(in_job, 413, "too_large", "input.images.0", "pixels")
        assert upload(api, png(100, 100))["width"] == 100  # right at the limit


# requests -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"zoom": 11}, ("zoom", "0 and 10", "11")),
        ({"num_outputs": 9}, ("num_outputs", "1 and 4")),
        ({"width": 8}, ("width", "16")),
        ({"height": 4000}, ("height", "2048")),
        ({"num_inference_steps": 0}, ("num_inference_steps",)),
        ({"lora_scale": -1}, ("lora_scale",)),
        ({"horizontal_angle": 10, "azimuth": 90}, ("horizontal_angle", "azimuth", "not both")),
        ({"vertical_angle": 120}, ("vertical_angle",)),
        ({"acceleration": "turbo"}, ("input.acceleration",)),
        ({"aspect_ratio": "7:5", "width": None, "height": None}, ("aspect_ratio", "7:5")),
        ({"output_format": "gif"}, ("input.output_format",)),
        ({"quality": 0}, ("input.quality",)),
        ({"sharpness": 3}, ("input.sharpness", "unknown field")),
        ({"images": []}, ("input.images",)),
        ({"prompt": "x" * 2001}, ("input.prompt",)),
    ],
)
def test_out_of_range_and_unknown_fields(
    api: httpx.Client, change: dict[str, Any], words: tuple[str, ...]
) -> None:
    input = {k: v for k, v in (edit_input(upload(api)["id"]) | change).items() if v is not None}
    assert_error(post_job(api, input), 422, "invalid_input", *words)


def test_an_unknown_field_beside_the_input_is_named_as_one_inside_it(api: httpx.Client) -> None:
    body = {"model": "qwen-edit-multiangle-2511", "input": edit_input(upload(api)["id"]), "priorty": 3}
    error = assert_error(api.post("/v1/jobs", json=body), 422, "invalid_input")
    assert error["message"] == "priorty: unknown field"


def test_bad_image_references(shared_server: ServerProcess, api: httpx.Client) -> None:
    asset = upload(api)["id"]
    cases = [
        ([asset] * 4, ("input.images", "at most 3")),
        (["!!! not base64 !!!"], ("input.images.0", "base64")),
        (["data:image/png,iVBORw0KGgo="], ("input.images.0", "base64")),
        (["asset_000000000000000000000000"], ("input.images.0", "asset_000000000000000000000000")),
        ([f"{shared_server.url}/healthz"], ("input.images.0", "loopback")),
        (["http://[::1]:9/x.png"], ("input.images.0", "loopback")),
        (["http://10.0.0.1/x.png"], ("input.images.0", "private")),
        (["http://169.254.169.254/latest/meta-data/"], ("input.images.0", "link-local")),
    ]
    for images, words in cases:
        assert_error(post_job(api, edit_input(asset, images=images)), 422, "invalid_input", *words)
    by_url = api.post("/v1/assets", json={"url": f"{shared_server.url}/healthz"})
    assert_error(by_url, 422, "invalid_input", "url", "loopback")


def test_bad_job_envelopes(api: httpx.Client) -> None:
    input = edit_input(upload(api)["id"])
    assert_error(post_job(api, input, model="nope"), 422, "invalid_input", "model", "nope")
    assert_error(post_job(api, input, kind="orbit", model=INSTRUCTION_EDIT), 422, "invalid_input", "orbit")
    assert_error(post_job(api, input, kind="video"), 422, "invalid_input", "kind")
    assert_error(post_job(api, input, priority=1000), 422, "invalid_input", "priority")
    assert_error(post_job(api, input, priority=True), 422, "invalid_input", "priority", "not true or false")
    as_boolean = post_job(api, input, time_limits={"run_s": True})  # not a 1 s limit
    assert_error(as_boolean, 422, "invalid_input", "time_limits.run_s", "not true or false")
    assert_error(post_job(api, input, extra=1), 422, "invalid_input", "extra")
    assert_error(api.post("/v1/jobs", json={"input": input}), 422, "invalid_input", "model", "required")
    assert_error(post_job(api, "images please"), 422, "invalid_input", "input")
    waited = api.post("/v1/jobs?wait=1000", json={"model": CAMERA_EDIT, "input": input})
    assert_error(waited, 422, "invalid_input", "wait")
    not_a_number = api.post("/v1/jobs?wait=nan", json={"model": CAMERA_EDIT, "input": input})
    assert_error(not_a_number, 422, "invalid_input", "wait", "finite number")
    assert_error(api.get("/v1/jobs", params={"status": "done"}), 422, "invalid_input", "status")
    assert_error(api.get("/v1/jobs", params={"cursor": "abc"}), 422, "invalid_input", "cursor")
    assert_error(api.get("/v1/jobs", params={"limit": 0}), 422, "invalid_input", "limit")


def test_bad_batches_name_the_item(api: httpx.Client) -> None:
    asset = upload(api)["id"]
    good = {"input": {"images": [asset], "prompt": "x"}}

    def batch(*items: Any, model: str = INSTRUCTION_EDIT) -> httpx.Response:
        return api.post("/v1/batches", json={"model": model, "items": list(items)})

    assert_error(batch(), 422, "invalid_input", "items", "1 to 64")
    assert_error(batch(good, {"input": {"images": [asset]}}), 422, "invalid_input", "items.1", "prompt")
    bad_size = {"input": {"images": [asset], "prompt": "x", "width": 8}}
    assert_error(batch(good, good, bad_size), 422, "invalid_input", "items.2", "width")
    bad_image = {"input": {"images": [data_url(gif())], "prompt": "x"}}
    assert_error(batch(bad_image), 415, "unsupported_image", "items.0", "input.images.0")
    assert_error(batch(good, model="nope"), 422, "invalid_input", "model", "nope")
    assert api.get("/v1/jobs").json()["data"] == []  # all or none


@pytest.mark.parametrize(
    ("body", "content_type", "words"),
    [
        (b'{"model": "x", "input": ', "application/json", ("body", "not valid JSON")),
        (b"{'model': 'x'}", "application/json", ("body", "not valid JSON")),
        (b"[1, 2]", "application/json", ("body", "JSON object")),
        (b"", "application/json", ("body", "empty")),
        (b'{"model": "x", "input": {}}', "text/plain", ("body", "Content-Type", "text/plain")),
    ],
)
def test_malformed_job_bodies(
    api: httpx.Client, body: bytes, content_type: str, words: tuple[str, ...]
) -> None:
    response = api.post("/v1/jobs", content=body, headers={"Content-Type": content_type})
    error = assert_error(response, 422, "invalid_input", *words)
    assert "JSON decode error" not in error["message"]


def test_malformed_uploads(api: httpx.Client) -> None:
    assert_error(
        api.post("/v1/assets", content=b"{", headers={"Content-Type": "application/json"}),
        422,
        "invalid_input",
        "body",
        "not valid JSON",
    )
    assert_error(api.post("/v1/assets", json={"image": "x"}), 422, "invalid_input", "data", "url")
    assert_error(api.post("/v1/assets", json=["x"]), 422, "invalid_input", "body", "JSON object")
    assert_error(
        api.post("/v1/assets", content=png(), headers={"Content-Type": "image/png"}),
        422,
        "invalid_input",
        "content type",
        "image/png",
    )
    no_file = api.post("/v1/assets", files={"image": ("in.png", png(), "image/png")})
    assert_error(no_file, 422, "invalid_input", "`file`")
    text_field = api.post("/v1/assets", data={"file": "just text"}, files={"other": ("x.bin", b"1")})
    assert_error(text_field, 422, "invalid_input", "`file`")
    bad_data = api.post("/v1/assets", json={"data": "@@@"})
    assert_error(bad_data, 422, "invalid_input", "data: not base64 image data or a data URL")


def test_a_bad_upload_name_is_refused_naming_it(api: httpx.Client) -> None:
    long_file = api.post("/v1/assets", files={"file": ("x" * 252 + ".png", png(), "image/png")})
    assert_error(long_file, 422, "invalid_input", "the file's name has 256 characters; at most 255")
    long_json = api.post("/v1/assets", json={"data": data_url(png()), "name": "x" * 256})
    assert_error(long_json, 422, "invalid_input", "name has 256 characters; at most 255")
    for control in (
        "a\tb.png",
        "a\u009bb.png",
        "a\u2028b.png",
    ):  # C0, C1 (a terminal's CSI), a line separator
        refused = api.post("/v1/assets", json={"data": data_url(png()), "name": control})
        assert_error(refused, 422, "invalid_input", "name has a control character")
    not_text = api.post("/v1/assets", json={"data": data_url(png()), "name": 7})
    assert_error(not_text, 422, "invalid_input", "name must be a text (the file's name), not a number")
    misspelt = api.post("/v1/assets", json={"data": data_url(png()), "filename": "mine.png"})
    assert_error(misspelt, 422, "invalid_input", "body: unknown field 'filename'", "and name")


def test_unknown_ids_routes_and_methods(shared_server: ServerProcess, api: httpx.Client) -> None:
    assert_error(api.get("/v1/jobs/job_000"), 404, "not_found", "job_000")
    assert_error(api.get("/v1/assets/asset_000"), 404, "not_found", "asset_000")
    assert_error(api.get("/v1/batches/batch_000"), 404, "not_found", "batch_000")
    assert_error(api.get("/v1/models/nope"), 404, "not_found", "nope")
    assert_error(httpx.get(f"{shared_server.url}/v2/nothing"), 404, "not_found")
    assert_error(api.delete("/v1/jobs"), 405, "method_not_allowed")
    assert_error(httpx.get(f"{shared_server.url}/v1/files/asset_000"), 403, "forbidden", "not signed")


# hostile input: never a 500 -------------------------------------------------------------------------------

#: 24 bytes: a PNG whose header chunk is cut short, which made Pillow raise ValueError (a 500 before).
HOSTILE_PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x04IHDR\x00\x00\x00\x01\x85\x09\xd9\xf6"


def test_a_hostile_png_is_an_invalid_image_and_the_connection_stays_usable(api: httpx.Client) -> None:
    assert_error(post_file(api, HOSTILE_PNG), 422, "invalid_image", "file")
    inline = base64.b64encode(HOSTILE_PNG).decode()
    assert_error(post_job(api, edit_input(inline)), 422, "invalid_image", "input.images.0")
    assert api.get("/v1/jobs").status_code == 200  # the same keep-alive connection


@pytest.mark.parametrize("cursor", ["²", "١٢", str(2**70), "-1", "1.5", ""])
def test_a_cursor_this_server_never_gave_is_invalid_input(api: httpx.Client, cursor: str) -> None:
    assert_error(api.get("/v1/jobs", params={"cursor": cursor}), 422, "invalid_input", "cursor")


@pytest.mark.parametrize("sig", ["é" * 64, "\u2603", "0" * 64])
def test_a_download_link_with_a_foreign_signature_is_forbidden(
    shared_server: ServerProcess, sig: str
) -> None:
    response = httpx.get(f"{shared_server.url}/v1/files/asset_000", params={"expires": 2**31, "sig": sig})
    assert_error(response, 403, "forbidden", "signature")


def test_an_asset_whose_file_was_lost_is_gone_and_its_job_fails_without_naming_a_path(
    shared_server: ServerProcess, api: httpx.Client
) -> None:
    data = png(52, 44)  # bytes no other test uploads: its file is this test's alone
    asset = upload(api, data)
    digest = hashlib.sha256(data).hexdigest()
    stored = shared_server.data_dir / "assets" / digest[:2] / digest
    assert stored.is_file()
    stored.unlink()  # a lost disk, an operator's cleanup
    lost = assert_error(download(asset["url"]), 410, "gone", asset["id"])
    assert "/" not in lost["message"]
    job = wait_job(
        api, api.post("/v1/jobs", json={"model": CAMERA_EDIT, "input": edit_input(asset["id"])}).json()["id"]
    )
    assert job["status"] == "failed"
    assert job["error"]["code"] == "gone"
    assert asset["id"] in job["error"]["message"]
    assert str(shared_server.data_dir) not in json.dumps(job)
    assert "/" not in job["error"]["message"]


def test_a_height_out_of_range_is_reported_as_height(api: httpx.Client) -> None:
    asset = upload(api)["id"]
    error = assert_error(
        post_job(api, edit_input(asset, width=None, height=0)), 422, "invalid_input", "height"
    )
    assert "width" not in error["message"]


def test_an_upper_case_url_scheme_is_a_url_not_base64(api: httpx.Client) -> None:
    error = assert_error(
        post_job(api, edit_input("HTTP://127.0.0.1:9/a.png")), 422, "invalid_input", "input.images.0"
    )
    assert "base64" not in error["message"]


@pytest.mark.parametrize(
    "content_type",
    ["multipart/form-data; boundary=zz", "multipart/form-data"],
    ids=["garbage", "no boundary"],
)
def test_a_malformed_multipart_upload_is_invalid_input(
    shared_server: ServerProcess, api: httpx.Client, content_type: str
) -> None:
    response = api.post("/v1/assets", content=b"garbage", headers={"Content-Type": content_type})
    assert_error(response, 422, "invalid_input", "multipart")
    assert "Expected boundary" not in shared_server.log_path.read_text()  # the parser's own bare warning


def test_downloads_are_never_sniffed_or_rendered_as_pages(api: httpx.Client) -> None:
    response = httpx.get(upload(api)["url"])
    assert response.status_code == 200
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"] == "default-src 'none'; sandbox"
    cache, _, seconds = response.headers["cache-control"].partition("=")
    assert cache == "private, max-age"
    assert 3500 < int(seconds) <= 3600  # an hour, less the seconds since the link was made


# NUL characters: refused at submit naming the field, on either store; never a 500 -----------------------

NUL_MESSAGE = "must not contain a NUL character"
TEXT_TO_IMAGE_MODEL = "qwen-image-2512"


@pytest.mark.parametrize(
    ("model", "input", "field"),
    [
        (CAMERA_EDIT, {"prompt": "add\x00snow"}, "input.prompt"),
        (
            CAMERA_EDIT,
            {
                "loras": [
                    {"url": "https://example.com/a.safetensors"},
                    {"path": "b"},
                    {"url": "https://e.x/\x00"},
                ]
            },
            "input.loras.2.url",
        ),
        (CAMERA_EDIT, {"loras": [{"path": "styles/a\x00.safetensors"}]}, "input.loras.0.path"),
        (CAMERA_EDIT, {"loras": [{"id": "house\x00"}]}, "input.loras.0.id"),
        (CAMERA_EDIT, {"aspect_ratio": "1:1\x00"}, "input.aspect_ratio"),
        (TEXT_TO_IMAGE_MODEL, {"prompt": "a lighthouse", "negative_prompt": "\x00"}, "input.negative_prompt"),
        (
            TEXT_TO_IMAGE_MODEL,
            {"prompt": "a lighthouse", "image_set": True, "set_prompts": ["dawn", "du\x00sk"]},
            "input.set_prompts.1",
        ),
    ],
    ids=["prompt", "lora-url", "lora-path", "lora-id", "aspect-ratio", "negative-prompt", "set-prompt"],
)
def test_a_nul_character_in_any_input_text_is_refused_naming_the_field(
    api: httpx.Client, model: str, input: dict[str, Any], field: str
) -> None:
    if model == CAMERA_EDIT:
        input = edit_input(upload(api)["id"]) | input
    error = assert_error(post_job(api, input, model=model), 422, "invalid_input")
    assert error["message"] == f"{field}: {NUL_MESSAGE}"
    assert api.get("/v1/jobs").json()["data"] == []  # nothing was stored


def test_a_nul_character_in_an_image_reference_a_webhook_or_a_batch_item_names_its_place(
    api: httpx.Client,
) -> None:
    asset = upload(api)["id"]
    for image in ("https://example.com/a\x00.png", f"{asset}\x00", "data:image/png;base64,\x00"):
        error = assert_error(post_job(api, edit_input(asset, images=[asset, image])), 422, "invalid_input")
        assert error["message"] == f"input.images.1: {NUL_MESSAGE}"
    hooked = post_job(api, edit_input(asset), webhook_url="https://example.com/hook\x00")
    assert assert_error(hooked, 422, "invalid_input")["message"] == f"webhook_url: {NUL_MESSAGE}"
    upload_by_url = api.post("/v1/assets", json={"url": "https://example.com/a\x00.png"})
    assert assert_error(upload_by_url, 422, "invalid_input")["message"] == f"url: {NUL_MESSAGE}"
    items = [{"input": {"images": [asset], "prompt": "x"}}, {"input": {"images": [asset], "prompt": "\x00"}}]
    batch = api.post("/v1/batches", json={"model": INSTRUCTION_EDIT, "items": items})
    error = assert_error(batch, 422, "invalid_input", "items.1")
    assert error["message"].endswith(f"input.prompt: {NUL_MESSAGE}")
    assert api.get("/v1/jobs").json()["data"] == []


def test_ids_with_a_nul_character_are_not_found(shared_server: ServerProcess, api: httpx.Client) -> None:
    assert_error(api.get("/v1/jobs/job_%00x"), 404, "not_found", "no job")
    assert_error(api.get("/v1/jobs/job_%00x/events"), 404, "not_found", "no job")
    assert_error(api.post("/v1/jobs/job_%00x/cancel"), 404, "not_found", "no job")
    assert_error(api.get("/v1/batches/batch_%00x"), 404, "not_found", "no batch")
    scenario = httpx.get(f"{shared_server.url}/scenario/v1/jobs/job_%00x", headers=api.headers, timeout=10)
    assert (scenario.status_code, scenario.json()["code"]) == (404, "not_found")
    assert_error(api.get("/v1/assets/asset_%00x"), 404, "not_found", "no asset")
    scenario_asset = httpx.get(
        f"{shared_server.url}/scenario/v1/assets/asset_%00x", headers=api.headers, timeout=10
    )
    assert (scenario_asset.status_code, scenario_asset.json()["code"]) == (404, "not_found")


# host names DNS cannot carry -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://xn--a.example/x.png", ("international host name", "xn--a.example")),
        (f"http://{'a' * 64}.example/x.png", ("64 characters", "at most 63")),
    ],
    ids=["bad-idna", "long-label"],
)
def test_a_url_whose_host_dns_cannot_carry_is_invalid_input_naming_the_field(
    api: httpx.Client, url: str, words: tuple[str, ...]
) -> None:
    asset = upload(api)["id"]
    error = assert_error(
        post_job(api, edit_input(asset, images=[url])), 422, "invalid_input", "input.images.0", *words
    )
    assert error["message"].count("input.images.0") == 1, error
    assert_error(
        post_job(api, edit_input(asset), webhook_url=url), 422, "invalid_input", "webhook_url", *words
    )
    assert_error(api.post("/v1/assets", json={"url": url}), 422, "invalid_input", "url", *words)


def test_text_the_database_refuses_is_the_requests_fault_with_the_native_shape() -> None:
    import psycopg
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from reangle.api.errors import database_refusal, install_error_handlers

    app = FastAPI()
    install_error_handlers(app)  # psycopg is imported: as on a server whose store is PostgreSQL

    @app.get("/refused")
    def refused() -> None:
        raise psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")

    with TestClient(app) as client:  # raises if the error went on to the server (logged as a 500)
        error = assert_error(client.get("/refused"), 422, "invalid_input", "NUL character")
    assert "0x00" not in error["message"]  # the database's own words stay in the log
    assert database_refusal(ValueError("x")) is None


# prompts that a model's template takes past its limit; jobs of models no longer served ------------------

POSTER_STYLE = ", in the style of a 1950s travel poster"
OPERATOR_CATALOG = f"""
[[model]]
id = "poster"
description = "travel posters"
task = "text_to_image"
engine = "qwen-image"
base = "Qwen/Qwen-Image-2512"
prompt_template = "{{prompt}}{POSTER_STYLE}"

[[model]]
id = "retiring"
description = "a house style the operator is about to retire"
task = "instruction_edit"
engine = "qwen-edit"
base = "Qwen/Qwen-Image-Edit-2511"
"""


@pytest.fixture
def catalog_file(tmp_path: Path) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(OPERATOR_CATALOG)
    return path


def test_a_prompt_the_models_template_takes_past_the_limit_is_refused_at_submit(
    serve: ServerFactory, catalog_file: Path
) -> None:
    server = serve(catalog_file=str(catalog_file))
    words = "w" * (2001 - len(POSTER_STYLE))
    with server.client(KEY_A) as api:
        answer = api.post("/v1/jobs", json={"model": "poster", "input": {"prompt": words}})
        error = assert_error(
            answer, 422, "invalid_input", "input.prompt", "2,001", "1 more", "limit of 2,000"
        )
        assert error["hint"] == "shorten the prompt by 1 or more characters"
        scenario = api.post("/scenario/v1/generate/custom/model_poster", json={"prompt": words})
        assert scenario.status_code == 400, scenario.text
        assert scenario.json()["code"] == "invalid_input"
        assert "2,001" in scenario.json()["error"]
        fits = api.post("/v1/jobs", json={"model": "poster", "input": {"prompt": words[1:]}})
        assert fits.status_code == 202, fits.text
        assert api.get("/v1/jobs").json()["data"][0]["id"] == fits.json()["id"]  # the refused ones: none


def test_queued_jobs_of_a_model_turned_off_fail_when_the_server_starts_again(
    serve: ServerFactory, catalog_file: Path
) -> None:
    server = serve(catalog_file=str(catalog_file))
    with server.client(KEY_A) as api:
        asset = upload(api)["id"]
        holding = submit(api, hold_input(asset), kind="orbit")
        wait_job(api, holding["id"], running)  # the runner is busy: what comes next stays queued
        retiring = [submit(api, {"images": [asset], "prompt": "x"}, model="retiring") for _ in range(2)]
        staying = submit(api, edit_input(asset))
    server.kill()
    catalog_file.write_text(OPERATOR_CATALOG.split('[[model]]\nid = "retiring"')[0])  # the entry is gone
    server.start()
    with server.client(KEY_A) as api:
        for job in retiring:
            failed = get_job(api, job["id"])
            assert failed["status"] == "failed", failed
            assert failed["error"]["code"] == "model_unavailable"
            assert "model retiring is no longer served" in failed["error"]["message"]
        cancel(api, holding["id"])
        assert succeeded(api, staying["id"])["status"] == "succeeded"  # a served model's job runs as ever
    assert "failed 2 queued jobs of models no longer served: retiring" in server.log()
