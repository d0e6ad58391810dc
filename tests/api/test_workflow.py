"""The whole workflow over HTTP: upload, submit, poll, download, wait, list, orbit, batch, models, ops."""

from __future__ import annotations

import base64
import io
import re
from typing import Any

import httpx
import pytest
from PIL import Image

from reangle.core.models import CAMERA_EDIT, INSTRUCTION_EDIT
from tests.api.conftest import (
    ServerProcess,
    cancel,
    data_url,
    download,
    edit_input,
    hold_input,
    png,
    poll,
    running,
    submit,
    succeeded,
    upload,
    wait_job,
)


def decoded(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image


@pytest.mark.parametrize("how", ["multipart", "base64", "data_url"])
def test_every_upload_form_stores_the_image(api: httpx.Client, how: str) -> None:
    data = png(80, 60)
    if how == "multipart":
        response = api.post("/v1/assets", files={"file": ("in.png", data, "image/png")})
    elif how == "base64":
        response = api.post("/v1/assets", json={"data": base64.b64encode(data).decode()})
    else:
        response = api.post("/v1/assets", json={"data": data_url(data)})
    assert response.status_code == 201, response.text
    asset = response.json()
    assert asset["id"].startswith("asset_")
    assert (asset["mime_type"], asset["width"], asset["height"], asset["bytes"]) == (
        "image/png",
        80,
        60,
        len(data),
    )
    assert download(asset["url"]).content == data
    assert asset["name"] == ("in.png" if how == "multipart" else None)


@pytest.mark.parametrize(
    ("sent", "kept"),
    [("photo.png", "photo.png"), ("C:\\Users\\me\\photo.png", "photo.png"), ("uploads/", None)],
)
def test_an_upload_keeps_the_files_name_without_its_folders(
    api: httpx.Client, sent: str, kept: str | None
) -> None:
    response = api.post("/v1/assets", files={"file": (sent, png(), "image/png")})
    assert response.status_code == 201, response.text
    assert response.json()["name"] == kept
    assert api.get(f"/v1/assets/{response.json()['id']}").json()["name"] == kept


def test_a_json_upload_keeps_the_name_it_gives(api: httpx.Client) -> None:
    response = api.post("/v1/assets", json={"data": data_url(png()), "name": "from json.png"})
    assert response.status_code == 201, response.text
    assert api.get(f"/v1/assets/{response.json()['id']}").json()["name"] == "from json.png"


def test_edit_runs_and_its_png_downloads_without_auth(api: httpx.Client) -> None:
    asset = upload(api)
    queued = submit(api, edit_input(asset["id"], width=96, height=64))
    assert queued["status"] == "queued"
    assert queued["input"]["images"] == [asset["id"]]
    job = succeeded(api, queued["id"])
    assert job["progress"] == 1
    assert job["attempt"] == 1
    assert [change["status"] for change in job["history"]] == ["queued", "processing", "succeeded"]
    assert {"queue_s", "run_s", "inference_s", "encode_s"} <= set(job["timings"])
    [output] = job["output"]["assets"]
    assert (output["role"], output["mime_type"], output["seed"]) == ("image", "image/png", 7)
    assert (output["width"], output["height"]) == (96, 64)
    assert output["url"].startswith(f"{api.base_url}/v1/files/")
    image = decoded(download(output["url"]))
    assert (image.format, image.size) == ("PNG", (96, 64))


def test_an_asset_gives_a_fresh_working_url(api: httpx.Client) -> None:
    asset = upload(api)
    response = api.get(f"/v1/assets/{asset['id']}")
    assert response.status_code == 200
    again = response.json()
    assert {k: again[k] for k in ("id", "width", "height", "bytes")} == {
        k: asset[k] for k in ("id", "width", "height", "bytes")
    }
    assert decoded(download(again["url"])).size == (64, 48)


def test_inline_images_in_a_job_become_assets(api: httpx.Client) -> None:
    data = png(64, 64)
    job = submit(api, edit_input(data_url(data), images=[data_url(data), base64.b64encode(data).decode()]))
    first, second = job["input"]["images"]
    assert first.startswith("asset_")
    assert second.startswith("asset_")
    assert first != second
    assert api.get(f"/v1/assets/{first}").json()["bytes"] == len(data)
    succeeded(api, job["id"])


def test_wait_returns_the_finished_job_or_202_in_time(api: httpx.Client) -> None:
    asset = upload(api)
    response = api.post("/v1/jobs?wait=20", json={"model": CAMERA_EDIT, "input": edit_input(asset["id"])})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "succeeded"
    assert response.json()["output"]["assets"][0]["url"]

    slow = edit_input(asset["id"], num_inference_steps=100)  # 2 s on the fake engine
    response = api.post("/v1/jobs?wait=0.2", json={"model": CAMERA_EDIT, "input": slow})
    assert response.status_code == 202, response.text
    assert response.json()["status"] in ("queued", "processing")
    cancel(api, response.json()["id"])


def test_list_filters_by_status_and_pages_newest_first(api: httpx.Client) -> None:
    asset = upload(api)
    done = [succeeded(api, submit(api, edit_input(asset["id"]))["id"]) for _ in range(3)]
    failed = submit(api, edit_input(asset["id"], prompt="fake:fail"))
    assert wait_job(api, failed["id"])["status"] == "failed"

    seen, cursor, pages = [], None, 0
    while True:
        params: dict[str, Any] = {"status": "succeeded", "limit": 2} | ({"cursor": cursor} if cursor else {})
        page = api.get("/v1/jobs", params=params).json()
        pages += 1
        seen += [job["id"] for job in page["data"]]
        assert all(job["status"] == "succeeded" for job in page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert (pages, seen) == (2, [job["id"] for job in reversed(done)])

    everything = api.get("/v1/jobs", params={"limit": 100}).json()
    assert [job["id"] for job in everything["data"]] == [failed["id"], *seen]
    assert everything["next_cursor"] is None
    only_failed = api.get("/v1/jobs", params={"status": "failed"}).json()["data"]
    assert [job["id"] for job in only_failed] == [failed["id"]]
    assert only_failed[0]["error"]["code"] == "engine_error"


def test_orbit_gives_views_with_poses_an_animated_turntable_and_a_contact_sheet(api: httpx.Client) -> None:
    asset = upload(api)
    orbit = {"image": asset["id"], "azimuths": [0, 90, 180], "elevation": 30, "width": 48, "height": 32}
    job = succeeded(api, submit(api, orbit, kind="orbit")["id"])
    assert job["kind"] == "orbit"
    outputs = job["output"]["assets"]
    assert [output["role"] for output in outputs] == ["view", "view", "view", "turntable", "contact_sheet"]
    views = outputs[:3]
    assert [view["pose"]["azimuth_deg"] for view in views] == [0, 90, 180]
    assert {view["pose"]["elevation_deg"] for view in views} == {30}
    for view in views:
        assert decoded(download(view["url"])).size == (48, 32)

    turntable = decoded(download(outputs[3]["url"]))
    assert (turntable.format, outputs[3]["mime_type"]) == ("WEBP", "image/webp")
    assert getattr(turntable, "is_animated", False)
    assert getattr(turntable, "n_frames", 1) == 3
    sheet = decoded(download(outputs[4]["url"]))
    assert (sheet.format, sheet.size) == ("PNG", (outputs[4]["width"], outputs[4]["height"]))
    assert sheet.width == 3 * 48


def test_batch_children_each_have_their_own_result(api: httpx.Client) -> None:
    asset = upload(api)
    items = [
        {"input": {"images": [asset["id"]], "prompt": f"make it {color}", "width": 32, "height": 32}}
        for color in ("red", "green", "blue")
    ]
    response = api.post("/v1/batches", json={"model": INSTRUCTION_EDIT, "items": items})
    assert response.status_code == 202, response.text
    batch = response.json()
    assert len(batch["jobs"]) == 3
    assert {job["batch_id"] for job in batch["jobs"]} == {batch["id"]}
    finished = [succeeded(api, job["id"]) for job in batch["jobs"]]
    assert [job["input"]["prompt"] for job in finished] == ["make it red", "make it green", "make it blue"]
    outputs = [job["output"]["assets"][0]["id"] for job in finished]
    assert len(set(outputs)) == 3

    again = api.get(f"/v1/batches/{batch['id']}")
    assert again.status_code == 200
    assert [job["id"] for job in again.json()["jobs"]] == [job["id"] for job in batch["jobs"]]
    assert [job["output"]["assets"][0]["id"] for job in again.json()["jobs"]] == outputs


def test_models_list_their_input_schemas_with_defaults(api: httpx.Client) -> None:
    models = {model["id"]: model for model in api.get("/v1/models").json()["data"]}
    assert set(models) == {CAMERA_EDIT, INSTRUCTION_EDIT, "qwen-image-2512", "wan-2.7-image"}
    assert [models[name]["task"] for name in sorted(models)] == [
        "camera_edit",
        "text_to_image",
        "instruction_edit",
        "image_edit_or_generate",
    ]
    assert models[CAMERA_EDIT]["available"] is True
    assert models["wan-2.7-image"]["available"] is False
    assert "REANGLE_DASHSCOPE_API_KEY" in models["wan-2.7-image"]["unavailable_reason"]
    camera = models[CAMERA_EDIT]
    assert camera["kinds"] == ["edit", "orbit"]
    properties = camera["input_schema"]["properties"]
    assert properties["acceleration"]["default"] == "high"
    assert properties["num_outputs"]["default"] == 1
    assert properties["lora_scale"]["default"] == 1.0
    assert camera["input_schema"]["required"] == ["images"]
    assert camera["input_schemas"]["orbit"]["properties"]["azimuths"]["default"] == [
        0,
        45,
        90,
        135,
        180,
        225,
        270,
        315,
    ]
    one = api.get(f"/v1/models/{CAMERA_EDIT}")
    assert one.status_code == 200
    assert one.json() == camera


def test_poses_are_the_96_lora_prompts(api: httpx.Client) -> None:
    poses = api.get("/v1/poses").json()["data"]
    assert len(poses) == 96
    assert len({(p["azimuth_deg"], p["elevation_deg"], p["distance"]) for p in poses}) == 96
    assert poses[0]["prompt"].startswith("<sks> ")


def test_healthz_names_the_engine_the_storage_and_the_runner_and_counts_the_queue(
    shared_server: ServerProcess, api: httpx.Client
) -> None:
    health = httpx.get(f"{shared_server.url}/healthz").json()
    (runner,) = health.pop("workers")
    # the database's address without its user (or password)
    jobs = shared_server.env.get("REANGLE_DATABASE_URL", "sqlite").replace("postgres@", "")
    assert health == {
        "status": "ok",
        "role": "all",
        "auth": "on",
        "storage": {"jobs": jobs, "assets": "files"},
        "engine": "fake",
        "demo": True,
        "device": "cpu",
        "options": {},
        "queue_depth": 0,
    }
    assert runner["name"].endswith(f":{shared_server.process.pid}")  # type: ignore[union-attr]
    assert (runner["engine"], runner["device"]) == ("fake", "cpu")
    assert set(runner["models"]) == {
        "qwen-edit-multiangle-2511",
        "qwen-image-edit-2511",
        "qwen-image-2512",
    }  # not wan-2.7-image: without a DashScope key it is unavailable here
    assert runner["last_heartbeat"] >= runner["started_at"]

    asset = upload(api)
    holder = submit(api, hold_input(asset["id"]), kind="orbit")
    wait_job(api, holder["id"], running)
    waiting = submit(api, edit_input(asset["id"]))
    assert httpx.get(f"{shared_server.url}/healthz").json()["queue_depth"] == 1
    poll(  # the shared server may have held another test's job at the last heartbeat
        lambda: (
            httpx.get(f"{shared_server.url}/healthz").json()["workers"][0]["job_id"] == holder["id"] or None
        ),
        timeout=10,
        what="the heartbeat naming the job in hand",
    )
    metrics = httpx.get(f"{shared_server.url}/metrics").text
    assert 'reangle_queue_depth_by_model{model="qwen-edit-multiangle-2511"} 1.0' in metrics
    assert 'reangle_queue_depth_by_model{model="qwen-image-2512"} 0.0' in metrics  # none of its jobs waits
    assert re.search(r'^reangle_worker_busy\{worker="[^"]+"\} 1\.0$', metrics, re.M)
    for job in (waiting, holder):
        cancel(api, job["id"])
    assert wait_job(api, holder["id"])["status"] == "canceled"


def test_metrics_count_jobs_by_status_and_time_their_runs(
    shared_server: ServerProcess, api: httpx.Client
) -> None:
    job = succeeded(api, submit(api, edit_input(upload(api)["id"]))["id"])
    response = httpx.get(f"{shared_server.url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    succeeded_count = re.search(r'^reangle_jobs\{status="succeeded"\} (\d+\.\d+)$', text, re.M)
    assert succeeded_count is not None
    assert float(succeeded_count[1]) >= 1
    assert re.search(r'^reangle_jobs\{status="queued"\} \d', text, re.M)
    run_count = re.search(
        rf'^reangle_job_run_seconds_count\{{model="{job["model"]}"\}} (\d+\.\d+)$', text, re.M
    )
    assert run_count is not None
    assert float(run_count[1]) >= 1
    assert re.search(
        rf'^reangle_job_run_seconds_bucket\{{le="\+Inf",model="{job["model"]}"\}} [1-9]', text, re.M
    )
    assert re.search(r'^reangle_jobs_finished_total\{status="succeeded"\} \d', text, re.M)


def test_a_job_shows_what_the_model_was_given_and_that_the_engine_is_a_demo(api: httpx.Client) -> None:
    asset = upload(api)
    job = succeeded(
        api,
        submit(api, edit_input(asset["id"], horizontal_angle=90, prompt="make it dusk", num_outputs=2))["id"],
    )
    assert job["demo"] is True  # the shared server runs the fake engine
    first, second = job["output"]["assets"]
    assert second["seed"] == first["seed"] + 1
    assert first["pose"] == {"azimuth_deg": 90, "elevation_deg": 0, "distance": 1.0}
    plan = first["plan"]
    assert plan["prompt"].startswith("<sks> right side view")
    assert plan["prompt"].endswith("make it dusk")
    assert (plan["width"], plan["height"], plan["steps"]) == (64, 64, 4)
    assert plan["true_cfg_scale"] == 1.0
    assert {lora["adapter"] for lora in plan["loras"]} >= {"angles"}
    assert second["plan"] == plan


def test_every_response_of_a_demo_server_says_so_in_a_header(shared_server: ServerProcess) -> None:
    for path in ("/healthz", "/v1/models", "/scenario/v1/models", "/nothing-here"):
        assert httpx.get(shared_server.url + path).headers["reangle-demo"] == "true", path
    # and its operator was told, although the fake engine was chosen outright (--engine fake)
    assert "DEMO MODE: the fake engine's images are MEANINGLESS" in shared_server.full_log()
