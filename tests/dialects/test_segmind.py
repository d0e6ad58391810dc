"""Compatibility: the real `segmind` 1.3.0 client, pointed at a running reangle server by its base URL.

Most tests use the session's fake-engine `server`; the http(s)-URL test starts its own server that may
fetch loopback URLs, and one test runs the tiny diffusers engine. The fake engine fails on purpose when the
prompt holds `fake:fail` (its test hook).
"""

from __future__ import annotations

import base64
import io
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from segmind import InferenceFailed, SegmindClient, SegmindError
from segmind.v2 import AsyncJob

from reangle.api.app import create_app
from reangle.core.models import CAMERA_EDIT
from reangle.core.service import STOPPING
from reangle.dialects import segmind as dialect
from reangle.settings import Settings
from tests.dialects.conftest import (
    API_KEY,
    OTHER_KEY,
    RunningServer,
    png,
    png_base64,
    start_server,
    stop_server,
)

SLUG = "qwen-image-edit-plus-multiple-angle"
FORMATS = {"webp": ("WEBP", "image/webp"), "png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg")}


def client(server: RunningServer, key: str | None = API_KEY, timeout: float = 30.0) -> SegmindClient:
    return SegmindClient(base_url=f"{server.url}/segmind/v1", api_key=key, timeout=timeout)


def native(server: RunningServer, key: str = API_KEY) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def native_job(server: RunningServer, job_id: str) -> dict[str, Any]:
    with native(server) as api:
        response = api.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


def wait_native(server: RunningServer, job_id: str, status: str, timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = native_job(server, job_id)
        if job["status"] == status:
            return job
        assert time.monotonic() < deadline, f"job {job_id} is {job['status']}, not {status}"
        time.sleep(0.05)


# v1 (sync) ----------------------------------------------------------------------------------------------


def test_v1_with_raw_base64_returns_webp_bytes_at_the_input_aspect(server: RunningServer) -> None:
    response = client(server).run_sync(
        SLUG, prompt="rotate the camera 90 degrees right", image_1=png_base64()
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/webp"
    image = decoded(response.content)
    assert image.format == "WEBP"
    assert abs(image.width / image.height - 96 / 64) < 0.05  # aspect_ratio defaults to match_input_image


@pytest.mark.parametrize("image_format", ["png", "jpeg", "webp"])
def test_v1_with_a_data_url_returns_the_requested_format(server: RunningServer, image_format: str) -> None:
    response = client(server).run_sync(
        SLUG, prompt="back view", image_1=data_url(png()), image_format=image_format, aspect_ratio="1:1"
    )
    pil_format, mime = FORMATS[image_format]
    assert response.headers["content-type"] == mime
    image = decoded(response.content)
    assert image.format == pil_format
    assert image.width == image.height


def test_v1_base64_true_returns_json_with_the_image(server: RunningServer) -> None:
    response = client(server).run_sync(
        SLUG, prompt="close-up", image_1=png_base64(), image_format="png", base64=True, seed=-1
    )
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"image"}
    assert decoded(base64.b64decode(body["image"])).format == "PNG"


def test_v1_refuses_a_loopback_image_url_by_default(server: RunningServer) -> None:
    with pytest.raises(SegmindError) as caught:
        client(server).run_sync(SLUG, prompt="back view", image_1=f"{server.url}/healthz")
    assert caught.value.status == 400
    assert caught.value.detail is not None
    assert "image_1" in caught.value.detail
    assert "loopback" in caught.value.detail


def test_v1_failed_job_is_the_clients_422_failure(server: RunningServer) -> None:
    with pytest.raises(SegmindError) as caught:
        client(server).run_sync(SLUG, prompt="back view, fake:fail", image_1=png_base64())
    assert caught.value.status == 422
    assert caught.value.detail is not None
    assert "failed on purpose" in caught.value.detail


def hold_runner(api: httpx.Client | TestClient) -> str:
    """A native orbit job of 16 views x 100 steps (about 30 s): keeps the runner busy until canceled."""
    hold = {
        "image": png_base64(16, 16),
        "poses": [{"azimuth": 45 * (i % 8)} for i in range(16)],  # a path may pass a view twice
        "num_inference_steps": 100,
        "width": 16,
        "height": 16,
    }
    response = api.post("/v1/jobs", json={"model": CAMERA_EDIT, "kind": "orbit", "input": hold})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def test_v1_client_disconnect_cancels_the_job(server: RunningServer) -> None:
    marker = f"disconnect {uuid.uuid4().hex}"
    with native(server) as api:
        hold = hold_runner(api)
        try:
            with pytest.raises(httpx.ReadTimeout):  # the SDK gives up; its connection closes
                client(server, timeout=0.5).run_sync(SLUG, prompt=f"back view {marker}", image_1=png_base64())
            mine = [job for job in api.get("/v1/jobs").json()["data"] if job["input"]["prompt"] == marker]
            assert len(mine) == 1
            canceled = wait_native(server, mine[0]["id"], "canceled", timeout=5)
            assert canceled["started_at"] is None  # it was still queued behind the hold job
        finally:
            api.post(f"/v1/jobs/{hold}/cancel")


def test_v1_gives_up_with_504_after_its_bound_and_cancels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In process, with the sync bound lowered to 0.3 s and the runner held by another job."""
    monkeypatch.setattr(dialect, "SYNC_WAIT_S", 0.3)
    settings = Settings(
        engine="fake", data_dir=tmp_path, api_keys=API_KEY, fake_step_seconds=0.02, cache_dir=tmp_path
    )
    with TestClient(create_app(settings)) as http:
        http.headers["Authorization"] = f"Bearer {API_KEY}"
        hold = hold_runner(http)
        try:
            response = http.post(
                f"/segmind/v1/{SLUG}",
                json={"prompt": "back view bounded", "image_1": png_base64()},
                headers={"x-api-key": API_KEY},
            )
            assert response.status_code == 504
            assert "did not finish within 0.3 s" in response.json()["error"]
            jobs = http.get("/v1/jobs").json()["data"]
            mine = [job for job in jobs if job["input"]["prompt"] == "bounded"]
            assert [job["status"] for job in mine] == ["canceled"]
        finally:
            http.post(f"/v1/jobs/{hold}/cancel")


def test_v1_answers_503_retry_when_the_server_stops_and_cancels(tmp_path: Path) -> None:
    """In process: the server starts to stop while a sync request waits (the runner held by another job)."""
    settings = Settings(
        engine="fake", data_dir=tmp_path, api_keys=API_KEY, fake_step_seconds=0.02, cache_dir=tmp_path
    )
    app = create_app(settings)
    with TestClient(app) as http, ThreadPoolExecutor(1) as pool:
        http.headers["Authorization"] = f"Bearer {API_KEY}"
        hold = hold_runner(http)
        try:
            waiting = pool.submit(
                http.post,
                f"/segmind/v1/{SLUG}",
                json={"prompt": "back view stopping", "image_1": png_base64()},
                headers={"x-api-key": API_KEY},
            )
            deadline = time.monotonic() + 10
            while not [
                job for job in http.get("/v1/jobs").json()["data"] if "stopping" in job["input"]["prompt"]
            ]:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert http.portal is not None
            http.portal.call(app.state.reangle.service.stop_waiting)  # as `reangle serve` does on SIGTERM
            response = waiting.result(timeout=5)
            assert response.status_code == 503
            assert response.headers["retry-after"] == "5"
            assert response.json() == {"error": f"{STOPPING} (retry in 5 s)"}
            jobs = http.get("/v1/jobs").json()["data"]
            assert [job["status"] for job in jobs if job["input"]["prompt"] == "stopping"] == ["canceled"]
        finally:
            http.post(f"/v1/jobs/{hold}/cancel")


# v2 (async) ---------------------------------------------------------------------------------------------


def test_v2_submit_then_the_sdks_own_wait_gets_the_result(server: RunningServer) -> None:
    job = client(server).submit_async(SLUG, prompt="turn around, wide shot", image_1=png_base64())
    assert job.submit_response["status"] == "QUEUED"
    root = f"{server.url}/segmind/v2/requests/{job.request_id}"
    assert (job.status_url, job.response_url) == (f"{root}/status", root)

    result = job.wait(timeout=30, interval=0.05)
    assert result["status"] == "COMPLETED"
    assert result["request_id"] == job.request_id
    assert result["error"] is None
    assert result["metrics"]["inference_time"] > 0
    assert result["output"].startswith(f"{server.url}/")
    download = httpx.get(result["output"], timeout=30)  # a plain GET, no key, as users do
    assert download.status_code == 200
    assert decoded(download.content).format == "WEBP"
    assert job.status()["status"] == "COMPLETED"


def test_v2_run_with_base64_puts_the_image_in_output(server: RunningServer) -> None:
    result = client(server).run(
        SLUG, prompt="high angle", image_1=png_base64(), image_format="jpeg", base64=True
    )
    assert result["status"] == "COMPLETED"
    assert decoded(base64.b64decode(result["output"])).format == "JPEG"


def test_v2_failed_job_raises_inference_failed_and_serves_422(server: RunningServer) -> None:
    job = client(server).submit_async(SLUG, prompt="left side view fake:fail", image_1=png_base64())
    with pytest.raises(InferenceFailed) as caught:
        job.wait(timeout=30, interval=0.05)
    assert caught.value.detail is not None
    assert "failed on purpose" in caught.value.detail
    assert caught.value.status_body["status"] == "FAILED"
    for url in (job.status_url, job.response_url):
        raw = httpx.get(url, headers={"x-api-key": API_KEY})
        assert raw.status_code == 422
        assert raw.json()["status"] == "FAILED"
    assert job.result()["error"] == caught.value.detail  # the SDK tolerates 422 with a FAILED body


def test_v2_canceled_job_reads_as_failed_canceled(server: RunningServer) -> None:
    with native(server) as api:
        hold = hold_runner(api)
        try:
            job = client(server).submit_async(SLUG, prompt="back view", image_1=png_base64())
            assert api.post(f"/v1/jobs/{job.request_id}/cancel").status_code == 200
        finally:
            api.post(f"/v1/jobs/{hold}/cancel")
    with pytest.raises(InferenceFailed) as caught:
        job.wait(timeout=10, interval=0.05)
    assert caught.value.detail == "canceled"


@pytest.mark.parametrize("key", [API_KEY, OTHER_KEY])
def test_unknown_or_other_keys_request_is_404(server: RunningServer, key: str) -> None:
    mine = client(server).submit_async(SLUG, prompt="back view", image_1=png_base64())
    request_id = "job_0000000000000000deadbeef" if key == API_KEY else mine.request_id
    root = f"{server.url}/segmind/v2/requests/{request_id}"
    probe = AsyncJob(request_id, f"{root}/status", root, {}, _client=client(server, key))
    for fetch in (probe.status, probe.result):
        with pytest.raises(SegmindError) as caught:
            fetch()
        assert caught.value.status == 404
        assert caught.value.detail is not None
        assert request_id in caught.value.detail


# errors, auth -------------------------------------------------------------------------------------------

BAD_INPUTS = [
    ({"image_format": "bmp"}, "image_format"),
    ({"image_2": png_base64(), "image_3": png_base64(), "image_4": png_base64()}, "at most 3 images"),
    ({"lora_2_url": "file:///etc/passwd"}, "lora_2_url must be an http(s) URL"),
    ({"seed": -7}, "seed"),
    ({"quality": 0}, "quality"),
    ({"aspect_ratio": "7:5"}, "aspect_ratio"),
    ({"image_1": "not an image"}, "image_1"),
    ({"image_1": base64.b64encode(b"plain text, not pixels").decode()}, "image_1"),
    ({"prompt": 5}, "prompt must be a string, got 5"),
]


@pytest.mark.parametrize(("extra", "mention"), BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_bad_input_is_the_clients_4xx_error(
    server: RunningServer, extra: dict[str, Any], mention: str, version: str
) -> None:
    params = {"prompt": "back view", "image_1": png_base64(), **extra}
    sdk = client(server)
    call = sdk.run_sync if version == "v1" else sdk.submit_async
    with pytest.raises(SegmindError) as caught:
        call(SLUG, **params)
    assert caught.value.status is not None
    assert 400 <= caught.value.status < 500
    assert caught.value.detail is not None
    assert mention in caught.value.detail


def test_unknown_slug_is_404(server: RunningServer) -> None:
    with pytest.raises(SegmindError) as caught:
        client(server).run_sync("flux-schnell", prompt="a cat")
    assert caught.value.status == 404
    assert caught.value.detail is not None
    assert SLUG in caught.value.detail


def test_a_base_url_without_the_version_is_a_404_that_says_where_to_point(server: RunningServer) -> None:
    wrong = SegmindClient(base_url=f"{server.url}/segmind", api_key=API_KEY)
    with pytest.raises(SegmindError) as caught:
        wrong.run_sync(SLUG, prompt="back view", image_1=png_base64())
    assert caught.value.status == 404
    assert caught.value.detail == (
        f"no route POST /segmind/{SLUG}; point the client at http://HOST/segmind/v1"
    )


def test_a_method_a_route_does_not_take_is_405_in_segmind_shape(server: RunningServer) -> None:
    response = httpx.get(f"{server.url}/segmind/v1/{SLUG}", headers={"x-api-key": API_KEY})
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json() == {"error": f"method GET is not allowed on /segmind/v1/{SLUG}; use POST"}


@pytest.mark.parametrize("key", ["wrong-key", None])
def test_bad_or_missing_key_is_the_clients_401(
    server: RunningServer, key: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SEGMIND_API_KEY", raising=False)
    sdk = client(server, key)
    for call in (sdk.run_sync, sdk.submit_async):
        with pytest.raises(SegmindError) as caught:
            call(SLUG, prompt="back view", image_1=png_base64())
        assert caught.value.status == 401
        assert caught.value.detail is not None
        assert "x-api-key" in caught.value.detail


# the camera phrase ---------------------------------------------------------------------------------------

CAMERA_CASES = [
    ("Rotate the camera 90 degrees to the right, close-up, make it snow", (90, 0, 0.6), "make it snow"),
    ("Turn the camera to a top-down view.", (0, 60, 1.0), None),
    ("<sks> back-left quarter view low-angle shot wide shot", (225, -30, 1.8), ""),
    ("wide shot from the left side, add fog", (270, 0, 1.8), "add fog"),
]


@pytest.mark.parametrize(("prompt", "pose", "instruction"), CAMERA_CASES)
def test_the_camera_phrase_in_the_prompt_selects_the_pose(
    server: RunningServer, prompt: str, pose: tuple[int, int, float], instruction: str | None
) -> None:
    job = client(server).submit_async(SLUG, prompt=prompt, image_1=png_base64())
    job.wait(timeout=30, interval=0.05)
    stored = native_job(server, job.request_id)["input"]
    assert (stored["azimuth"], stored["elevation"], stored["distance"]) == pose
    if instruction is not None:
        assert stored["prompt"] == instruction
    assert stored["seed"] == 87568756  # Segmind's documented default
    assert stored["output_format"] == "webp"


def test_a_prompt_without_a_camera_move_is_an_edit_as_written(server: RunningServer) -> None:
    """No camera words: no pose is made up and no LoRA prompt is added; the prompt goes on unchanged."""
    job = client(server).submit_async(SLUG, prompt="make it snow", image_1=png_base64())
    job.wait(timeout=30, interval=0.05)
    stored = native_job(server, job.request_id)
    assert stored["model"] == "qwen-image-edit-2511"
    assert stored["input"]["prompt"] == "make it snow"
    assert "azimuth" not in stored["input"]


# http(s) image URLs --------------------------------------------------------------------------------------


NOT_A_LORA = b"plain text, not a safetensors LoRA"


@pytest.fixture(scope="module")
def image_host() -> Iterator[str]:
    """A local http.server with one PNG at /room.png, and text posing as a LoRA at /style.safetensors."""
    files = {"/room.png": png(80, 120), "/style.safetensors": NOT_A_LORA}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "image/png" if self.path.endswith(".png") else "text/plain")
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            if body is not None:
                self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A fake-engine server allowed to fetch private and loopback URLs."""
    running = start_server(
        tmp_path_factory.mktemp("segmind-open-server"), env={"REANGLE_ALLOW_PRIVATE_URLS": "true"}
    )
    yield running
    stop_server(running)


def test_v1_with_an_http_image_url(open_server: RunningServer, image_host: str) -> None:
    response = client(open_server).run_sync(
        SLUG, prompt="front-right quarter view", image_1=f"{image_host}/room.png", image_format="png"
    )
    image = decoded(response.content)
    assert image.format == "PNG"
    assert abs(image.width / image.height - 80 / 120) < 0.05  # the fetched picture's aspect

    with pytest.raises(SegmindError) as caught:
        client(open_server).run_sync(SLUG, prompt="back view", image_1=f"{image_host}/missing.png")
    assert caught.value.status == 400
    assert caught.value.detail is not None
    assert "404" in caught.value.detail


# LoRA fields in errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_a_lora_refused_at_submit_names_the_segmind_field_sent(server: RunningServer, version: str) -> None:
    """The core refuses the URL at submit as `input.loras.0.url`; the request's only LoRA is lora_3_url."""
    sdk = client(server)
    call = sdk.run_sync if version == "v1" else sdk.submit_async
    bad = "https://example.com/style\x00.safetensors"
    with pytest.raises(SegmindError) as caught:
        call(SLUG, prompt="back view", image_1=png_base64(), lora_3_url=bad)
    assert caught.value.status == 400
    assert caught.value.detail == "lora_3_url: must not contain a NUL character"


def test_a_lora_failing_when_the_job_runs_names_the_segmind_field_on_later_polls(
    open_server: RunningServer, image_host: str
) -> None:
    lora = f"{image_host}/style.safetensors"
    job = client(open_server).submit_async(SLUG, prompt="back view", image_1=png_base64(), lora_3_url=lora)
    root = f"{open_server.url}/segmind/v2/requests/{job.request_id}"
    assert (job.status_url, job.response_url) == (
        f"{root}/status?loras=lora_3_url",
        f"{root}?loras=lora_3_url",
    )
    with pytest.raises(InferenceFailed) as caught:
        job.wait(timeout=30, interval=0.05)
    detail = caught.value.detail
    assert detail is not None
    assert detail.startswith("lora_3_url: ")
    assert "not a safetensors file" in detail
    assert "loras." not in detail
    assert job.status()["error"] == detail
    assert job.result()["error"] == detail
    # the bare URLs (as handed out before `loras=`) still answer
    for url in (f"{root}/status", root):
        bare = httpx.get(url, headers={"x-api-key": API_KEY})
        assert (bare.status_code, bare.json()["status"]) == (422, "FAILED")


def test_a_lora_failing_in_a_sync_request_names_the_segmind_field(
    open_server: RunningServer, image_host: str
) -> None:
    with pytest.raises(SegmindError) as caught:
        client(open_server).run_sync(
            SLUG, prompt="back view", image_1=png_base64(), lora_3_url=f"{image_host}/style.safetensors"
        )
    assert caught.value.status == 422
    assert caught.value.detail is not None
    assert caught.value.detail.startswith("lora_3_url: ")
    assert "not a safetensors file" in caught.value.detail


# the tiny engine ------------------------------------------------------------------------------------------


@pytest.mark.tiny
def test_tiny_engine_through_the_client(tiny_server: RunningServer) -> None:
    response = client(tiny_server, timeout=120).run_sync(
        SLUG, prompt="rotate the camera 45 degrees left", image_1=png_base64(64, 64), image_format="png"
    )
    assert response.headers["content-type"] == "image/png"
    image = decoded(response.content)
    assert image.format == "PNG"
    assert image.width > 0
    assert image.height > 0
