"""The benchmark scripts, run as a user runs them (subprocesses) with tiny counts, report what they say."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
GPU_EDIT = ROOT / "bench" / "gpu_edit.py"
SERVER_OVERHEAD = ROOT / "bench" / "server_overhead.py"
#: Phases gpu_edit.py reports for every run, besides step_1..step_N.
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


def run_script(script: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.tiny
def test_gpu_edit_tiny_reports_every_phase(tmp_path: Path) -> None:
    out = tmp_path / "gpu_edit.json"
    result = run_script(
        GPU_EDIT,
        *("--config", "tiny", "--device", "cpu", "--runs", "1", "--warmup", "1", "--size", "64"),
        *("--edits", "2", "--json-out", str(out)),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "say nothing about speed" in result.stdout
    report: dict[str, Any] = json.loads(out.read_text())

    assert report["bench"] == "gpu_edit"
    assert report["config"] == "tiny"
    assert report["meaningful_for_speed"] is False
    assert report["device"]["device"] == "cpu"
    assert {"torch", "diffusers", "transformers", "peft", "reangle"} <= set(report["versions"])
    settings = report["settings"]
    assert (settings["size"], settings["steps"], settings["acceleration"]) == (64, 4, "high")
    assert settings["text_tokens"] > 0
    assert set(settings["loras"]) == {"lightning", "angles"}

    phases = report["phases_s"]
    steps = [f"step_{k}" for k in range(1, 5)]
    for name in (*PHASES, *steps):
        assert name in phases, f"missing phase {name}"
        assert phases[name]["median"] > 0, name
        assert report["medians_s"][name] == phases[name]["median"]
    assert phases["end_to_end"]["median"] >= phases["edit"]["median"]
    assert phases["edit"]["median"] >= phases["denoise"]["median"]
    assert report["step_median_s"] > 0

    assert set(report["memory"]) == {
        "weights_gib",
        "peak_load_gib",
        "peak_edit_gib",
        "peak_edit_reserved_gib",
    }
    assert report["memory"]["peak_edit_gib"] is None  # no CUDA memory on a CPU run
    assert report["throughput"]["edits"] == 2
    assert report["throughput"]["edits_per_minute"] > 0
    assert all(count > 0 for count in report["params"].values())


def test_gpu_edit_real_without_cuda_is_a_usage_error() -> None:
    result = run_script(GPU_EDIT, "--config", "real", "--device", "cpu", timeout=60)
    assert result.returncode == 2
    assert "CUDA" in result.stderr
    assert "--config tiny" in result.stderr


def test_server_overhead_reports_latency_and_reads(tmp_path: Path) -> None:
    out = tmp_path / "overhead.json"
    result = run_script(
        SERVER_OVERHEAD,
        *("--clients", "2", "--jobs", "4", "--seconds", "0.5", "--warmup", "1", "--json-out", str(out)),
        timeout=90,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report: dict[str, Any] = json.loads(out.read_text())

    assert report["bench"] == "server_overhead"
    assert report["machine"]["cpu_count"] >= 1
    assert set(report["latency"]) == {"wait_c1", "wait_c2", "sse_c1", "sse_c2"}
    for name, row in report["latency"].items():
        assert row["errors"] == 0, (name, row["first_errors"])
        assert row["count"] >= 1, name
        assert 0 < row["p50_ms"] <= row["p99_ms"] < 30_000, name
        assert row["per_second"] > 0, name
        assert 0 < row["overhead_p50_ms"] <= row["p50_ms"], name
    assert report["latency"]["wait_c2"]["count"] == 4
    assert "run_s" in report["latency"]["wait_c1"]["server_timings_p50_ms"]
    assert set(report["status_reads"]) == {"httpx", "raw"}
    for kind, row in report["status_reads"].items():
        assert row["errors"] == 0, (kind, row["first_errors"])
        assert row["count"] > 0, kind
        assert row["per_second"] > 0, kind
        assert row["p50_ms"] > 0, kind
        assert {"server_cpu_s", "server_cpu_util", "server_cpu_ms_per_op", "client_cpu_ms_per_op"} <= set(row)
