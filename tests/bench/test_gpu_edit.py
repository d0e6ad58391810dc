"""bench/gpu_edit.py and bench/device/run.sh, run as a user runs them (subprocesses), on the tiny config; the
refusal that needs torch's word on CUDA is checked in process."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
GPU_EDIT = ROOT / "bench" / "gpu_edit.py"
RUN_SH = ROOT / "bench" / "device" / "run.sh"
COMPILED = "compile+compile_backend=eager"
SIZE = 32
TINY = (
    *("--config", "tiny", "--device", "cpu", "--size", str(SIZE)),
    *("--runs", "2", "--warmup", "1", "--edits", "2"),
)
#: The tiny model's ops are too small to gain from threads, and on a loaded machine spinning OpenMP threads
#: make each edit many times slower.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
#: Phases every variant reports, besides step_1..step_4.
PHASES = (
    "decode_input",
    "plan",
    "lora_select",
    "preprocess",
    "text_encode",
    "text_encoder_forward",
    "vae_encode",
    "denoise",
    "vae_decode",
    "postprocess",
    "edit",
    "encode_png",
    "end_to_end",
    "end_to_end_clean",
)


def run(command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env=None if env is None else os.environ | env,
    )


def gpu_edit(*args: str) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, str(GPU_EDIT), *args], env=ONE_THREAD)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """baseline, an attention backend, FP8 and compiled blocks (the eager backend: no C++ compiler needed),
    with an orbit for fp8 and a profile of math; the baseline output saved."""
    out = tmp_path_factory.mktemp("sweep")
    result = gpu_edit(
        *TINY,
        *("--variants", f"fp8,math,baseline,{COMPILED}", "--orbit", "fp8", "--profile", "math"),
        *("--json-out", str(out / "sweep.json"), "--save-reference", str(out / "baseline.png")),
    )
    return result, out


def variant(report: dict[str, Any], name: str) -> dict[str, Any]:
    (record,) = (record for record in report["variants"] if record["name"] == name)
    return record


@pytest.mark.tiny
def test_sweep_measures_each_variant_on_the_same_weights(sweep: tuple[Any, Path]) -> None:
    result, out = sweep
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "sweep.json").read_text())

    assert (report["bench"], report["schema"], report["config"]) == ("gpu_edit", 2, "tiny")
    assert report["meaningful_for_speed"] is False
    assert report["device"]["device"] == "cpu"
    assert {"torch", "diffusers", "transformers", "peft", "pydantic", "reangle"} <= set(report["versions"])
    assert report["settings"]["variants"] == ["baseline", "fp8", "math", COMPILED]  # baseline: the reference
    assert (report["settings"]["size"], report["settings"]["steps"]) == (SIZE, 4)

    fingerprints = []
    for record in report["variants"]:
        name = record["name"]
        assert "error" not in record, record.get("traceback")
        phases = record["phases_s"]
        for phase in (*PHASES, "step_1", "step_2", "step_3", "step_4"):
            # every timed run repeats the warm-up's LoRAs, so the engine switches none
            assert (phases[phase]["median"] > 0) is (phase != "lora_select"), (name, phase)
            assert phases[phase]["n"] == 2, (name, phase)
            assert record["medians_s"][phase] == phases[phase]["median"]
        assert phases["end_to_end"]["median"] >= phases["edit"]["median"] >= phases["denoise"]["median"]
        # another angle of the same picture reuses its reference latents; each timed run is a new picture
        same_picture = record["same_picture_phases_s"]
        assert same_picture["end_to_end"]["n"] == same_picture["denoise"]["n"] == 2, name
        assert "vae_encode" not in same_picture, name
        assert record["step_median_s"] > 0
        assert record["text_tokens"] > 0
        assert record["memory"]["peak_edit_gib"] is None  # no CUDA memory on a CPU run
        assert record["throughput"]["edits"] == 2
        assert record["throughput"]["edits_per_minute"] > 0
        assert record["setup_s"]["load_s"] >= record["setup_s"]["build_s"] > 0
        assert all(count > 0 for count in record["params"].values())
        assert record["same_weights_as_first_variant"] is True
        assert record["pipeline_released"] is True, name  # nothing of it stays under the next variant
        assert record["quality"]["repeat"]["psnr_db"] == "inf", name  # the same seed twice, same pixels
        assert record["quality"]["output_stats"]["std"] > 0
        fingerprints.append(record["weights_fingerprint"])
    assert all(fingerprint == fingerprints[0] for fingerprint in fingerprints[1:])
    assert fingerprints[0]["transformer_sum_squares"] > 0


@pytest.mark.tiny
def test_each_variant_runs_its_options_and_is_compared_with_the_baseline(sweep: tuple[Any, Path]) -> None:
    result, out = sweep
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "sweep.json").read_text())
    baseline, fp8, math_attention, compiled = (
        variant(report, name) for name in ("baseline", "fp8", "math", COMPILED)
    )

    assert baseline["engine_options"]["quantize"] == "none"
    assert baseline["engine_options"]["attention_backend"] == "native"
    assert fp8["engine_options"]["quantize"] == "fp8"
    assert math_attention["engine_options"]["attention_backend"] == "_native_math"
    assert compiled["engine_options"]["compile"] == "blocks"
    assert baseline["fp8_report"] is None
    assert fp8["fp8_report"]["quantized"] > 0
    assert baseline["warmup_s"] is None
    assert compiled["warmup_s"] > 0  # load() ran the warm-up edit of compiled blocks

    assert baseline["quality"]["vs_baseline"]["psnr_db"] == "inf"
    assert baseline["quality"]["vs_baseline"]["max_abs_diff"] == 0
    changed = fp8["quality"]["vs_baseline"]
    assert isinstance(changed["psnr_db"], float)
    assert math.isfinite(changed["psnr_db"])
    assert changed["psnr_db"] > 20
    assert changed["max_abs_diff"] > 0
    assert 0 < changed["differing_pixels"] <= 1
    assert changed["reference"] == "variant baseline of this run"
    assert "psnr_db" in math_attention["quality"]["vs_baseline"]
    assert "psnr_db" in compiled["quality"]["vs_baseline"]

    with Image.open(out / "baseline.png") as saved:
        assert saved.size == (SIZE, SIZE)


@pytest.mark.tiny
def test_orbit_runs_edit_views_and_the_loop_of_edits(sweep: tuple[Any, Path]) -> None:
    result, out = sweep
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "sweep.json").read_text())
    assert report["settings"]["orbit"] == ["fp8"]
    assert "orbit" not in variant(report, "baseline")

    orbit = variant(report, "fp8")["orbit"]
    assert orbit["views"] == 8
    for kind in ("edit_views", "loop"):
        assert orbit[kind]["end_to_end"]["median"] >= orbit[kind]["edit"]["median"] > 0, kind
    assert len(orbit["views_vs_loop"]) == 8
    assert orbit["views_vs_loop_min"] in orbit["views_vs_loop"]


@pytest.mark.tiny
def test_profile_writes_the_op_table_and_a_trace_with_the_phases_labelled(sweep: tuple[Any, Path]) -> None:
    result, out = sweep
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "sweep.json").read_text())
    assert report["settings"]["profile"] == ["math"]
    assert "profile" not in variant(report, "baseline")

    profile = variant(report, "math")["profile"]
    assert profile["error"] == "the profile holds no edit label or no device kernels"  # a CPU run: no kernels
    table = (out / profile["table"]).read_text()
    assert "bench_edit" in table
    assert "aten::" in table
    trace = json.loads(gzip.decompress((out / profile["trace"]).read_bytes()))
    labels = {event["name"] for event in trace["traceEvents"] if event.get("cat") == "user_annotation"}
    assert {"bench_edit", "decode_input", "text_encode", "vae_encode", "vae_decode", "encode_png"} <= labels


@pytest.mark.tiny
def test_sweep_prints_markdown_tables_to_paste(sweep: tuple[Any, Path]) -> None:
    result, _ = sweep
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("| variant | settings |")))
    rows = lines[header + 2 : header + 6]
    assert [row.split(" | ")[0] for row in rows] == ["| `baseline`", "| `fp8`", "| `math`", f"| `{COMPILED}`"]
    assert rows[0].endswith("| inf (identical) |")
    assert rows[1].startswith("| `fp8` | quantize=fp8 |")
    assert any(line.startswith("| variant | 8 views, edit_views s |") for line in lines)
    assert "say nothing about speed" in result.stdout


@pytest.mark.tiny
def test_run_sh_installs_carried_wheels_and_compares_with_an_earlier_baseline(
    sweep: tuple[Any, Path], tmp_path: Path
) -> None:
    result, first = sweep
    assert result.returncode == 0, result.stderr[-3000:]
    wheels, site, out = tmp_path / "wheels", tmp_path / "site", tmp_path / "out"
    wheels.mkdir()
    make_wheel(wheels, "reangle_bench_probe", "1.0")

    # one timed run and no warm-up: the output compared does not depend on them; run.sh is what is tested
    arguments = [*TINY, "--runs", "1", "--warmup", "0", "--edits", "0", "--variants", "fp8"]
    device_run = run(
        ["bash", str(RUN_SH), *arguments, "--reference", str(first / "baseline.png")],
        env=ONE_THREAD
        | {"PYTHON": sys.executable, "WHEELS": str(wheels), "SITE": str(site), "OUT": str(out)},
    )

    assert device_run.returncode == 0, device_run.stderr[-3000:] + device_run.stdout[-3000:]
    assert (site / "reangle_bench_probe" / "__init__.py").is_file()
    assert f"diffusers {version('diffusers')} from" in device_run.stdout
    assert {path.name for path in out.iterdir()} == {"gpu_edit.json", "gpu_edit.log"}  # no baseline ran
    assert (out / "gpu_edit.log").read_text() in device_run.stdout
    report = json.loads((out / "gpu_edit.json").read_text())
    assert report["config"] == "tiny"  # the caller's --config wins over run.sh's default
    earlier = json.loads((first / "sweep.json").read_text())
    fp8 = variant(report, "fp8")["quality"]["vs_baseline"]
    assert fp8["reference"] == str(first / "baseline.png")
    assert fp8["psnr_db"] == variant(earlier, "fp8")["quality"]["vs_baseline"]["psnr_db"]
    assert variant(report, "fp8")["same_weights_as_reference"] is True  # the fingerprint saved in the PNG


def make_wheel(directory: Path, name: str, version: str) -> Path:
    """A pure-Python wheel holding one empty package, as pip expects one (metadata, tag, hashed record)."""
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": b"",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [f"{path},sha256={digest(data)},{len(data)}" for path, data in files.items()]
    files[f"{info}/RECORD"] = "".join(f"{line}\n" for line in [*record, f"{info}/RECORD,,"]).encode()
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


def digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def version(package: str) -> str:
    from importlib.metadata import version as installed

    return installed(package)


def test_an_unknown_variant_is_a_usage_error() -> None:
    result = gpu_edit("--config", "tiny", "--device", "cpu", "--variants", "baseline,fp9")
    assert result.returncode == 2
    assert "unknown variant 'fp9'" in result.stderr
    assert "fp8" in result.stderr  # the names to choose from


def test_an_impossible_option_value_is_a_usage_error() -> None:
    result = gpu_edit("--config", "tiny", "--device", "cpu", "--variants", "compile=always")
    assert result.returncode == 2
    assert "compile=always is not one of auto, off, blocks" in result.stderr


def test_a_profile_of_a_variant_not_swept_is_a_usage_error() -> None:
    result = gpu_edit("--config", "tiny", "--device", "cpu", "--variants", "baseline", "--profile", "fp8")
    assert result.returncode == 2
    assert "--profile: fp8 is not among --variants (baseline)" in result.stderr


def test_gpu_edit_real_without_cuda_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # in process: torch is imported here already, where a new process would spend seconds importing it to
    # see the missing GPU (the other usage errors above are refused before that import, in a new process)
    monkeypatch.syspath_prepend(str(GPU_EDIT.parent))
    from gpu_edit import main

    with pytest.raises(SystemExit) as exited:
        main(["--config", "real", "--device", "cpu"])
    assert exited.value.code == 2
    stderr = capsys.readouterr().err
    assert "CUDA" in stderr
    assert "--config tiny" in stderr
