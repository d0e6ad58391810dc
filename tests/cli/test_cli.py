from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from reangle.cli.main import main
from tests.conftest import image_bytes, make_image


def reangle(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would, in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "reangle", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        check=False,
    )


def test_poses_prints_96_distinct_prompts(capsys):  # type: ignore[no-untyped-def]
    assert main(["poses"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 96 == len(set(lines))
    assert lines[0].startswith("<sks> front view low-angle shot")
    assert all(line.startswith("<sks> ") for line in lines)


def test_output_piped_into_a_reader_that_stops_early_ends_quietly() -> None:
    """`reangle poses | head -1`: the reader has gone before the output is written; no traceback."""
    process = subprocess.Popen(
        [sys.executable, "-m", "reangle", "poses"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None
    assert process.stderr is not None
    process.stdout.close()  # before the command, still importing, writes anything
    errors = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141
    assert errors == ""


def test_pose_json_is_exactly_the_documented_object(capsys):  # type: ignore[no-untyped-def]
    assert main(["pose", "--horizontal-angle", "90", "--vertical-angle", "30", "--zoom", "8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "azimuth": "right side view",
        "azimuth_deg": 90,
        "elevation": "elevated shot",
        "elevation_deg": 30,
        "distance": "close-up",
        "prompt": "<sks> right side view elevated shot close-up",
    }


def test_pose_defaults_to_front_eye_level_medium(capsys):  # type: ignore[no-untyped-def]
    assert main(["pose", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["prompt"] == "<sks> front view eye-level shot medium shot"


def test_snapped_flags_and_text(capsys):  # type: ignore[no-untyped-def]
    assert main(["pose", "--azimuth", "350", "--elevation", "-25", "--distance", "1.4"]) == 0
    assert capsys.readouterr().out.strip() == "<sks> front view low-angle shot medium shot"
    assert main(["pose", "--text", "rotate the camera 90 degrees to the right", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["azimuth"] == "right side view"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--horizontal-angle", "10", "--azimuth", "45"], "--horizontal-angle or --azimuth"),
        (["--zoom", "3", "--distance", "1.0"], "--zoom or --distance"),
        (["--zoom", "11"], "--zoom"),
        (["--text", "back view", "--zoom", "3"], "either --text or pose flags"),
        (["--horizontal-angle", "abc"], "argument --horizontal-angle: not a number: 'abc'"),
    ],
)
def test_bad_pose_flags_exit_2_with_one_line(capsys, args, message):  # type: ignore[no-untyped-def]
    try:
        code = main(["pose", *args])
    except SystemExit as exc:  # argparse's own errors exit from inside parse_args
        code = int(exc.code or 0)
    assert code == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_help_and_import_do_not_import_torch():
    probe = (
        "import sys, contextlib, io\n"
        "import reangle\n"
        "from reangle.cli.main import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['edit', '--help'])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'diffusers', 'transformers')))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.jpg"
    path.write_bytes(image_bytes(make_image(160, 120), "JPEG"))
    return path


def test_dry_run_reports_the_plan_without_loading_a_model(tmp_path):  # type: ignore[no-untyped-def]
    photo = tmp_path / "photo_1920x1080.jpg"
    make_image(1920, 1080).save(photo)
    args = [
        "edit",
        str(photo),
        "--horizontal-angle",
        "90",
        "--dry-run",
        "--json",
        "-o",
        str(tmp_path / "o.png"),
    ]
    probe = (
        "import sys\n"
        "from reangle.cli.main import main\n"
        f"code = main({args!r})\n"
        "print('torch' in sys.modules, file=sys.stderr)\n"
        "raise SystemExit(code)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "False"
    plan = json.loads(result.stdout)
    assert (plan["width"], plan["height"], plan["steps"]) == (1376, 768, 4)
    assert plan["prompt"].startswith("<sks> right side view")
    assert plan["true_cfg_scale"] == 1.0
    assert plan["loras"] == [
        {"adapter": "lightning_4step", "weight": 1.0},
        {"adapter": "angles", "weight": 1.0},
    ]
    assert plan["seed"] is None
    assert not (tmp_path / "o.png").exists()


@pytest.mark.tiny
def test_tiny_edit_is_reproducible_and_seeds_differ(photo, tmp_path, capsys):  # type: ignore[no-untyped-def]
    common = [str(photo), "--engine", "tiny", "--horizontal-angle", "90", "--width", "64", "--height", "48"]
    first = reangle("edit", *common, "--seed", "7", "-o", str(tmp_path / "a.png"))
    assert first.returncode == 0, first.stderr
    assert "random-weight demo model" in first.stderr
    assert "Loading pipeline components" not in first.stderr
    with Image.open(tmp_path / "a.png") as out:
        assert (out.format, out.size) == ("PNG", (64, 48))
    # again with seed 7, in another process (this one: a second fresh interpreter would only import torch
    # again), and a second output (seed 8) beside it
    again = main(["edit", *common, "--seed", "7", "--num-outputs", "2", "-o", str(tmp_path / "b.png")])
    assert again == 0, capsys.readouterr().err
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b-0.png").read_bytes()
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "b-1.png").read_bytes()


@pytest.mark.tiny
def test_several_outputs_are_numbered_and_json_reports_them(photo, tmp_path, capsys):  # type: ignore[no-untyped-def]
    out = tmp_path / "out.webp"
    code = main(
        [
            "edit",
            str(photo),
            "--engine",
            "tiny",
            "--num-outputs",
            "2",
            "--seed",
            "5",
            "--json",
            "-o",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert [o["path"] for o in report["outputs"]] == [
        str(tmp_path / "out-0.webp"),
        str(tmp_path / "out-1.webp"),
    ]
    assert [o["seed"] for o in report["outputs"]] == [5, 6]
    for o in report["outputs"]:
        with Image.open(o["path"]) as image:
            assert image.format == "WEBP"


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda d, p: [str(d / "missing.png")], "input file not found"),
        (lambda d, p: [str(_write(d / "notes.jpg", b"not an image at all"))], "is not an image"),
        (lambda d, p: [str(_write(d / "cut.jpg", p.read_bytes()[:500]))], "truncated"),
        (lambda d, p: [str(p), "--num-outputs", "9"], "--num-outputs must be between 1 and 4"),
        (lambda d, p: [str(p), "--width", "64", "--height", "48"], "--width must be between 256 and 2048"),
        (lambda d, p: [str(p), "--zoom", "-1"], "--zoom must be between 0 and 10"),
        (lambda d, p: [str(p), "--engine", "turbo"], "invalid choice: 'turbo'"),
        (lambda d, p: [str(p), str(p), str(p), str(p)], "1 to 3 input images"),
        (lambda d, p: [str(p), "--quality", "0"], "--quality must be between 1 and 100"),
    ],
)
def test_bad_edit_input_exits_2_with_one_line_and_no_traceback(photo, tmp_path, capsys, make_args, message):  # type: ignore[no-untyped-def]
    try:
        code = main(["edit", *make_args(tmp_path, photo), "--dry-run", "-o", str(tmp_path / "out.png")])
    except SystemExit as exc:  # argparse's own errors exit from inside parse_args
        code = int(exc.code or 0)
    assert code == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["edit", "generate"])
def test_the_real_model_without_a_gpu_is_refused_before_anything_loads(  # type: ignore[no-untyped-def]
    photo, tmp_path, capsys, monkeypatch, command
):
    monkeypatch.setattr("reangle.cli.edit.cuda_available", lambda: False)
    monkeypatch.setattr("reangle.engine.qwen.QwenEngine.load", lambda self: pytest.fail("loaded the model"))
    given = str(photo) if command == "edit" else "a red bicycle"
    assert main([command, given, "-o", str(tmp_path / "out.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("reangle: error: the qwen engine needs a CUDA GPU, and this machine has none (")
    assert "--engine tiny" in err
    assert "REANGLE_DEVICE=cpu" in err
    assert len(err.strip().splitlines()) == 1


def test_unknown_output_suffix_is_a_clear_error(photo, tmp_path, capsys):  # type: ignore[no-untyped-def]
    assert main(["edit", str(photo), "--dry-run", "-o", str(tmp_path / "out.bmp")]) == 2
    assert "cannot tell the image format" in capsys.readouterr().err


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_serve_with_a_model_that_cannot_load_says_so_in_one_line(tmp_path, capsys, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("REANGLE_OFFLINE", "true")
    monkeypatch.setenv("REANGLE_MODEL", str(tmp_path / "no-model"))
    monkeypatch.setenv("REANGLE_AUTH", "off")
    # no LoRAs: they are looked for first, and these are not in this machine's hub cache
    for lora in ("LIGHTNING_4STEP_LORA", "LIGHTNING_8STEP_LORA", "ANGLES_LORA"):
        monkeypatch.setenv(f"REANGLE_{lora}", "")
    assert main(["serve", "--engine", "qwen", "--data-dir", str(tmp_path / "data")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "reangle: error: cannot load the model" in err
    assert "REANGLE_MODEL" in err  # the hint says what to do


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REANGLE_SERVER", raising=False)
    monkeypatch.setenv("REANGLE_FAKE_STEP_SECONDS", "0")


@pytest.mark.usefixtures("no_server")
@pytest.mark.parametrize("command", ["edit", "generate"])
def test_an_output_folder_as_o_is_refused_before_the_run(photo, tmp_path, capsys, command):  # type: ignore[no-untyped-def]
    first = str(photo) if command == "edit" else "a cat"
    assert main([command, first, "--engine", "fake", "-o", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        f"reangle: error: -o {tmp_path} is a folder; give a file name in it, such as {tmp_path / 'out.png'}\n"
    )


@pytest.mark.usefixtures("no_server")
def test_an_output_that_cannot_be_written_is_one_line(photo, tmp_path, capsys):  # type: ignore[no-untyped-def]
    (tmp_path / "out-1.png").mkdir()
    argv = ["edit", str(photo), "--engine", "fake", "--num-outputs", "2", "-o", str(tmp_path / "out.png")]
    assert main(argv) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("reangle: error")]
    assert lines == [f"reangle: error: cannot write {tmp_path / 'out-1.png'}: Is a directory"]


@pytest.mark.usefixtures("no_server")
def test_the_fake_engine_notice_says_no_model_runs(photo, tmp_path, capsys):  # type: ignore[no-untyped-def]
    assert main(["edit", str(photo), "--engine", "fake", "-o", str(tmp_path / "o.png")]) == 0
    err = capsys.readouterr().err
    assert "reangle: fake engine: images come from test pictures" in err
    assert "random-weight" not in err


@pytest.mark.parametrize(
    "lora",
    ["https://example.com/style.safetensors:abc", "style.safetensors:x"],
)
def test_a_lora_scale_that_is_not_a_number_is_refused(photo, capsys, lora):  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as exited:
        main(["edit", str(photo), "--dry-run", "--lora", lora])
    assert exited.value.code == 2
    assert f"the scale of {lora!r} is not a number" in capsys.readouterr().err


@pytest.mark.parametrize(
    "lora",
    [
        "https://host:8080/a.safetensors",
        "https://host:8080",
        "https://example.com/lora",
        "id:a:b",
        "https://example.com/models/lora:latest",
        "https://civitai.com/api/download/models/123?token=ab:cd",
        "https://h.example/a.safetensors?se=2025-01-01T00:00:00Z",
    ],
)
def test_loras_whose_colons_are_no_scale_are_taken(lora):  # type: ignore[no-untyped-def]
    from reangle.cli.prompt_args import lora_arg

    assert lora_arg(lora).scale == 1.0


@pytest.mark.parametrize(
    ("command", "flags"),
    [
        ("edit", ["--webhook-url", "https://example.com/hook"]),
        ("edit", ["--run-timeout", "60"]),
        ("generate", ["--total-timeout", "60"]),
        ("generate", ["--webhook-url", "https://example.com/hook", "--webhook-event", "progress"]),
    ],
)
def test_job_flags_without_a_server_are_refused_not_ignored(
    photo, tmp_path, capsys, monkeypatch, command, flags
):  # type: ignore[no-untyped-def]
    monkeypatch.delenv("REANGLE_SERVER", raising=False)
    given = str(photo) if command == "edit" else "a red bicycle"
    assert main([command, given, *flags, "--engine", "fake", "-o", str(tmp_path / "out.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"reangle: error: {flags[0]} is for a job on a server: give --server URL")
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.png").exists()
