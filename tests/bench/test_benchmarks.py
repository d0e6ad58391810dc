"""The server and PNG benchmarks, run as a user runs them (subprocesses) with tiny counts.

The GPU benchmark's tests are in test_gpu_edit.py and test_gpu_variants.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SERVER_OVERHEAD = ROOT / "bench" / "server_overhead.py"


def run_script(script: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


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


def test_png_encode_times_both_encoders_on_both_pictures() -> None:
    result = run_script(ROOT / "bench" / "png_encode.py", "--size", "48", "--rounds", "2", timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [
        line.split(" | ")
        for line in result.stdout.splitlines()
        if line.startswith("| ") and "---" not in line
    ]
    assert [(row[0], row[1]) for row in rows[1:]] == [
        ("| photo-like", "Pillow"),
        ("| photo-like", "strips"),
        ("| noise", "Pillow"),
        ("| noise", "strips"),
    ]
    noise_sizes = {row[1]: int(row[4].rstrip(" |")) for row in rows[3:]}
    assert noise_sizes["strips"] == noise_sizes["Pillow"]  # noise does not compress: 48*48*3 bytes either way


def test_png_encode_refuses_a_size_below_one() -> None:
    result = run_script(ROOT / "bench" / "png_encode.py", "--size", "0")
    assert result.returncode == 2
    assert "--size and --rounds must be at least 1" in result.stderr


def test_scale_out_compares_the_two_deployments(pg_url: str, tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    result = run_script(
        ROOT / "bench" / "scale_out.py",
        *("--database-url", pg_url, "--jobs", "2", "--cancels", "1", "--step-s", "0.05"),
        *("--clients", "2", "--read-seconds", "0.2", "--json-out", str(out)),
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    report: dict[str, Any] = json.loads(out.read_text())
    embedded, scaled = report["results"]
    assert embedded["deployment"].startswith("embedded")
    assert scaled["deployment"].startswith("scale-out")
    for result_of in (embedded, scaled):
        assert result_of["submit_to_start"]["n"] == 2
        assert result_of["cancel_to_stopped"]["max_ms"] < 5000
        assert result_of["status_reads_per_s"] > 0
        assert result_of["running_reads_per_s"] > 0
        assert result_of["status_read_errors"] == 0
    assert "kill_to_restart_s" not in embedded
    assert 0 < scaled["kill_to_restart_s"] < 60
    assert report["reads_ratio_postgres_vs_sqlite"] > 0
    assert report["running_reads_ratio_postgres_vs_sqlite"] > 0
    assert "| scale-out (PostgreSQL" in result.stdout
