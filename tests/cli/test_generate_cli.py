"""`reangle generate`, and `--rewrite` / `--lora` of `reangle edit` and `reangle orbit`: on a server (the
FakeServer of the SDK tests) and in process (the fake engine and its fake rewriter: no torch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import save_file

from reangle.cli.main import main
from reangle.engine.qwen import QwenEngine
from tests.client.fakes import API, API_KEY, FakeServer

SERVER = ("--server", API, "--api-key", API_KEY)
STYLE_URL = "https://example.com/lo:ras/style.safetensors"


@pytest.fixture(autouse=True)
def _fast_fake_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REANGLE_FAKE_STEP_SECONDS", "0.001")


def write_lora(path: Path, module: str) -> Path:
    """A LoRA file (diffusers keys) over one linear layer of the transformer."""
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {
            f"transformer.{module}.lora_A.weight": rng.normal(size=(2, 48)).astype(np.float32),
            f"transformer.{module}.lora_B.weight": rng.normal(size=(48, 2)).astype(np.float32),
        },
        str(path),
    )
    return path


def submitted(fake: FakeServer) -> dict[str, Any]:
    (request,) = fake.requests_to("POST", "/v1/jobs")
    body: dict[str, Any] = json.loads(request.content)
    return body


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("reangle") and ": error: " in line]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# on a server


def test_generate_on_a_server_sends_every_flag_and_writes_numbered_files(
    fake: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "lighthouse.webp"
    code = main(
        [
            "generate",
            "a lighthouse",
            *SERVER,
            "-o",
            str(out),
            "--size",
            "1K",
            "-n",
            "2",
            "--seed",
            "5",
            "--negative",
            "fog",
            "--guidance",
            "4",
            "--quality",
            "70",
            "--rewrite",
            "--lora",
            f"{STYLE_URL}:0.5",
            "--lora",
            "id:house",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert submitted(fake) == {
        "model": "qwen-image-2512",
        "kind": "edit",
        "input": {
            "prompt": "a lighthouse",
            "size": "1K",
            "num_outputs": 2,
            "seed": 5,
            "negative_prompt": "fog",
            "guidance_scale": 4.0,
            "output_format": "webp",
            "quality": 70,
            "rewrite_prompt": True,
            "loras": [{"url": STYLE_URL, "scale": 0.5}, {"id": "house", "scale": 1.0}],
        },
    }
    paths = [tmp_path / "lighthouse-0.webp", tmp_path / "lighthouse-1.webp"]
    assert captured.out.splitlines() == [str(path) for path in paths]
    job = fake.jobs["job_1"]
    assert [path.read_bytes() for path in paths] == [fake.blobs[a["id"]] for a in job["output"]["assets"]]
    assert "reangle: prompt rewritten: a lighthouse (precisely)" in captured.err.splitlines()


def test_generate_an_image_set_with_wan_and_reference_images(
    fake: FakeServer, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["generate", "them at the beach", *SERVER, "--model", "wan-2.7-image", "--image", str(photo)]
    argv += ["--image", "https://example.com/b.jpg", "--set", "-n", "2", "--size", "2K"]
    assert main([*argv, "--no-thinking", "--json", "-o", str(tmp_path / "beach.png")]) == 0
    body = submitted(fake)
    assert body["model"] == "wan-2.7-image"
    assert body["input"] == {
        "prompt": "them at the beach",
        "images": ["asset_1", "https://example.com/b.jpg"],
        "size": "2K",
        "num_outputs": 2,
        "image_set_mode": True,
        "thinking_mode": False,
        "output_format": "png",
    }
    assert fake.blobs["asset_1"] == photo.read_bytes()
    report = json.loads(capsys.readouterr().out)
    assert [Path(o["path"]).name for o in report["outputs"]] == ["beach-0.png", "beach-1.png"]


def test_generate_dry_run_on_a_server_prints_the_job_and_queues_nothing(
    fake: FakeServer, photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["generate", "a cat", *SERVER, "--dry-run", "-n", "3", "--lora", "style.safetensors:0.7"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out) == {
        "model": "qwen-image-2512",
        "kind": "edit",
        "input": {
            "prompt": "a cat",
            "num_outputs": 3,
            "output_format": "png",
            "loras": [{"path": "style.safetensors", "scale": 0.7}],
        },
    }
    assert fake.requests == []


@pytest.mark.parametrize(
    ("model", "flags", "fields"),
    [
        ("qwen-image-2512", ["--set", "-n", "3"], {"num_outputs": 3, "image_set": True}),
        ("qwen-image-2512", ["--no-set"], {"image_set": False}),
        (
            "qwen-image-2512",
            ["--set-prompt", "front", "--set-prompt", "back"],
            {"image_set": True, "set_prompts": ["front", "back"]},
        ),
        ("wan-2.7-image", ["--set", "-n", "3"], {"num_outputs": 3, "image_set_mode": True}),
        ("wan-2.7-image", ["--no-thinking"], {"thinking_mode": False}),
        ("wan-2.7-image", ["--thinking", "--no-set"], {"image_set_mode": False, "thinking_mode": True}),
    ],
)
def test_the_set_and_thinking_fields_are_named_by_the_models_schema_on_the_server(
    fake: FakeServer, model: str, flags: list[str], fields: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["generate", "a cat", *SERVER, "--model", model, "--dry-run", *flags]) == 0
    shown = json.loads(capsys.readouterr().out)["input"]
    assert shown == {"prompt": "a cat", "output_format": "png", **fields}
    # the model's description is read; no job is queued
    assert [(r.method, r.url.path) for r in fake.requests] == [("GET", f"/v1/models/{model}")]


def test_a_server_refusal_of_a_generate_flag_exits_2_with_its_message(
    fake: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["generate", "a cat", *SERVER, "--model", "no-such-model", "-o", str(tmp_path / "o.png")]) == 2
    )
    assert one_error_line(capsys.readouterr().err) == "reangle: error: unknown model 'no-such-model'"


@pytest.mark.parametrize("where", ["server", "in process"])
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--set-prompt", "front", "--set-prompt", "back", "-n", "3"],
            "--set-prompt was given 2 times, one image each, but -n/--num-outputs is 3; leave -n out or "
            "make it 2",
        ),
        (
            ["--set-prompt", "front", "--num-outputs", "2"],
            "--set-prompt was given once, one image each, but -n/--num-outputs is 2; leave -n out or "
            "make it 1",
        ),
        (
            ["--set-prompt", "front", "--no-set"],
            "--set-prompt makes an image set, so it cannot go with --no-set",
        ),
    ],
)
def test_set_prompts_that_disagree_are_a_usage_error_before_anything_is_sent(
    fake: FakeServer,
    where: str,
    flags: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    place = [*SERVER] if where == "server" else ["--engine", "fake", "--size", "32x32"]
    out = tmp_path / "set.png"
    assert main(["generate", "a cat", *place, *flags, "-o", str(out)]) == 2
    assert one_error_line(capsys.readouterr().err) == f"reangle: error: {message}"
    assert fake.requests == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("model", "flags", "message"),
    [
        ("qwen-image-2512", ["--no-thinking"], "--no-thinking: model qwen-image-2512 has no thinking input"),
        ("qwen-image-2512", ["--thinking"], "--thinking: model qwen-image-2512 has no thinking input"),
        (
            "wan-2.7-image",
            ["--set-prompt", "front"],
            "--set-prompt: model wan-2.7-image takes no per-image prompts; ask for a set with --set and -n",
        ),
        ("qwen-image-edit-2511", ["--set"], "--set: model qwen-image-edit-2511 makes no image sets"),
    ],
)
def test_a_switch_the_models_schema_lacks_is_refused_naming_the_flag_before_a_job_is_queued(
    fake: FakeServer,
    model: str,
    flags: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["generate", "a cat", *SERVER, "--model", model, *flags, "-o", str(tmp_path / "o.png")]
    assert main(argv) == 2
    assert one_error_line(capsys.readouterr().err) == f"reangle: error: {message}"
    assert fake.requests_to("POST", "/v1/jobs") == []


@pytest.mark.parametrize(
    ("flags", "refusal", "message"),
    [
        (
            ["-n", "9"],
            "input.num_outputs: model qwen-image-2512 makes at most 4 images per job",
            "--num-outputs: model qwen-image-2512 makes at most 4 images per job",
        ),
        (
            ["--lora", "id:a"],
            "input.loras.0.id: no LoRA named 'a' is registered",
            "--lora: no LoRA named 'a' is registered",
        ),
        (
            ["--lora", "id:a", "--lora", "id:b"],
            "input.loras.1.id: no LoRA named 'b' is registered",
            "--lora #2: no LoRA named 'b' is registered",
        ),
        (
            ["--set-prompt", "front", "--set-prompt", "back"],
            "input.set_prompts.1: String should have at most 2000 characters",
            "--set-prompt #2: String should have at most 2000 characters",
        ),
        (["--no-set"], "input.image_set: boom", "--no-set: boom"),
        (["--negative", "fog"], "input.negative_prompt: too long", "--negative: too long"),
        (["--seed", "1"], "input.webhook_secret: unknown field", "input.webhook_secret: unknown field"),
    ],
)
def test_a_field_the_server_refuses_is_named_as_the_option_that_set_it(
    fake: FakeServer,
    flags: list[str],
    refusal: str,
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake.refusal = refusal
    assert main(["generate", "a cat", *SERVER, *flags, "-o", str(tmp_path / "o.png")]) == 2
    assert one_error_line(capsys.readouterr().err) == f"reangle: error: {message}"


def test_edit_and_orbit_name_their_own_options_in_refusals_and_failed_jobs(
    fake: FakeServer, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.refusal = "input.images.1 is 10x10 pixels; this model takes sides of 240 to 8000"
    argv = ["edit", str(photo), str(photo), *SERVER, "-o", str(tmp_path / "e.png")]
    assert main(argv) == 2
    assert one_error_line(capsys.readouterr().err) == (
        "reangle: error: INPUT #2 is 10x10 pixels; this model takes sides of 240 to 8000"
    )
    fake.refusal = None
    fake.outcome = "failed"
    fake.job_error = "input.loras.0.url: the LoRA matches none of the model's layers"
    argv = ["orbit", str(photo), *SERVER, "--lora", STYLE_URL, "-o", str(tmp_path / "views")]
    assert main(argv) == 1
    line = one_error_line(capsys.readouterr().err)
    assert " failed: engine_error: --lora: the LoRA matches none of the model's layers" in line


def test_no_rewrite_and_no_set_are_sent_as_false_on_a_server(
    fake: FakeServer, photo: Path, tmp_path: Path
) -> None:
    argv = ["generate", "a cat", *SERVER, "--no-rewrite", "--no-set", "-o", str(tmp_path / "c.png")]
    assert main(argv) == 0
    assert submitted(fake)["input"] == {
        "prompt": "a cat",
        "image_set": False,
        "rewrite_prompt": False,
        "output_format": "png",
    }
    fake.requests.clear()
    assert main(["edit", str(photo), *SERVER, "--no-rewrite", "-o", str(tmp_path / "e.png")]) == 0
    assert submitted(fake)["input"]["rewrite_prompt"] is False


def test_edit_and_orbit_on_a_server_send_rewrite_and_loras(
    fake: FakeServer, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["edit", str(photo), *SERVER, "--prompt", "[refuse] add snow", "--rewrite", "--lora", "id:a:2"]
    assert main([*argv, "-o", str(tmp_path / "e.png")]) == 0
    sent = submitted(fake)["input"]
    assert (sent["rewrite_prompt"], sent["loras"]) == (True, [{"id": "a", "scale": 2.0}])
    err = capsys.readouterr().err
    assert "reangle: prompt kept as given (refused: the fake refuses [refuse])" in err.splitlines()
    fake.requests.clear()
    argv = ["orbit", str(photo), *SERVER, "--azimuths", "0,90", "--lora", f"{STYLE_URL}:-1", "--json"]
    assert main([*argv, "-o", str(tmp_path / "views")]) == 0
    sent = submitted(fake)["input"]
    assert sent["loras"] == [{"url": STYLE_URL, "scale": -1.0}]
    assert "rewrite_prompt" not in sent
    assert sorted(path.name for path in (tmp_path / "views").iterdir())[:2] == [
        "contact-sheet.png",
        "turntable.webp",
    ]


@pytest.mark.parametrize(
    ("lora", "message"),
    [
        ("https://example.com/a.safetensors:5", "must be between -4 and 4, got 5"),
        ("id:", "names no LoRA"),
    ],
)
def test_a_bad_lora_flag_is_a_usage_error(
    fake: FakeServer, lora: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["generate", "a cat", *SERVER, "--lora", lora, "-o", "o.png"])
    assert exited.value.code == 2
    assert message in one_error_line(capsys.readouterr().err)
    assert fake.requests == []


# in process


def test_generate_in_process_makes_the_asked_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.jpg"
    argv = ["generate", "a lighthouse", "--engine", "fake", "--size", "64x48", "-n", "2", "--seed", "7"]
    assert main([*argv, "--json", "-o", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(o["width"], o["height"], o["seed"], o["prompt"]) for o in report["outputs"]] == [
        (64, 48, 7, "a lighthouse"),
        (64, 48, 8, "a lighthouse"),
    ]
    assert "rewrite" not in report
    for output in report["outputs"]:
        with Image.open(output["path"]) as image:
            assert (image.format, image.size) == ("JPEG", (64, 48))
    assert [Path(o["path"]).name for o in report["outputs"]] == ["out-0.jpg", "out-1.jpg"]


def test_an_image_set_in_process_shares_one_seed_and_adds_each_shot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["generate", "a red bicycle.", "--engine", "fake", "--width", "32", "--height", "32"]
    argv += ["--set-prompt", "from the front", "--set-prompt", "from above", "--rewrite", "--json"]
    assert main([*argv, "-o", str(tmp_path / "set.png")]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    outputs = report["outputs"]
    assert [o["prompt"] for o in outputs] == [
        "a red bicycle. (in detail, for no image). from the front",
        "a red bicycle. (in detail, for no image). from above",
    ]
    assert outputs[0]["seed"] == outputs[1]["seed"]
    assert report["rewrite"]["original_prompt"] == "a red bicycle."
    assert report["rewrite"]["rewritten"] is True
    assert "reangle: prompt rewritten: a red bicycle. (in detail, for no image)" in captured.err


def test_a_lora_file_in_process_runs_after_the_models_own(
    tmp_path: Path, photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    style = write_lora(tmp_path / "style.safetensors", "transformer_blocks.0.attn.to_q")
    argv = ["generate", "a cat", "--engine", "fake", "--size", "32x32", "--lora", f"{style}:0.5", "--json"]
    assert main([*argv, "-o", str(tmp_path / "cat.png")]) == 0
    generated = json.loads(capsys.readouterr().out)
    argv = ["edit", str(photo), "--engine", "fake", "--width", "32", "--height", "32", "--prompt", "add snow"]
    argv += ["--rewrite", "--lora", f"{style}:-2", "--json", "-o", str(tmp_path / "e.png")]
    assert main(argv) == 0
    edited = json.loads(capsys.readouterr().out)
    (adapter,) = {lora["adapter"] for lora in generated["loras"] if lora["adapter"].startswith("lora_")}
    assert generated["loras"] == [
        {"adapter": "lightning_4step", "weight": 1.0},
        {"adapter": adapter, "weight": 0.5},
    ]
    assert edited["loras"][-1] == {"adapter": adapter, "weight": -2.0}
    assert edited["prompt"] == "<sks> front view eye-level shot medium shot add snow (precisely, for 64x48)"
    assert edited["rewrite"]["prompt"] == "add snow (precisely, for 64x48)"


def test_an_operators_text_to_image_model_runs_in_process_with_its_template_and_lora(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_lora(tmp_path / "loras" / "ink.safetensors", "transformer_blocks.1.attn.to_k")
    (tmp_path / "models.toml").write_text(
        "[[model]]\n"
        'id = "ink-sketch"\nname = "Ink sketch"\ndescription = "ink sketches"\n'
        'task = "text_to_image"\nengine = "qwen-image"\nbase = "Qwen/Qwen-Image-2512"\n'
        'prompt_template = "{prompt}, ink sketch"\n'
        'loras = [{ path = "ink.safetensors", scale = 0.6 }]\n'
    )
    monkeypatch.setenv("REANGLE_CATALOG_FILE", str(tmp_path / "models.toml"))
    monkeypatch.setenv("REANGLE_LORA_DIR", str(tmp_path / "loras"))
    argv = ["generate", "a fox", "--model", "ink-sketch", "--engine", "fake", "--size", "32x32", "--json"]
    assert main([*argv, "-o", str(tmp_path / "fox.png")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["outputs"][0]["prompt"] == "a fox, ink sketch"
    assert [lora["weight"] for lora in report["loras"]] == [1.0, 0.6]


def test_a_rewrite_the_models_template_would_take_past_the_limit_is_dropped_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "models.toml").write_text(
        "[[model]]\n"
        'id = "ink-sketch"\nname = "Ink sketch"\ndescription = "ink sketches"\n'
        'task = "text_to_image"\nengine = "qwen-image"\nbase = "Qwen/Qwen-Image-2512"\n'
        'prompt_template = "{prompt}, ink sketch"\n'
    )
    monkeypatch.setenv("REANGLE_CATALOG_FILE", str(tmp_path / "models.toml"))
    words = "w" * 1985  # 1,997 characters in the template: the fake rewriter's longer words would not fit
    argv = ["generate", words, "--model", "ink-sketch", "--engine", "fake", "--size", "32x32", "--rewrite"]
    assert main([*argv, "--json", "-o", str(tmp_path / "fox.png")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["outputs"][0]["prompt"] == f"{words}, ink sketch"
    assert (report["rewrite"]["fallback_reason"], report["rewrite"]["rewritten"]) == ("overlong", False)
    assert "more than the model's limit of 2,000" in report["rewrite"]["detail"]


def test_no_set_and_no_rewrite_turn_off_a_local_models_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "models.toml").write_text(
        "[[model]]\n"
        'id = "set-maker"\nname = "Set maker"\ndescription = "sets by default"\n'
        'task = "text_to_image"\nengine = "qwen-image"\nbase = "Qwen/Qwen-Image-2512"\n'
        "defaults = { image_set = true, num_outputs = 2, rewrite_prompt = true }\n"
    )
    monkeypatch.setenv("REANGLE_CATALOG_FILE", str(tmp_path / "models.toml"))
    argv = ["generate", "a fox", "--model", "set-maker", "--engine", "fake", "--dry-run", "--json"]
    assert main(argv) == 0
    by_default = json.loads(capsys.readouterr().out)
    assert [plan["prompt"] for plan in by_default["plans"]] == [
        "a fox. wide establishing shot",
        "a fox. medium shot",
    ]
    assert by_default["rewrite_prompt"] is True
    assert main([*argv, "--no-set", "--no-rewrite"]) == 0
    turned_off = json.loads(capsys.readouterr().out)
    assert [(plan["prompt"], plan["num_outputs"]) for plan in turned_off["plans"]] == [("a fox", 2)]
    assert "rewrite_prompt" not in turned_off


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "wan-2.7-image"], "wan-2.7-image runs through a vendor's API on a reangle server"),
        (["--model", "qwen-image-edit-2511"], "use `reangle edit` for it"),
        (["--image", "a.png"], "--image: models that take reference images"),
        (["--no-thinking"], "--no-thinking: model qwen-image-2512 has no thinking input"),
        (["--set-prompt", "a", "--set-prompt", "b", "-n", "1"], "--set-prompt was given 2 times"),
        (["--set", "-n", "9"], "--num-outputs: an image set has 1 to 8 images, not 9"),
        (["--size", "3K"], "size must be 1K, 2K or WxH"),
        (["--lora", "missing.safetensors"], "--lora: LoRA file not found: missing.safetensors"),
        (["--quality", "0"], "--quality must be between 1 and 100"),
    ],
)
def test_bad_generate_input_in_process_exits_2_with_one_line(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["generate", "a cat", "--engine", "fake", *argv, "-o", str(tmp_path / "o.png")]) == 2
    assert message in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "o.png").exists()


def test_a_lora_that_matches_no_layer_of_the_model_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alien = write_lora(tmp_path / "alien.safetensors", "down_blocks.0.resnets.0.conv1")
    argv = ["generate", "a cat", "--engine", "fake", "--size", "32x32", "--lora", str(alien)]
    assert main([*argv, "-o", str(tmp_path / "o.png")]) == 2
    assert "matches none of the model's layers" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "o.png").exists()


@pytest.mark.tiny
@pytest.mark.parametrize("command", ["edit", "generate"])
def test_a_lora_file_for_another_model_is_refused_before_the_model_loads(
    command: str,
    tmp_path: Path,
    photo: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def load(*_args: object) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(QwenEngine, "load", load)
    monkeypatch.setattr(QwenEngine, "load_text_to_image", load)
    alien = write_lora(tmp_path / "alien.safetensors", "down_blocks.0.resnets.0.conv1")
    words = [str(photo), "--prompt", "add snow"] if command == "edit" else ["a cat"]
    argv = [command, *words, "--engine", "tiny", "--lora", str(alien), "-o", str(tmp_path / "o.png")]
    assert main(argv) == 2
    error = one_error_line(capsys.readouterr().err)
    assert f"--lora: the LoRA path {str(alien)!r}" in error
    assert "matches none of the model's layers" in error
    assert not (tmp_path / "o.png").exists()


def test_generate_help_and_dry_run_load_no_torch(tmp_path: Path) -> None:
    probe = (
        "import sys, contextlib, io, json\n"
        "from reangle.cli.main import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['generate', '--help'])\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    code = main(['generate', 'a cat', '--engine', 'fake', '--dry-run', '--json', '--set',\n"
        "                 '-n', '2', '--rewrite', '--lora', 'id:ink:0.5'])\n"
        "heavy = sorted(m for m in sys.modules\n"
        "               if m.split('.')[0] in ('torch', 'diffusers', 'transformers'))\n"
        "print(json.dumps({'code': code, 'heavy': heavy, 'dry_run': json.loads(out.getvalue())}))\n"
    )
    env = os.environ | {"REANGLE_LORAS": '{"ink": "/loras/ink.safetensors"}'}
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60, env=env
    )
    probed = json.loads(result.stdout)
    assert (probed["code"], probed["heavy"]) == (0, [])
    dry_run = probed["dry_run"]
    assert [plan["prompt"] for plan in dry_run["plans"]] == [
        "a cat. wide establishing shot",
        "a cat. medium shot",
    ]
    assert [plan["seed"] for plan in dry_run["plans"]] == [None, None]
    assert (dry_run["rewrite_prompt"], dry_run["request_loras"]) == (True, [{"id": "ink", "scale": 0.5}])


@pytest.mark.parametrize(
    ("flags", "noted"),
    [([], True), (["--guidance", "2.5"], False), (["--acceleration", "none"], False)],
)
def test_a_negative_prompt_left_out_without_true_cfg_is_said(
    capsys: pytest.CaptureFixture[str], flags: list[str], noted: bool
) -> None:
    argv = ["generate", "a fox", "--negative", "blurry", "--engine", "fake", "--dry-run", "--json", *flags]
    assert main(argv) == 0
    captured = capsys.readouterr()
    [plan] = json.loads(captured.out)["plans"]
    assert (plan["negative_prompt"] is None) == noted
    assert ("--negative was left out: it is used only with true CFG" in captured.err) == noted
