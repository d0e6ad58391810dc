"""End to end over HTTP on the `tiny` engine: the real diffusers pipeline and LoRAs, on CPU, offline. One
server for the module (a tiny engine takes seconds to load): FP8 blocks, fused default LoRAs, LoRA folder."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from reangle.client import Health
from reangle.core.models import TEXT_TO_IMAGE
from tests.api.conftest import (
    KEY_A,
    ServerProcess,
    download,
    edit_input,
    server_env,
    submit,
    succeeded,
    upload,
)

pytestmark = pytest.mark.tiny


@pytest.fixture(scope="module")
def _tiny_model_built(cache_dir: Path) -> None:
    """The server would build the model into the shared cache inside its start-up time limit, on a loaded
    machine past it; built here, the server only reads it (tests/engine/test_tiny.py tests the build)."""
    from reangle.engine.tiny import TINY_VERSION, ensure_tiny_model

    ensure_tiny_model(cache_dir / f"tiny-v{TINY_VERSION}")


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, cache_dir: Path, _tiny_model_built: None
) -> Iterator[ServerProcess]:
    from reangle.engine.tiny import build_tiny_text_to_image_transformer, write_tiny_lora

    folder = tmp_path_factory.mktemp("tiny-server")
    (folder / "loras").mkdir()
    # the file depends only on the layer shapes, which the edit transformer shares: no text encoder or VAE
    write_tiny_lora(build_tiny_text_to_image_transformer(), folder / "loras" / "mine.safetensors", seed=11)
    settings = {"quantize": "fp8", "fuse_loras": "default", "lora_dir": str(folder / "loras")}
    running = ServerProcess(data_dir=folder / "data", env=server_env(cache_dir, **settings), engine="tiny")
    running.start()
    yield running
    running.stop()
    running.assert_no_server_errors()


def test_a_camera_edit_runs_on_the_tiny_pipeline(server: ServerProcess) -> None:
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
            "lora_gpu_capacity": 4,
            "text_to_image_residency": "auto",
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


def test_text_to_image_a_rewrite_and_a_request_lora_run_on_the_tiny_pipelines(server: ServerProcess) -> None:
    with server.client(KEY_A) as api:
        generated = submit(
            api, {"prompt": "a lighthouse", "width": 64, "height": 48, "seed": 2}, model=TEXT_TO_IMAGE
        )
        [output] = succeeded(api, generated["id"], timeout=120)["output"]["assets"]
        assert (output["width"], output["height"], output["seed"]) == (64, 48, 2)
        asset = upload(api)
        lora = {"path": "mine.safetensors", "scale": 0.5}
        edited = submit(api, edit_input(asset["id"], prompt="add snow", rewrite_prompt=True, loras=[lora]))
        [output] = succeeded(api, edited["id"], timeout=120)["output"]["assets"]
        rewrite = output["plan"]["rewrite"]
        # the tiny Qwen3-VL's random answers are never usable: the real generate path ran and fell back
        assert (rewrite["original_prompt"], rewrite["rewritten"]) == ("add snow", False)
        assert rewrite["fallback_reason"] in ("malformed", "empty", "overlong", "refused")
        assert output["plan"]["prompt"].endswith(" add snow")
        assert [
            lora["weight"] for lora in output["plan"]["loras"] if lora["adapter"].startswith("lora_")
        ] == [0.5]
