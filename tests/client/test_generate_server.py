"""The SDK's `generate`, `rewrite_prompt` and `loras`, and `reangle generate/edit --server`, against a real
`reangle serve` (fake engine, its fake rewriter) whose DashScope endpoint is the local stand-in, with LoRA
files on a local HTTP server; and a job's time limits and webhook through the SDK."""

from __future__ import annotations

import asyncio
import functools
import io
import json
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import save_file

import reangle
from reangle.cli.main import main
from reangle.client import WAN_IMAGE_MODEL, BadRequestError, JobFailed, Lora, ProgressEvent, TimeLimits
from tests.api.conftest import KEY_A, ServerProcess, png, server_env
from tests.dashscope_standin import RESULT_SIZE, Behavior, DashScopeStandIn
from tests.webhook_receiver import Receiver

VENDOR_KEY = "sk-vendor"


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def _write_lora(path: Path, module: str) -> None:
    rng = np.random.default_rng(1)
    tensors = {
        f"transformer.{module}.lora_A.weight": rng.normal(size=(2, 16)).astype(np.float32),
        f"transformer.{module}.lora_B.weight": rng.normal(size=(16, 2)).astype(np.float32),
    }
    save_file(tensors, str(path))


@pytest.fixture(scope="module")
def lora_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """/style.safetensors matches the model's layers, /alien.safetensors does not."""
    root = tmp_path_factory.mktemp("lora-site")
    _write_lora(root / "style.safetensors", "transformer_blocks.0.attn.to_q")
    _write_lora(root / "alien.safetensors", "down_blocks.0.resnets.0.conv1")
    site = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietFiles, directory=str(root)))
    threading.Thread(target=site.serve_forever, args=(0.02,), daemon=True).start()
    yield f"http://127.0.0.1:{site.server_address[1]}"
    site.shutdown()
    site.server_close()


@pytest.fixture(scope="module")
def standin() -> Iterator[DashScopeStandIn]:
    vendor = DashScopeStandIn(Behavior(api_key=VENDOR_KEY, pending_polls=0, running_polls=0))
    yield vendor
    vendor.close()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, cache_dir: Path, standin: DashScopeStandIn
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("sdk-generate")
    env = server_env(
        cache_dir,
        allow_private_urls="true",  # the LoRA site and the stand-in's results are on 127.0.0.1
        dashscope_api_key=VENDOR_KEY,
        dashscope_base_url=standin.base_url,
    )
    process = ServerProcess(data_dir=root / "data", env=env).start()
    yield process
    process.stop()
    process.assert_no_server_errors()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[reangle.Client]:
    with reangle.Client(server.url, KEY_A, timeout=30) as client:
        yield client


def test_generate_makes_images_of_the_asked_size_with_progress_and_a_recorded_rewrite(
    client: reangle.Client,
) -> None:
    progress: list[float] = []

    def on_progress(event: object) -> None:
        if isinstance(event, ProgressEvent):
            progress.append(event.progress)

    job = client.generate(
        "a lighthouse", size="64x48", num_outputs=2, seed=4, rewrite_prompt=True, on_progress=on_progress
    )
    assert [(a.width, a.height, a.seed) for a in job.assets] == [(64, 48, 4), (64, 48, 5)]
    assert progress[-1] == 1.0
    assert job.rewrite is not None
    assert (job.rewrite.original_prompt, job.rewrite.rewritten) == ("a lighthouse", True)
    assert job.assets[0].plan is not None
    assert job.assets[0].plan["prompt"] == job.rewrite.prompt
    with Image.open(io.BytesIO(client.download(job.assets[1]))) as picture:
        assert picture.size == (64, 48)


def test_an_image_set_shares_its_seed_and_gives_each_image_its_shot(client: reangle.Client) -> None:
    job = client.generate("a red bicycle", set_prompts=["from the front", "from above"], size="32x32", seed=2)
    shots = [(asset.seed, asset.plan["prompt"] if asset.plan else None) for asset in job.assets]
    assert shots == [(2, "a red bicycle. from the front"), (2, "a red bicycle. from above")]


def test_an_edit_runs_a_lora_by_url_and_a_foreign_one_fails_the_job_naming_the_field(
    client: reangle.Client, lora_site: str
) -> None:
    asset = client.upload(png())
    job = client.edit(
        asset, horizontal_angle=90, loras=[Lora(url=f"{lora_site}/style.safetensors", scale=0.5)]
    )
    plan = job.assets[0].plan or {}
    assert [lora["weight"] for lora in plan["loras"] if lora["adapter"].startswith("lora_")] == [0.5]
    with pytest.raises(JobFailed) as failed:
        client.edit(asset, loras=[{"url": f"{lora_site}/alien.safetensors"}])
    error = failed.value.job.error
    assert error is not None
    assert "input.loras.0.url" in error.message


def test_wan_generates_through_the_vendor_from_reference_images(
    client: reangle.Client, standin: DashScopeStandIn
) -> None:
    job = client.generate(
        "the same cat, at the beach",
        model=WAN_IMAGE_MODEL,
        images=[png(256, 256)],
        num_outputs=2,
        size="1K",
        rewrite_prompt=True,
    )
    assert [(asset.width, asset.height) for asset in job.assets] == [RESULT_SIZE, RESULT_SIZE]
    body = standin.creates()[-1].body
    assert isinstance(body, dict)
    content = body["input"]["messages"][0]["content"]
    assert sum(1 for part in content if "image" in part) == 1
    assert job.rewrite is not None
    assert job.rewrite.rewritten
    assert job.rewrite.original_prompt == "the same cat, at the beach"
    assert {"text": job.rewrite.prompt} in content  # the vendor got the rewritten prompt


def test_a_job_past_its_time_limit_fails_timed_out_and_calls_its_webhook_signed_with_the_keys_secret(
    client: reangle.Client,
) -> None:
    receiver = Receiver()
    try:
        with pytest.raises(JobFailed) as failed:  # 100 steps: about 2 s, had it run to its end
            client.edit(
                png(),
                horizontal_angle=90,
                width=64,
                height=64,
                num_inference_steps=100,
                time_limits=TimeLimits(run_s=0.3),
                webhook_url=receiver.url,
            )
        job = failed.value.job
        assert job.error is not None
        assert job.error.code == "timed_out"
        assert job.time_limits == TimeLimits(run_s=0.3)
        assert client.get(job.id).time_limits == TimeLimits(run_s=0.3)
        [request] = receiver.wait_for(1)
        event = request.verified(client.webhook_secret().secret)
        assert isinstance(event, dict)
        assert (event["type"], event["data"]["id"]) == ("job.failed", job.id)
    finally:
        receiver.close()


def test_fields_a_model_does_not_take_are_refused_at_submit(client: reangle.Client) -> None:
    with pytest.raises(BadRequestError) as refused:
        client.generate("a cat", model=WAN_IMAGE_MODEL, negative_prompt="dogs")
    assert refused.value.status_code == 422
    assert "negative_prompt" in refused.value.message


def test_async_generate(server: ServerProcess) -> None:
    async def run() -> list[tuple[int, int]]:
        async with reangle.AsyncClient(server.url, KEY_A, timeout=30) as client:
            job = await client.generate("a fox", size="48x32", seed=1)
            return [(asset.width, asset.height) for asset in job.assets]

    assert asyncio.run(run()) == [(48, 32)]


def test_the_cli_generates_and_edits_with_rewrite_and_lora_on_the_server(
    server: ServerProcess, lora_site: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    connection = ["--server", server.url, "--api-key", KEY_A]
    out = tmp_path / "fox.png"
    argv = [
        "generate",
        "a fox",
        *connection,
        "--size",
        "48x32",
        "-n",
        "2",
        "--rewrite",
        "--json",
        "-o",
        str(out),
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert [(o["width"], o["height"]) for o in report["outputs"]] == [(48, 32), (48, 32)]
    for output in report["outputs"]:
        with Image.open(output["path"]) as picture:
            assert picture.size == (48, 32)
        assert output["plan"]["rewrite"]["original_prompt"] == "a fox"
    assert "reangle: prompt rewritten: a fox (in detail, for no image)" in captured.err
    photo = tmp_path / "photo.png"
    photo.write_bytes(png())
    argv = [
        "edit",
        str(photo),
        *connection,
        "--prompt",
        "add snow",
        "--lora",
        f"{lora_site}/style.safetensors:0.8",
    ]
    assert main([*argv, "--width", "64", "--height", "48", "--json", "-o", str(tmp_path / "snow.png")]) == 0
    (edited,) = json.loads(capsys.readouterr().out)["outputs"]
    assert [lora["weight"] for lora in edited["plan"]["loras"]][-1] == 0.8
    assert (tmp_path / "snow.png").is_file()


def test_the_cli_says_when_the_server_left_its_negative_prompt_out(
    server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["generate", "a fox", "--server", server.url, "--api-key", KEY_A, "--size", "48x32"]
    argv += ["--negative", "blurry", "-o", str(tmp_path / "fox.png")]
    assert main(argv) == 0
    assert "--negative was left out" in capsys.readouterr().err
    assert main([*argv, "--guidance", "2"]) == 0
    assert "--negative was left out" not in capsys.readouterr().err


def test_the_cli_names_its_options_and_follows_the_models_schema_on_the_server(
    server: ServerProcess,
    client: reangle.Client,
    standin: DashScopeStandIn,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    connection = ["--server", server.url, "--api-key", KEY_A]
    out = ["-o", str(tmp_path / "out.png")]
    queued = len(list(client.iter_jobs()))

    def refused(*flags: str) -> str:
        assert main(["generate", "a fox", *connection, *flags, *out]) == 2
        lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("reangle: error: ")]
        assert len(lines) == 1
        return lines[0].removeprefix("reangle: error: ")

    # the server's 422 names input.num_outputs; the CLI names the option that set it
    assert refused("--set", "-n", "9") == "--num-outputs: an image set has 1 to 8 images, not 9"
    assert refused("--set-prompt", "front", "--set-prompt", "back", "-n", "3").startswith(
        "--set-prompt was given 2 times, one image each, but -n/--num-outputs is 3"
    )
    assert refused("--no-thinking") == "--no-thinking: model qwen-image-2512 has no thinking input"
    assert refused("--model", WAN_IMAGE_MODEL, "--set-prompt", "front").startswith(
        "--set-prompt: model wan-2.7-image takes no per-image prompts"
    )
    assert len(list(client.iter_jobs())) == queued

    # Wan's own names for the switches come from the server's description of the model, False included
    argv = ["generate", "a fox", *connection, "--model", WAN_IMAGE_MODEL, "--size", "1K"]
    assert main([*argv, "--no-set", "--no-thinking", "--json", *out]) == 0
    job = client.get(json.loads(capsys.readouterr().out)["job"])
    assert (job.input["image_set_mode"], job.input["thinking_mode"]) == (False, False)
    body = standin.creates()[-1].body
    assert isinstance(body, dict)
    assert body["parameters"]["thinking_mode"] is False
