"""The server benchmark, run as a user runs it (a subprocess) with tiny counts, reports what it says.

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
