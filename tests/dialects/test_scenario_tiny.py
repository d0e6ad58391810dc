"""End to end through the tiny engine (the real diffusers pipeline and LoRA loading, random weights, CPU):
the real scenario-sdk client uploads, runs a camera edit, polls it to success and downloads a PNG."""

from __future__ import annotations

import io
import time

import httpx
import pytest
from PIL import Image
from scenario_sdk import Scenario

from tests.dialects.conftest import API_KEY, RunningServer, png_base64

JOB_TIMEOUT_S = 180.0


@pytest.mark.tiny
def test_camera_edit_through_the_tiny_engine(tiny_server: RunningServer) -> None:
    client = Scenario(
        base_url=f"{tiny_server.url}/scenario/v1",
        api_key="label",
        api_secret=API_KEY,
        max_retries=0,
        _strict_response_validation=True,
    )
    asset_id = client.assets.upload(name="in.png", image=png_base64()).asset.id
    body = {"images": [asset_id], "horizontalAngle": 180, "zoom": 9, "numInferenceSteps": 2, "seed": 1}
    job_id = client.generate.run_model("model_qwen-edit-multiangle-2511", body=body).job.job_id
    deadline = time.monotonic() + JOB_TIMEOUT_S
    job = client.jobs.retrieve(job_id).job
    while job.status not in ("success", "failure", "canceled"):
        assert time.monotonic() < deadline, f"job {job_id} did not finish"
        time.sleep(0.2)
        job = client.jobs.retrieve(job_id).job
    assert job.status == "success", job.metadata.error
    assert job.metadata.asset_ids is not None
    assert len(job.metadata.asset_ids) == 1

    asset = client.assets.retrieve(job.metadata.asset_ids[0]).asset
    image = Image.open(io.BytesIO(httpx.get(asset.url).content))
    image.load()
    assert image.format == "PNG"
    assert image.size == (asset.metadata.width, asset.metadata.height)
    assert image.size == (160, 96)  # the tiny engine's 128x128-pixel default area at the input's 3:2
