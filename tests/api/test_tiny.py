"""End to end over HTTP on the `tiny` engine: the real diffusers pipeline and LoRAs, on CPU, offline."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from reangle.client import Health
from tests.api.conftest import KEY_A, ServerFactory, download, edit_input, submit, succeeded, upload

pytestmark = pytest.mark.tiny


def test_a_camera_edit_runs_on_the_tiny_pipeline(serve: ServerFactory) -> None:
    server = serve(engine="tiny", quantize="fp8", fuse_loras="default")
    options_line = (
        "engine options: attention_backend=native compile=off quantize=fp8 fuse_loras=default"
        " reference_cache=8"
    )
    assert options_line in server.log()
    with server.client(KEY_A) as api:
        health = api.get("/healthz").json()
        assert (health["engine"], health["demo"], health["device"]) == ("tiny", True, "cpu")
        assert health["options"] == {
            "attention_backend": "native",
            "compile": "off",
            "quantize": "fp8",
            "fuse_loras": "default",
            "reference_cache": 8,
        }
        assert Health.model_validate(health).options["reference_cache"] == 8  # the SDK reads it as a number
        asset = upload(api)
        job = submit(api, edit_input(asset["id"], width=64, height=48, acceleration="high"))
        done = succeeded(api, job["id"], timeout=120)
        [output] = done["output"]["assets"]
        assert (output["width"], output["height"], output["seed"]) == (64, 48, 7)
        response = download(output["url"])
        assert response.status_code == 200
        image = Image.open(io.BytesIO(response.content))
        image.load()
        assert (image.format, image.size) == ("PNG", (64, 48))
