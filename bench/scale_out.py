#!/usr/bin/env python
"""Measure the scale-out deployment against the embedded default, on one machine, in one run.

Starts its own processes (fake engine, auth off, temporary directories): the embedded server (SQLite), and a
scale-out deployment of one API replica (`serve --role api`) and two workers (`reangle worker`) on PostgreSQL
(`--database-url`, or a throwaway cluster made with initdb/pg_ctl, see tests/pg_cluster.py). Assets are files
in one directory shared by the scale-out processes (S3 adds its own latency; measured elsewhere). Then:

1. submit -> start on an idle runner: `started_at - created_at` of the job as the server records it;
2. cancel -> stopped: a running job (`--step-s` per denoising step) canceled, until the API says canceled;
3. (scale-out only) a worker SIGKILLed mid-job -> its job running again as attempt 2 on the other worker;
4. status reads per second on one finished job, then on one running job whose progress is stored every 0.25 s
   (bare keep-alive HTTP clients, as `server_overhead.py`).

    .venv/bin/python bench/scale_out.py --jobs 30 --read-seconds 5 --json-out scale.json

Machines here are noisy: compare the two deployments as ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from server_overhead import Server, free_port, percentile, raw_status_reads, tiny_png, wait_until_up

ROOT = Path(__file__).resolve().parents[1]
MODEL = "qwen-edit-multiangle-2511"
START_TIMEOUT_S = 60.0


@dataclass
class Deployment:
    name: str
    url: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    workers: list[tuple[subprocess.Popen[bytes], Path]] = field(default_factory=list)


def _env(folder: Path, step_s: float, **settings: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("REANGLE_")}
    env |= {
        "REANGLE_AUTH": "off",
        "REANGLE_FAKE_STEP_SECONDS": str(step_s),
        "REANGLE_CACHE_DIR": str(folder / "cache"),
        "REANGLE_DATA_DIR": str(folder / "data"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    return env | {f"REANGLE_{name.upper()}": value for name, value in settings.items()}


def _spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def _serve(folder: Path, env: dict[str, str], log: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    command = [sys.executable, "-m", "reangle", "serve", "--engine", "fake", "--port", str(port)]
    process = _spawn(command, env, log)
    server = Server(url=f"http://127.0.0.1:{port}", process=process, log_path=log)
    wait_until_up(server, START_TIMEOUT_S)
    return server.url, process


def _worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    process = _spawn([sys.executable, "-m", "reangle", "worker", "--engine", "fake"], env, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while "reangle: worker on" not in (log.read_text() if log.exists() else ""):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the worker did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    return process


@contextlib.contextmanager
def embedded(folder: Path, step_s: float) -> Iterator[Deployment]:
    url, process = _serve(folder, _env(folder, step_s), folder / "server.log")
    deployment = Deployment("embedded (SQLite, in-process runner)", url, [process])
    try:
        yield deployment
    finally:
        _stop(deployment)


@contextlib.contextmanager
def scale_out(folder: Path, step_s: float, database_url: str) -> Iterator[Deployment]:
    env = _env(folder, step_s, database_url=database_url)
    url, api = _serve(folder, env | {"REANGLE_ROLE": "api"}, folder / "api.log")
    deployment = Deployment("scale-out (PostgreSQL, 1 API replica + 2 workers)", url, [api])
    try:
        for index in range(2):
            log = folder / f"worker{index}.log"
            deployment.workers.append((_worker(env, log), log))
        yield deployment
    finally:
        _stop(deployment)


def _stop(deployment: Deployment) -> None:
    for process in [*deployment.processes, *(worker for worker, _ in deployment.workers)]:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# Measurements -------------------------------------------------------------------------------------------


def _timestamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _submit(client: httpx.Client, image: str, steps: int) -> dict[str, Any]:
    body = {
        "model": MODEL,
        "input": {"images": [image], "width": 64, "height": 64, "num_inference_steps": steps},
    }
    response = client.post("/v1/jobs", json=body)
    response.raise_for_status()
    job: dict[str, Any] = response.json()
    return job


def _wait(client: httpx.Client, job_id: str, until: Any, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if until(job):
            return job
        time.sleep(0.005)
    raise SystemExit(f"job {job_id} did not get there in {timeout} s")


def _ended(job: dict[str, Any]) -> bool:
    return job["status"] in ("succeeded", "failed", "canceled")


def submit_to_start(client: httpx.Client, image: str, jobs: int) -> list[float]:
    """One job at a time on an idle runner: how long each waited for it."""
    waits = []
    for _ in range(jobs):
        job = _wait(client, _submit(client, image, 1)["id"], _ended)
        waits.append(_timestamp(job["started_at"]) - _timestamp(job["created_at"]))
    return waits


def cancel_to_stopped(client: httpx.Client, image: str, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        job = _submit(client, image, 100)
        _wait(client, job["id"], lambda j: j["status"] == "processing" and j["progress"] > 0)
        asked = time.perf_counter()
        client.post(f"/v1/jobs/{job['id']}/cancel").raise_for_status()
        _wait(client, job["id"], _ended)
        times.append(time.perf_counter() - asked)
    return times


def kill_to_restart(client: httpx.Client, image: str, deployment: Deployment) -> float:
    """SIGKILL the worker holding a long job; seconds until the other worker runs it as attempt 2."""
    job = _submit(client, image, 100)
    _wait(client, job["id"], lambda j: j["status"] == "processing")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        holders = [p for p, log in deployment.workers if f"job {job['id']}: attempt 1" in log.read_text()]
        if holders:
            break
        time.sleep(0.02)
    killed = time.perf_counter()
    holders[0].send_signal(signal.SIGKILL)
    holders[0].wait()
    _wait(client, job["id"], lambda j: j["attempt"] == 2 and j["status"] == "processing", timeout=120)
    restarted = time.perf_counter() - killed
    client.post(f"/v1/jobs/{job['id']}/cancel")
    return restarted


def _stats(values: Sequence[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50_ms": _ms(percentile(ordered, 50)),
        "p95_ms": _ms(percentile(ordered, 95)),
        "max_ms": _ms(ordered[-1] if ordered else None),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def measure(deployment: Deployment, args: argparse.Namespace) -> dict[str, Any]:
    with httpx.Client(base_url=deployment.url, timeout=30) as client:
        upload = client.post("/v1/assets", files={"file": ("in.png", tiny_png(64), "image/png")})
        upload.raise_for_status()
        image = upload.json()["id"]
        report: dict[str, Any] = {
            "deployment": deployment.name,
            "submit_to_start": _stats(submit_to_start(client, image, args.jobs)),
            "cancel_to_stopped": _stats(cancel_to_stopped(client, image, args.cancels)),
        }
        if deployment.workers:
            report["kill_to_restart_s"] = round(kill_to_restart(client, image, deployment), 2)
        finished = _wait(client, _submit(client, image, 1)["id"], _ended)
        report["status_reads_per_s"], finished_errors = _read_rate(deployment, finished["id"], args)
        # a job running all along, its progress stored (and announced) every 0.25 s: what polling clients read
        running = _submit(client, image, 100)  # the most steps a job takes: 10 s at the default step time
        _wait(client, running["id"], lambda j: j["status"] == "processing" and j["progress"] > 0)
        report["running_reads_per_s"], running_errors = _read_rate(deployment, running["id"], args)
        client.post(f"/v1/jobs/{running['id']}/cancel").raise_for_status()
    report["status_read_errors"] = finished_errors + running_errors
    return report


def _read_rate(deployment: Deployment, job_id: str, args: argparse.Namespace) -> tuple[float | None, int]:
    """Reads per second of one job's status by `args.clients` clients for `args.read_seconds`; errors."""
    reads = asyncio.run(
        raw_status_reads(
            deployment.url, job_id, clients=args.clients, seconds=args.read_seconds, max_reads=10**7
        )
    )
    rate = round(len(reads.latencies_s) / reads.wall_s, 1) if reads.wall_s else None
    return rate, len(reads.errors)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scale_out.py", description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="an empty PostgreSQL database (default: a throwaway cluster)")
    parser.add_argument("--jobs", type=int, default=30, help="jobs timed submit -> start (default 30)")
    parser.add_argument("--cancels", type=int, default=5, help="jobs canceled while running (default 5)")
    parser.add_argument(
        "--step-s", type=float, default=0.1, help="fake engine seconds per step (default 0.1)"
    )
    parser.add_argument("--clients", type=int, default=8, help="concurrent status readers (default 8)")
    parser.add_argument("--read-seconds", type=float, default=5.0, help="seconds of status reads (default 5)")
    parser.add_argument("--json-out", type=Path, help="write the report here as JSON")
    args = parser.parse_args(argv)
    if min(args.jobs, args.cancels, args.clients) < 1 or args.step_s <= 0 or args.read_seconds <= 0:
        parser.error(
            "--jobs, --cancels and --clients must be at least 1; --step-s and --read-seconds positive"
        )
    return args


@contextlib.contextmanager
def database(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    sys.path.insert(0, str(ROOT))
    from tests.pg_cluster import PgCluster

    cluster = PgCluster()
    try:
        cluster.start()
        yield cluster.create_database()
    finally:
        cluster.destroy()


def _ratio(results: list[dict[str, Any]], key: str) -> float | None:
    embedded_rate, scaled_rate = (result[key] or 0 for result in results)
    return round(scaled_rate / embedded_rate, 3) if embedded_rate else None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="reangle-scale-") as temp, database(args.database_url) as url:
        with embedded(Path(temp) / "embedded", args.step_s) as deployment:
            results.append(measure(deployment, args))
        with scale_out(Path(temp) / "scale", args.step_s, url) as deployment:
            results.append(measure(deployment, args))
    report = {
        "bench": "scale_out",
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "settings": {key: str(value) for key, value in vars(args).items() if key != "database_url"},
        "results": results,
        "reads_ratio_postgres_vs_sqlite": _ratio(results, "status_reads_per_s"),
        "running_reads_ratio_postgres_vs_sqlite": _ratio(results, "running_reads_per_s"),
    }
    print(
        "| deployment | submit->start p50 / p95 ms | cancel->stopped p50 / max ms | kill->restart s ", end=""
    )
    print("| reads/s, finished job | reads/s, running job |")
    print("|---|---|---|---|---|---|")
    for result in results:
        start, cancel = result["submit_to_start"], result["cancel_to_stopped"]
        print(
            f"| {result['deployment']} | {start['p50_ms']} / {start['p95_ms']} | {cancel['p50_ms']} / "
            f"{cancel['max_ms']} | {result.get('kill_to_restart_s', '-')} | {result['status_reads_per_s']} "
            f"| {result['running_reads_per_s']} |"
        )
    print(
        f"\nstatus reads, PostgreSQL / SQLite: {report['reads_ratio_postgres_vs_sqlite']} (finished job), "
        f"{report['running_reads_ratio_postgres_vs_sqlite']} (running job)"
    )
    print(
        f"(step time {args.step_s * 1000:.0f} ms; median of per-round values; load {report['load_average']})"
    )
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=1))
    errors = sum(result["status_read_errors"] for result in results)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
