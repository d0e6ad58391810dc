#!/usr/bin/env python
"""Measure what the reangle server adds around the model: job latency and status-read throughput.

Without `--url` it starts its own server on a free 127.0.0.1 port: `python -m reangle serve --engine fake`
with REANGLE_FAKE_STEP_SECONDS=0 (the engine costs nothing, so every millisecond is server overhead),
REANGLE_AUTH=off and a temporary data directory, and stops it at the end. Then, from asyncio clients (httpx):

1. latency of submit -> succeeded, for 1 client and for `--clients` concurrent clients, two ways:
   `POST /v1/jobs?wait=30` (one request) and `POST /v1/jobs` + `GET /v1/jobs/{id}/events` (SSE until the
   terminal status event);
2. status reads per second: `--clients` concurrent clients reading `GET /v1/jobs/{id}` of one finished job for
   `--seconds` seconds.

Every loop is bounded by a count and a deadline, and only 127.0.0.1 (or the given `--url`) is contacted.
With N clients and one runner, jobs queue behind each other: the 1-client rows are the per-job overhead, the
N-client rows show how it grows under load.

    .venv/bin/python bench/server_overhead.py --clients 8 --jobs 200 --seconds 5 --json-out overhead.json

Exit status: 0 done, 1 the server or a request failed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
CAMERA_MODEL = "qwen-edit-multiangle-2511"
TERMINAL = ("succeeded", "failed", "canceled")
#: Targets on a 2-core machine (docs/benchmarks.md).
TARGET_P50_MS = 10.0
TARGET_READS_PER_S = 1500.0


class BenchError(Exception):
    """The server misbehaved (did not start, answered an error, a job did not succeed)."""


# The server ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    external_pid: int | None = None

    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else self.external_pid

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def own_server(step_seconds: float, startup_timeout_s: float) -> Iterator[Server]:
    """Start `reangle serve --engine fake` on a free port with a temporary data dir; stop it afterwards."""
    with tempfile.TemporaryDirectory(prefix="reangle-overhead-") as temp:
        port = free_port()
        data_dir = Path(temp) / "data"
        log_path = Path(temp) / "server.log"
        env = dict(os.environ)
        env |= {
            "REANGLE_FAKE_STEP_SECONDS": str(step_seconds),
            "REANGLE_AUTH": "off",
            "REANGLE_DATA_DIR": str(data_dir),
            "REANGLE_CACHE_DIR": str(Path(temp) / "cache"),
            "HF_HUB_OFFLINE": "1",
        }
        command = [
            sys.executable,
            "-m",
            "reangle",
            "serve",
            "--engine",
            "fake",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ]
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        server = Server(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
        try:
            wait_until_up(server, startup_timeout_s)
            yield server
        finally:
            stop(process)
            server.log_path = None  # the directory goes away with the context


def wait_until_up(server: Server, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process is not None and server.process.poll() is not None:
            raise BenchError(
                f"the server exited with status {server.process.returncode}:\n{server.log_tail()}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}/healthz", timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise BenchError(f"the server did not answer /healthz within {timeout_s:.0f} s:\n{server.log_tail()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server this script started (SIGTERM, then SIGKILL after 10 s)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


# Measurements -------------------------------------------------------------------------------------------


@dataclass
class Samples:
    """Latencies of one scenario, plus what went wrong."""

    latencies_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    #: the job's own `timings` (queue_s, inference_s, encode_s, run_s ...) as the server reports them
    server_timings: dict[str, list[float]] = field(default_factory=dict)
    #: client-seen latency minus the engine's `inference_s`: what the server adds around the engine
    overheads_s: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        values = sorted(self.latencies_s)
        return {
            "count": len(values),
            "errors": len(self.errors),
            "first_errors": self.errors[:3],
            "wall_s": round(self.wall_s, 4),
            "per_second": round(len(values) / self.wall_s, 2) if self.wall_s > 0 else None,
            "p50_ms": _ms(percentile(values, 50)),
            "p90_ms": _ms(percentile(values, 90)),
            "p99_ms": _ms(percentile(values, 99)),
            "mean_ms": _ms(statistics.fmean(values)) if values else None,
            "max_ms": _ms(values[-1]) if values else None,
            "overhead_p50_ms": _ms(percentile(sorted(self.overheads_s), 50)),
            "overhead_p99_ms": _ms(percentile(sorted(self.overheads_s), 99)),
            "server_timings_p50_ms": {
                name: _ms(statistics.median(series)) for name, series in sorted(self.server_timings.items())
            },
        }


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[int(rank) - 1]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 3)


def job_body(asset_id: str, size: int) -> dict[str, Any]:
    return {
        "model": CAMERA_MODEL,
        "input": {"images": [asset_id], "horizontal_angle": 90, "width": size, "height": size, "seed": 1},
    }


def tiny_png(size: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (90, 140, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


async def upload(client: httpx.AsyncClient, size: int) -> str:
    response = await client.post("/v1/assets", json={"data": base64.b64encode(tiny_png(size)).decode()})
    if response.status_code != 201:
        raise BenchError(f"upload answered {response.status_code}: {response.text[:300]}")
    asset_id: str = response.json()["id"]
    return asset_id


async def job_via_wait(client: httpx.AsyncClient, body: dict[str, Any], wait_s: float) -> dict[str, Any]:
    response = await client.post("/v1/jobs", params={"wait": wait_s}, json=body)
    if response.status_code not in (200, 202):
        raise BenchError(f"POST /v1/jobs answered {response.status_code}: {response.text[:300]}")
    job: dict[str, Any] = response.json()
    return job


async def job_via_sse(client: httpx.AsyncClient, body: dict[str, Any], wait_s: float) -> dict[str, Any]:
    response = await client.post("/v1/jobs", json=body)
    if response.status_code not in (200, 202):
        raise BenchError(f"POST /v1/jobs answered {response.status_code}: {response.text[:300]}")
    job: dict[str, Any] = response.json()
    if job["status"] in TERMINAL:
        return job
    async with asyncio.timeout(wait_s):
        async with client.stream("GET", f"/v1/jobs/{job['id']}/events") as stream:
            if stream.status_code != 200:
                raise BenchError(f"GET .../events answered {stream.status_code}")
            event = ""
            async for line in stream.aiter_lines():
                if line.startswith("event:"):
                    event = line.removeprefix("event:").strip()
                elif line.startswith("data:") and event == "status":
                    job = json.loads(line.removeprefix("data:"))
                    if job["status"] in TERMINAL:
                        return job
    return job


async def latency_scenario(
    client: httpx.AsyncClient,
    body: dict[str, Any],
    *,
    mode: str,
    clients: int,
    jobs: int,
    deadline_s: float,
    wait_s: float,
) -> Samples:
    """`clients` loops share `jobs` submissions; each times submit -> terminal status seen by the client."""
    samples = Samples()
    remaining = jobs
    deadline = time.monotonic() + deadline_s
    run_job = job_via_wait if mode == "wait" else job_via_sse

    async def one_client() -> None:
        nonlocal remaining
        while remaining > 0 and time.monotonic() < deadline:
            remaining -= 1
            started = time.perf_counter()
            try:
                job = await run_job(client, body, wait_s)
            except (BenchError, httpx.HTTPError, TimeoutError) as exc:
                samples.errors.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            elapsed = time.perf_counter() - started
            if job["status"] == "succeeded":
                samples.latencies_s.append(elapsed)
                timings = job.get("timings") or {}
                for name, value in timings.items():
                    samples.server_timings.setdefault(name, []).append(float(value))
                if "inference_s" in timings:  # the engine's own time; the rest is the server's
                    samples.overheads_s.append(elapsed - float(timings["inference_s"]))
            else:
                samples.errors.append(f"job {job['id']} ended {job['status']}: {job.get('error')}")

    started = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    samples.wall_s = time.perf_counter() - started
    return samples


async def status_reads(
    client: httpx.AsyncClient, job_id: str, *, clients: int, seconds: float, max_reads: int
) -> Samples:
    samples = Samples()
    deadline = time.monotonic() + seconds

    async def one_client() -> None:
        while time.monotonic() < deadline and len(samples.latencies_s) + len(samples.errors) < max_reads:
            started = time.perf_counter()
            try:
                response = await client.get(f"/v1/jobs/{job_id}")
            except httpx.HTTPError as exc:
                samples.errors.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            if response.status_code == 200:
                samples.latencies_s.append(time.perf_counter() - started)
            else:
                samples.errors.append(f"GET /v1/jobs/{{id}} answered {response.status_code}")

    started = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    samples.wall_s = time.perf_counter() - started
    return samples


async def raw_status_reads(url: str, job_id: str, *, clients: int, seconds: float, max_reads: int) -> Samples:
    """The same reads over bare keep-alive HTTP/1.1 sockets: a client that costs far less CPU than httpx.

    On a small machine the client competes with the server for the cores; this shows the server's own limit.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = f"GET /v1/jobs/{job_id} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: */*\r\n\r\n".encode()
    samples = Samples()
    deadline = time.monotonic() + seconds

    async def one_client() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.monotonic() < deadline and len(samples.latencies_s) + len(samples.errors) < max_reads:
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                if status == 200:
                    samples.latencies_s.append(time.perf_counter() - started)
                else:
                    samples.errors.append(f"GET /v1/jobs/{{id}} answered {status}")
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            samples.errors.append(f"{type(exc).__name__}: {exc}"[:300])
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    started = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    samples.wall_s = time.perf_counter() - started
    return samples


class CpuMeter:
    """CPU seconds of the server process and of this client process over a scenario."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid

    def _server_cpu(self) -> float | None:
        """utime + stime of the server process from /proc (Linux); None where that cannot be read."""
        if self.server_pid is None:
            return None
        try:
            stat = Path(f"/proc/{self.server_pid}/stat").read_text()
            fields = stat.rpartition(")")[2].split()
            ticks = int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5), counted after "(comm)"
            return ticks / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    def start(self) -> None:
        self._server0 = self._server_cpu()
        self._client0 = time.process_time()
        self._wall0 = time.perf_counter()

    def stop(self, operations: int) -> dict[str, float | None]:
        """CPU use since start(); per operation too, which other load on the machine hardly changes."""
        wall = time.perf_counter() - self._wall0
        server = self._server_cpu()
        server_s = server - self._server0 if server is not None and self._server0 is not None else None
        client_s = time.process_time() - self._client0
        return {
            "server_cpu_s": None if server_s is None else round(server_s, 3),
            "server_cpu_util": None if server_s is None or wall <= 0 else round(server_s / wall, 3),
            "server_cpu_ms_per_op": (
                None if server_s is None or operations < 1 else round(1e3 * server_s / operations, 3)
            ),
            "client_cpu_ms_per_op": round(1e3 * client_s / operations, 3) if operations else None,
            "client_cpu_s": round(client_s, 3),
            "client_cpu_util": round(client_s / wall, 3) if wall > 0 else None,
        }


async def measure(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=args.clients + 4, max_keepalive_connections=args.clients + 4)
    timeout = httpx.Timeout(args.wait + 10, connect=5.0)
    meter = CpuMeter(server.pid())
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=timeout) as client:
        body = job_body(await upload(client, args.size), args.size)
        for _ in range(args.warmup):  # first jobs pay imports, the engine's first use, SQLite warm-up
            job = await job_via_wait(client, body, args.wait)
            if job["status"] != "succeeded":
                raise BenchError(f"warm-up job {job['id']} ended {job['status']}: {job.get('error')}")
        latency: dict[str, Any] = {}
        for mode in ("wait", "sse"):
            for clients in sorted({1, args.clients}):
                jobs = args.jobs if clients > 1 else max(1, args.jobs // 2)
                meter.start()
                samples = await latency_scenario(
                    client,
                    body,
                    mode=mode,
                    clients=clients,
                    jobs=jobs,
                    deadline_s=args.seconds * 4,
                    wait_s=args.wait,
                )
                latency[f"{mode}_c{clients}"] = {
                    "mode": mode,
                    "clients": clients,
                    **samples.summary(),
                    **meter.stop(len(samples.latencies_s)),
                }
        finished = await job_via_wait(client, body, args.wait)
        if finished["status"] != "succeeded":
            raise BenchError(f"job {finished['id']} ended {finished['status']}: {finished.get('error')}")
        reads: dict[str, Any] = {}
        for kind in ("httpx", "raw") if args.reads_client == "both" else (args.reads_client,):
            meter.start()
            if kind == "httpx":
                samples = await status_reads(
                    client,
                    finished["id"],
                    clients=args.clients,
                    seconds=args.seconds,
                    max_reads=args.max_reads,
                )
            else:
                samples = await raw_status_reads(
                    server.url,
                    finished["id"],
                    clients=args.clients,
                    seconds=args.seconds,
                    max_reads=args.max_reads,
                )
            reads[kind] = {
                "client": kind,
                "clients": args.clients,
                **samples.summary(),
                **meter.stop(len(samples.latencies_s)),
            }
    return {"latency": latency, "status_reads": reads}


# Main ---------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="server_overhead.py", description="Measure the reangle server's own overhead with a free engine."
    )
    parser.add_argument(
        "--url", help="a running server on 127.0.0.1 (default: start one with the fake engine)"
    )
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--jobs", type=int, default=200, help="jobs per concurrent scenario (default 200)")
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="length of the status-read phase (default 5)"
    )
    parser.add_argument("--max-reads", type=int, default=200_000, help="stop the read phase after this many")
    parser.add_argument("--warmup", type=int, default=5, help="jobs run before measuring (default 5)")
    parser.add_argument("--size", type=int, default=64, help="input and output side in pixels (default 64)")
    parser.add_argument("--wait", type=float, default=30.0, help="?wait= seconds and SSE limit (default 30)")
    parser.add_argument("--step-seconds", type=float, default=0.0, help="fake engine step time (default 0)")
    parser.add_argument(
        "--startup-timeout", type=float, default=60.0, help="seconds for the server to come up"
    )
    parser.add_argument(
        "--reads-client",
        choices=("httpx", "raw", "both"),
        default="both",
        help="client of the status-read phase: httpx, bare sockets, or both (default both)",
    )
    parser.add_argument("--server-pid", type=int, help="with --url: the server's pid, to report its CPU use")
    parser.add_argument("--json-out", type=Path, help="write the report here as JSON")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.jobs < 1 or args.seconds <= 0 or args.max_reads < 1 or args.warmup < 0:
        parser.error("--clients, --jobs, --seconds and --max-reads must be positive, --warmup not negative")
    if not 16 <= args.size <= 2048 or args.size % 16:
        parser.error("--size must be a multiple of 16 between 16 and 2048")
    if args.url is not None and urlsplit(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        parser.error("--url must point at this machine (127.0.0.1); this script only loads local servers")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = _load_average()
    try:
        if args.url is not None:
            server = Server(url=args.url.rstrip("/"), external_pid=args.server_pid)
            wait_until_up(server, args.startup_timeout)
            results = asyncio.run(measure(server, args))
        else:
            with own_server(args.step_seconds, args.startup_timeout) as server:
                results = asyncio.run(measure(server, args))
    except BenchError as exc:
        print(f"server_overhead.py: {exc}", file=sys.stderr)
        return EXIT_FAILED
    report = {
        "bench": "server_overhead",
        "schema": 1,
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "httpx": httpx.__version__,
            "load_average_before": load_before,
            "load_average_after": _load_average(),
        },
        "server": {"url": args.url or "self-started", "engine": "fake" if args.url is None else "as running"},
        "settings": {
            "clients": args.clients,
            "jobs": args.jobs,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "size": args.size,
            "step_seconds": args.step_seconds if args.url is None else None,
        },
        "targets": {"p50_ms": TARGET_P50_MS, "status_reads_per_s": TARGET_READS_PER_S},
        **results,
    }
    print_report(report)
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.json_out}")
    return EXIT_OK


def _load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: other work on the machine skews every number here."""
    with contextlib.suppress(OSError, AttributeError):
        return [round(value, 2) for value in os.getloadavg()]
    return None


def print_report(report: dict[str, Any]) -> None:
    machine = report["machine"]
    print(f"reangle server overhead: {machine['cpu_count']} CPUs, server {report['server']['url']}")
    header = f"{'scenario':<12}{'n':>6}{'err':>5}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'per s':>9}"
    print(f"\n{header}{'srv cpu':>9}{'cli cpu':>9}{'srv ms/op':>11}")
    rows = [
        *report["latency"].items(),
        *((f"reads_{kind}", row) for kind, row in report["status_reads"].items()),
    ]
    for name, row in rows:
        print(
            f"{name:<12}{row['count']:>6}{row['errors']:>5}{_cell(row['p50_ms'])}{_cell(row['p90_ms'])}"
            f"{_cell(row['p99_ms'])}{_cell(row['per_second'], 9)}{_cell(row['server_cpu_util'], 9)}"
            f"{_cell(row['client_cpu_util'], 9)}{_cell(row['server_cpu_ms_per_op'], 11)}"
        )
    single = report["latency"].get("wait_c1", {})
    timings = ", ".join(f"{name} {value}" for name, value in single.get("server_timings_p50_ms", {}).items())
    print(f"\nserver-reported job timings, p50 ms (wait, 1 client): {timings or '-'}")
    targets = report["targets"]
    reads = ", ".join(f"{row['per_second']}/s ({kind})" for kind, row in report["status_reads"].items())
    print(
        f"targets: p50 submit->succeeded (wait, 1 client) {single.get('p50_ms')} ms, "
        f"{single.get('overhead_p50_ms')} ms without the engine's own inference_s, "
        f"vs < {targets['p50_ms']} ms; status reads {reads} vs >= {targets['status_reads_per_s']:.0f}/s; "
        f"load average {machine['load_average_before']} -> {machine['load_average_after']}"
    )


def _cell(value: float | None, width: int = 10) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.2f}"


if __name__ == "__main__":
    sys.exit(main())
