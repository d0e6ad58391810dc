"""A catalog entry's defaults as the RunPod and Segmind dialects translate them: a dialect's own default (the
RunPod worker's seed, steps and guidance; Segmind's image_format, seed, quality and front-view pose) is sent
only where the model's entry has none for that field (for a camera axis: by either of its fields); a field
the request gives is always sent. Segmind routes ask one output, as the Segmind API returns one image.

Pure translations against the catalog installed in this process, and in-process HTTP (fake engine) with the
same catalog file."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from reangle.api.app import create_app
from reangle.core.jobs import JobKind
from reangle.core.models import CAMERA_EDIT, INSTRUCTION_EDIT, CameraEditInput
from reangle.core.service import model_spec
from reangle.dialects import runpod_schemas as rp
from reangle.dialects import segmind
from reangle.settings import Settings
from tests.dialects.conftest import png_base64, served_catalog

CATALOG = """
[[model]]
id = "my-instr"
description = "Instruction edits with defaults of their own"
task = "instruction_edit"
engine = "qwen-edit"
base = "Qwen/Qwen-Image-Edit-2511"
defaults = { prompt = "make it pretty", num_inference_steps = 8, guidance_scale = 2.5, seed = 7 }
dialects = { runpod = "ep-instr" }

[[model]]
id = "my-cam"
description = "From above, two JPEGs"
task = "camera_edit"
engine = "qwen-edit"
base = "Qwen/Qwen-Image-Edit-2511"
defaults = { elevation = 60, num_outputs = 2, output_format = "jpeg" }
dialects = { segmind = "my-cam-slug", runpod = "ep-cam" }

[[model]]
id = "my-cam-v"
description = "Camera defaults given by the axes' other fields, and Segmind's other fields"
task = "camera_edit"
engine = "qwen-edit"
base = "Qwen/Qwen-Image-Edit-2511"
defaults = { vertical_angle = 45, zoom = 7, seed = 5, quality = 70, aspect_ratio = "1:1", prompt = "sharp" }
dialects = { segmind = "my-cam-v-slug" }
"""
MOVE = "rotate the camera 90 degrees right"


@pytest.fixture
def catalog_file(tmp_path: Path) -> Iterator[Path]:
    """The catalog file, served by this process while the test runs."""
    with served_catalog(CATALOG, tmp_path) as path:
        yield path


@pytest.fixture
def http(tmp_path: Path, catalog_file: Path) -> Iterator[TestClient]:
    """An in-process server of the fake engine, serving the catalog (installed as `reangle serve` does)."""
    data, cache = tmp_path / "data", tmp_path / "cache"
    settings = Settings(engine="fake", data_dir=data, auth="off", cache_dir=cache, catalog_file=catalog_file)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        yield client


def validated(model: str, native: dict[str, Any]) -> dict[str, Any]:
    dumped: dict[str, Any] = model_spec(model).validate(JobKind.EDIT, native).model_dump()
    return dumped


def pose_of(model: str, native: dict[str, Any]) -> tuple[int, int, float]:
    checked = model_spec(model).validate(JobKind.EDIT, native)
    assert isinstance(checked, CameraEditInput)
    pose = checked.pose()
    return pose.azimuth_deg, pose.elevation_deg, pose.distance_factor


# RunPod ----------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("catalog_file")
def test_runpod_sends_no_worker_default_over_the_catalog_s() -> None:
    plan = rp.translate({"input": {"image": png_base64()}}, "my-instr")
    (native,) = plan.inputs
    for name in ("prompt", "seed", "num_inference_steps", "guidance_scale"):
        assert name not in native
    got = validated("my-instr", native)
    assert (got["prompt"], got["num_inference_steps"], got["guidance_scale"], got["seed"]) == (
        "make it pretty",
        8,
        2.5,
        7,
    )


@pytest.mark.usefixtures("catalog_file")
def test_runpod_request_values_still_win_over_the_catalog_s() -> None:
    body = {"input": {"image": png_base64(), "prompt": "add a hat", "seed": 1, "num_inference_steps": 2}}
    (native,) = rp.translate(body, "my-instr").inputs
    assert (native["prompt"], native["seed"], native["num_inference_steps"]) == ("add a hat", 1, 2)
    assert "guidance_scale" not in native
    body = {"input": {"images": [png_base64(), png_base64()], "prompt": ["a", "b"]}}
    plan = rp.translate(body, "my-instr")
    assert plan.batch
    assert [item["prompt"] for item in plan.inputs] == ["a", "b"]
    assert all("seed" not in item for item in plan.inputs)


@pytest.mark.usefixtures("catalog_file")
def test_runpod_keeps_the_worker_defaults_where_the_catalog_has_none() -> None:
    (native,) = rp.translate({"input": {"image": png_base64(), "azimuth": 90}}, "my-cam").inputs
    assert (native["seed"], native["num_inference_steps"], native["guidance_scale"]) == (42, 4, 1.0)
    assert native["prompt"] == ""
    assert pose_of("my-cam", native) == (90, 60, 1.0)  # the catalog's elevation, the request's azimuth
    (shipped,) = rp.translate({"input": {"image": png_base64(), "prompt": None}}, CAMERA_EDIT).inputs
    assert {key: shipped[key] for key in ("prompt", "seed", "num_inference_steps", "guidance_scale")} == {
        "prompt": "",
        "seed": 42,
        "num_inference_steps": 4,
        "guidance_scale": 1.0,
    }


def test_runpod_runsync_on_a_catalog_endpoint_runs_the_catalog_s_defaults(http: TestClient) -> None:
    answer = http.post("/runpod/v2/ep-instr/runsync", json={"input": {"image": png_base64()}})
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "COMPLETED", answer.text
    job = http.get(f"/v1/jobs/{answer.json()['id']}").json()
    given = job["input"]
    assert (given["prompt"], given["num_inference_steps"], given["guidance_scale"], given["seed"]) == (
        "make it pretty",
        8,
        2.5,
        7,
    )


# Segmind ---------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("catalog_file")
def test_segmind_catalog_slug_sends_only_the_named_axes_and_no_default_over_the_catalog_s() -> None:
    parsed = segmind.translate({"prompt": MOVE, "image_1": png_base64()}, segmind.slug_model("my-cam-slug"))
    assert parsed.model == "my-cam"
    native = parsed.input
    assert "output_format" not in native
    assert "elevation" not in native
    assert (native["azimuth"], native["distance"]) == (90, 1.0)  # named; an axis the catalog leaves alone
    assert native["seed"] == segmind.DEFAULT_SEED
    assert native["quality"] == 95
    assert pose_of("my-cam", native) == (90, 60, 1.0)
    assert validated("my-cam", native)["output_format"] == "jpeg"


@pytest.mark.usefixtures("catalog_file")
def test_segmind_catalog_defaults_by_an_axis_s_other_field_and_of_other_fields() -> None:
    parsed = segmind.translate({"prompt": MOVE, "image_1": png_base64()}, "my-cam-v")
    native = parsed.input
    for name in ("elevation", "distance", "seed", "quality", "aspect_ratio", "prompt"):
        assert name not in native, name
    assert native["output_format"] == "webp"
    got = validated("my-cam-v", native)
    assert (got["seed"], got["quality"], got["aspect_ratio"], got["prompt"]) == (5, 70, "1:1", "sharp")
    own = pose_of("my-cam-v", {"images": [png_base64()], "azimuth": 90})  # the catalog's elevation and zoom
    assert pose_of("my-cam-v", native) == own
    assert own[1:] != (0, 1.0)
    body = {
        "prompt": "view from above, zoom out, add a hat",
        "image_1": png_base64(),
        "seed": 3,
        "quality": 50,
        "aspect_ratio": "16:9",
        "image_format": "png",
    }
    native = segmind.translate(body, "my-cam-v").input
    assert (native["seed"], native["quality"], native["aspect_ratio"], native["output_format"]) == (
        3,
        50,
        "16:9",
        "png",
    )
    assert native["prompt"] == "add a hat"
    assert "elevation" in native
    assert "distance" in native
    assert native["azimuth"] == 0  # not named and no catalog default: the front view, as before
    assert validated("my-cam-v", native)["vertical_angle"] is None  # the request's axis wins


@pytest.mark.usefixtures("catalog_file")
def test_segmind_asks_one_output_over_a_catalog_default_of_several() -> None:
    native = segmind.translate({"prompt": MOVE, "image_1": png_base64()}, "my-cam").input
    assert native["num_outputs"] == 1
    assert validated("my-cam", native)["num_outputs"] == 1
    shipped = segmind.translate({"prompt": MOVE, "image_1": png_base64()})
    assert shipped.model == CAMERA_EDIT
    assert "num_outputs" not in shipped.input
    assert "num_outputs" not in segmind.translate({"prompt": "add a hat", "image_1": png_base64()}).input
    assert segmind.translate({"prompt": "add a hat", "image_1": png_base64()}).model == INSTRUCTION_EDIT


def test_segmind_catalog_slug_answers_the_catalog_s_format_and_one_image(http: TestClient) -> None:
    body = {"prompt": MOVE, "image_1": png_base64()}
    answer = http.post("/segmind/v1/my-cam-slug", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/jpeg"
    assert answer.content[:3] == b"\xff\xd8\xff"

    queued = http.post("/segmind/v2/my-cam-slug", json=body)
    assert queued.status_code == 200, queued.text
    request_id = queued.json()["request_id"]
    deadline = time.monotonic() + 30
    while (result := http.get(f"/segmind/v2/requests/{request_id}")).json()["status"] != "COMPLETED":
        assert result.status_code == 200, result.text
        assert time.monotonic() < deadline, result.text
        time.sleep(0.05)
    assert isinstance(result.json()["output"], str)
    job = http.get(f"/v1/jobs/{request_id}").json()
    assert [asset["mime_type"] for asset in job["output"]["assets"]] == ["image/jpeg"]
    assert (job["input"]["elevation"], job["input"]["azimuth"], job["input"]["output_format"]) == (
        60,
        90,
        "jpeg",
    )
