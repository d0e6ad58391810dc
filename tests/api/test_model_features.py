"""Issue 14's features through the native API and the dialects, on one server (fake engine and its fake
rewriter): text-to-image jobs and image sets, `rewrite_prompt` recorded in the outputs, request LoRAs by URL
(Segmind's `lora_2_url` too), an operator's catalog model with its own LoRA and prompt template, and a model
that is unavailable without its setting."""

from __future__ import annotations

import functools
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from reangle.core.models import CAMERA_EDIT, INSTRUCTION_EDIT, TEXT_TO_IMAGE
from tests.api.conftest import (
    KEY_A,
    ServerProcess,
    assert_error,
    edit_input,
    server_env,
    submit,
    succeeded,
    upload,
)
from tests.engine.lora_support import write_lora
from tests.pg_cluster import free_port

CUSTOM_MODEL = """
[[model]]
id = "product-shot"
name = "Product shot"
description = "product photos in the house style"
task = "instruction_edit"
engine = "qwen-edit"
base = "Qwen/Qwen-Image-Edit-2511"
prompt_template = "{prompt}, studio product photo"
defaults = { num_outputs = 2 }
loras = [{ path = "house-style.safetensors", scale = 0.8, name = "house style" }]

[[model]]
id = "turntable"
description = "product turntables in the house style"
task = "camera_edit"
engine = "qwen-edit"
base = "Qwen/Qwen-Image-Edit-2511"
prompt_template = "{prompt}, turntable photo"
dialects = { segmind = "turntable-slug", runpod = "turntable-ep", openai = "turntable-oa", fal = "tt-fal" }
"""


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def lora_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An HTTP server with LoRA files: /style.safetensors matches the model, /alien.safetensors does not."""
    root = tmp_path_factory.mktemp("lora-site")
    write_lora(root / "style.safetensors", {"transformer_blocks.0.attn.to_q": (16, 16)}, seed=3)
    write_lora(root / "alien.safetensors", {"down_blocks.0.resnets.0.conv1": (16, 16)}, seed=4)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietFiles, directory=str(root)))
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("features")
    write_lora(
        root / "loras" / "house-style.safetensors", {"transformer_blocks.1.attn.to_k": (16, 16)}, seed=5
    )
    (root / "models.toml").write_text(CUSTOM_MODEL)
    env = server_env(
        cache_dir,
        allow_private_urls="true",
        lora_dir=str(root / "loras"),
        catalog_file=str(root / "models.toml"),
    )
    process = ServerProcess(data_dir=root / "data", env=env).start()
    yield process
    process.stop()
    process.assert_no_server_errors()


@pytest.fixture
def api(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client(KEY_A) as client:
        yield client


def plans(job: dict[str, Any]) -> list[dict[str, Any]]:
    return [asset["plan"] for asset in job["output"]["assets"]]


def test_text_to_image_makes_images_of_the_asked_size(api: httpx.Client) -> None:
    job = submit(
        api, {"prompt": "a lighthouse", "size": "320x192", "num_outputs": 2, "seed": 5}, model=TEXT_TO_IMAGE
    )
    done = succeeded(api, job["id"])
    assert [(a["width"], a["height"], a["seed"]) for a in done["output"]["assets"]] == [
        (320, 192, 5),
        (320, 192, 6),
    ]
    assert all("pose" not in asset for asset in done["output"]["assets"])
    assert plans(done)[0]["prompt"] == "a lighthouse"
    assert "images" not in done["input"]


def test_an_image_set_shares_its_seed_and_gives_each_image_its_shot(api: httpx.Client) -> None:
    body = {
        "prompt": "a red bicycle",
        "image_set": True,
        "set_prompts": ["from the front", "from above"],
        "seed": 3,
    }
    done = succeeded(api, submit(api, body | {"width": 64, "height": 64}, model=TEXT_TO_IMAGE)["id"])
    assert [
        (plan["prompt"], asset["seed"])
        for plan, asset in zip(plans(done), done["output"]["assets"], strict=True)
    ] == [
        ("a red bicycle. from the front", 3),
        ("a red bicycle. from above", 3),
    ]


def test_bad_text_to_image_input_names_its_field(api: httpx.Client) -> None:
    for body, field in (
        ({"prompt": "x", "size": "3K"}, "size"),
        ({"prompt": "x", "set_prompts": ["a"]}, "set_prompts"),
    ):
        response = api.post("/v1/jobs", json={"model": TEXT_TO_IMAGE, "input": body})
        assert_error(response, 422, "invalid_input", field)


def test_a_rewrite_is_recorded_beside_the_prompt_the_model_ran(api: httpx.Client) -> None:
    asset = upload(api)
    job = submit(api, edit_input(asset["id"], prompt="add snow", rewrite_prompt=True))
    (plan,) = plans(succeeded(api, job["id"]))
    assert plan["rewrite"]["original_prompt"] == "add snow"
    assert plan["rewrite"]["rewritten"] is True
    assert plan["rewrite"]["prompt"] == "add snow (precisely, for 64x48)"
    assert (
        plan["prompt"] == "<sks> right side view eye-level shot medium shot add snow (precisely, for 64x48)"
    )
    refused = submit(
        api,
        {"images": [asset["id"]], "prompt": "[refuse] paint it", "rewrite_prompt": True},
        model=INSTRUCTION_EDIT,
    )
    (plan,) = plans(succeeded(api, refused["id"]))
    assert (plan["rewrite"]["rewritten"], plan["rewrite"]["fallback_reason"]) == (False, "refused")
    assert plan["prompt"] == "[refuse] paint it"


def test_a_request_lora_by_url_is_applied_and_a_foreign_one_fails_the_job_clearly(
    api: httpx.Client, lora_site: str
) -> None:
    asset = upload(api)
    job = submit(
        api, edit_input(asset["id"], loras=[{"url": f"{lora_site}/style.safetensors", "scale": 0.5}])
    )
    (plan,) = plans(succeeded(api, job["id"]))
    extra = [lora for lora in plan["loras"] if lora["adapter"].startswith("lora_")]
    assert [lora["weight"] for lora in extra] == [0.5]
    alien = submit(api, edit_input(asset["id"], loras=[{"url": f"{lora_site}/alien.safetensors"}]))
    failed = succeeded_or_failed(api, alien["id"])
    assert failed["status"] == "failed"
    assert "input.loras.0.url" in failed["error"]["message"]


def test_segmind_extra_lora_urls_run_with_the_camera_model(
    api: httpx.Client, server: ServerProcess, lora_site: str
) -> None:
    from tests.api.conftest import data_url, png

    body = {
        "prompt": "rotate 90 degrees right",
        "image_1": data_url(png()),
        "lora_2_url": f"{lora_site}/style.safetensors",
        "base64": True,
    }
    response = httpx.post(
        f"{server.url}/segmind/v1/qwen-image-edit-plus-multiple-angle",
        json=body,
        headers={"x-api-key": KEY_A},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    listed = api.get("/v1/jobs", params={"limit": 1}).json()["data"][0]
    (plan,) = plans(listed)
    assert [lora["weight"] for lora in plan["loras"] if lora["adapter"].startswith("lora_")] == [1.0]


def test_an_operators_model_is_listed_everywhere_and_runs_its_lora_and_template(
    api: httpx.Client, server: ServerProcess
) -> None:
    models = {model["id"]: model for model in api.get("/v1/models").json()["data"]}
    custom = models["product-shot"]
    assert (custom["task"], custom["available"], custom["name"]) == ("instruction_edit", True, "Product shot")
    assert custom["input_schema"]["properties"]["num_outputs"]["default"] == 2
    scenario = httpx.get(f"{server.url}/scenario/v1/models", auth=("label", KEY_A)).json()
    assert "model_product-shot" in {model["id"] for model in scenario["models"]}
    asset = upload(api)
    job = submit(
        api, {"images": [asset["id"]], "prompt": "a red mug", "width": 64, "height": 64}, model="product-shot"
    )
    done = succeeded(api, job["id"])
    assert len(done["output"]["assets"]) == 2
    plan = plans(done)[0]
    assert plan["prompt"] == "a red mug, studio product photo"
    assert [lora["weight"] for lora in plan["loras"] if lora["adapter"].startswith("lora_")] == [0.8]


def test_each_dialect_runs_an_operators_model_by_the_id_the_catalog_gives_it(
    api: httpx.Client, server: ServerProcess
) -> None:
    from tests.api.conftest import data_url, png

    image = data_url(png())
    calls = {
        "segmind": (
            "/segmind/v1/turntable-slug",
            {"prompt": "make it glossy", "image_1": image, "base64": True},
            {"x-api-key": KEY_A},
        ),
        "runpod": (
            "/runpod/v2/turntable-ep/runsync",
            {"input": {"image": image, "azimuth": 90, "prompt": "make it glossy"}},
            {"Authorization": f"Bearer {KEY_A}"},
        ),
    }
    for dialect, (path, body, headers) in calls.items():
        answer = httpx.post(f"{server.url}{path}", json=body, headers=headers, timeout=30)
        assert answer.status_code == 200, (dialect, answer.text)
        job = api.get("/v1/jobs", params={"limit": 1}).json()["data"][0]
        assert job["model"] == "turntable", dialect
        assert plans(job)[0]["prompt"].endswith("make it glossy, turntable photo"), dialect
    for name in ("turntable-oa", "tt-fal"):
        answer = httpx.post(
            f"{server.url}/openai/v1/images/edits",
            files={"image": ("in.png", png(), "image/png")},
            data={"prompt": "make it glossy", "model": name, "horizontal_angle": "90"},
            headers={"Authorization": f"Bearer {KEY_A}"},
            timeout=30,
        )
        assert answer.status_code == 200, (name, answer.text)
        assert api.get("/v1/jobs", params={"limit": 1}).json()["data"][0]["model"] == "turntable"
    openai_models = httpx.get(f"{server.url}/openai/v1/models", headers={"Authorization": f"Bearer {KEY_A}"})
    assert "turntable-oa" in {model["id"] for model in openai_models.json()["data"]}


def test_a_model_missing_its_setting_is_listed_unavailable_and_refused(api: httpx.Client) -> None:
    wan = api.get("/v1/models/wan-2.7-image").json()
    assert wan["available"] is False
    response = api.post("/v1/jobs", json={"model": "wan-2.7-image", "input": {"prompt": "a cat"}})
    assert_error(response, 422, "invalid_input", "model wan-2.7-image", "REANGLE_DASHSCOPE_API_KEY")


def test_models_list_a_catalog_lora_by_its_name_never_its_file(api: httpx.Client) -> None:
    listing = api.get("/v1/models")
    custom = {model["id"]: model for model in listing.json()["data"]}["product-shot"]
    assert custom["loras"] == [{"name": "house style", "id": None, "scale": 0.8}]
    assert "house-style.safetensors" not in listing.text


def test_a_lora_id_this_server_does_not_register_is_refused_at_submit(api: httpx.Client) -> None:
    asset = upload(api)
    body = {"model": CAMERA_EDIT, "input": edit_input(asset["id"], loras=[{"id": "nope"}])}
    response = api.post("/v1/jobs", json=body)
    assert_error(response, 422, "invalid_input", "input.loras.0.id", "this server registers no LoRA ids")


def succeeded_or_failed(api: httpx.Client, job_id: str) -> dict[str, Any]:
    from tests.api.conftest import wait_job

    return wait_job(api, job_id, lambda job: job["status"] in ("succeeded", "failed"))


@pytest.mark.parametrize(
    ("entry", "line"),
    [
        (
            'loras = [{ url = "https://example.com/a.safetensors", scale = 9 }]',
            'model "bad-one": loras[0].scale:',
        ),
        (
            'base = "someone/Other-Edit-Model"',
            'model "bad-one": base: the qwen-edit engine runs one base model',
        ),
    ],
)
def test_a_bad_catalog_entry_stops_serve_with_one_line(
    tmp_path: Path, cache_dir: Path, entry: str, line: str
) -> None:
    catalog = tmp_path / "models.toml"
    fields = {"base": '"Qwen/Qwen-Image-Edit-2511"'}
    key, _, value = entry.partition(" = ")
    fields[key] = value
    body = "\n".join(f"{name} = {text}" for name, text in fields.items())
    head = '[[model]]\nid = "bad-one"\ndescription = "x"\ntask = "instruction_edit"\nengine = "qwen-edit"'
    catalog.write_text(f"{head}\n{body}\n")
    env = server_env(cache_dir, catalog_file=str(catalog), data_dir=str(tmp_path / "data"))
    done = subprocess.run(
        [sys.executable, "-m", "reangle", "serve", "--engine", "fake", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    errors = [text for text in done.stderr.splitlines() if text.startswith("reangle: error:")]
    assert len(errors) == 1, done.stderr
    assert f"catalog {catalog}" in errors[0]
    assert line in errors[0]
