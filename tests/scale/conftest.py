"""A scale-out deployment made of real processes: API replicas (`reangle serve --role api`) and workers
(`reangle worker`, fake engine) sharing one PostgreSQL database, each with its own data directory."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence, Set
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from tests.api.conftest import (
    KEY_A,
    REPO,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    ServerProcess,
    server_env,
    wait_job,
)
from tests.pg_cluster import PgCluster
from tests.s3_server import S3Server

WORKER_READY = "reangle: worker on"


@dataclass
class WorkerProcess:
    """One `python -m reangle worker` process."""

    name: str
    log_path: Path
    env: dict[str, str]
    #: more arguments of `reangle worker` (--models ...)
    args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self, timeout: float = START_TIMEOUT_S) -> WorkerProcess:
        assert self.process is None, "already running"
        self.starts += 1
        since = self.log_size()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "reangle", "worker", "--engine", "fake", *self.args],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while WORKER_READY not in self.log(since):
            if self.process.poll() is not None:
                self.process = None
                raise AssertionError(f"worker {self.name} exited during start-up:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"worker {self.name} did not start in {timeout} s:\n{self.log()}")
            time.sleep(0.05)
        return self

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM: the job in hand finishes, then the worker exits 0."""
        process = self._take()
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(
                f"worker {self.name} ignored SIGTERM for {timeout} s:\n{self.log()}"
            ) from None
        assert code == 0, f"worker {self.name} exit code {code}:\n{self.log()}"

    def kill(self) -> None:
        process = self._take()
        process.kill()
        process.wait()

    def _take(self) -> subprocess.Popen[bytes]:
        assert self.process is not None, "not running"
        process, self.process = self.process, None
        return process

    def log(self, since: int = 0) -> str:
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            log.seek(since)
            return log.read().decode(errors="replace")[-6000:]

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0


def registered_workers(database_url: str) -> set[int]:
    with psycopg.connect(database_url) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM procrastinate_workers")}


def wait_until_registered(
    database_url: str, workers: int, timeout: float = START_TIMEOUT_S, *, besides: Set[int] = frozenset()
) -> None:
    """Until `workers` Procrastinate workers are registered, not counting those in `besides` (a killed
    worker's row stays until it is pruned as stalled): a worker prints its ready line before its Procrastinate
    worker has started (registered, then listening and fetching at once); on a loaded machine that takes
    seconds, in which the other workers would take every job."""
    deadline = time.monotonic() + timeout
    while True:
        registered = len(registered_workers(database_url) - besides)
        if registered >= workers:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{registered} of {workers} workers registered in {timeout} s")
        time.sleep(0.05)


Process = ServerProcess | WorkerProcess


def start_all(processes: Sequence[Process]) -> None:
    """Start the processes side by side, as many at once as there are cores: a start is seconds of one core
    (imports, mostly), and more at once would only make each start slower on a busy machine."""
    if not processes:
        return
    with ThreadPoolExecutor(min(len(processes), os.cpu_count() or 1)) as pool:
        for started in [pool.submit(process.start) for process in processes]:
            started.result()


@dataclass
class Deployment:
    database_url: str
    #: the key prefix of this deployment's objects in the bucket
    storage_prefix: str
    apis: list[ServerProcess] = field(default_factory=list)
    workers: list[WorkerProcess] = field(default_factory=list)

    def start(self) -> Deployment:
        start_all([*self.apis, *self.workers])
        wait_until_registered(self.database_url, len(self.workers))
        return self

    def repair(self) -> None:
        """Start again the processes a test killed or stopped."""
        before = registered_workers(self.database_url)
        workers = [worker for worker in self.workers if worker.process is None]
        start_all([*(api for api in self.apis if api.process is None), *workers])
        wait_until_registered(self.database_url, len(workers), besides=before)

    @contextlib.contextmanager
    def repairing(self) -> Iterator[None]:
        """`repair()` beside the block (a test waiting for a job), done when the block is: what a test killed
        or stopped is back before its end, not started by the next test's set-up."""
        with ThreadPoolExecutor(1) as pool:
            repaired = pool.submit(self.repair)
            yield
            repaired.result()

    def kill(self) -> None:
        processes: list[Process] = [*self.apis, *self.workers]
        for process in processes:
            if process.process is not None:
                process.kill()

    def assert_no_server_errors(self) -> None:
        """The replicas did not fail on anything they were sent."""
        for api in self.apis:
            api.assert_no_server_errors()


DeployFactory = Callable[..., Deployment]


@dataclass(frozen=True)
class SharedStorage:
    settings: dict[str, str]
    env: dict[str, str]


def new_storage(s3_server: S3Server) -> SharedStorage:
    """A prefix of its own in the session's SeaweedFS bucket, with the credentials as AWS variables."""
    prefix = f"scale-{secrets.token_hex(4)}"
    return SharedStorage(
        settings={
            "storage_url": f"s3://{s3_server.bucket}/{prefix}",
            "s3_endpoint_url": s3_server.endpoint,
            "s3_path_style": "true",
        },
        env=s3_server.env,
    )


@pytest.fixture
def shared_storage(s3_server: S3Server) -> SharedStorage:
    return new_storage(s3_server)


def new_deployment(
    database_url: str,
    storage: SharedStorage,
    tmp_path_factory: pytest.TempPathFactory,
    cache_dir: Path,
    apis: int = 2,
    workers: int = 2,
    worker_args: tuple[str, ...] = (),
    **settings: str | float | int,
) -> Deployment:
    """The processes of one deployment, not started yet, each with a data directory of its own (nothing is
    shared but the database and the object store)."""
    prefix = storage.settings["storage_url"].split("/", 3)[3]
    deployment = Deployment(database_url=database_url, storage_prefix=prefix)
    common = {"database_url": database_url, **storage.settings, **settings}
    for index in range(apis):
        data_dir = tmp_path_factory.mktemp(f"api{index}") / "data"
        env = server_env(cache_dir, role="api", **common) | storage.env
        deployment.apis.append(ServerProcess(data_dir=data_dir, env=env))
    for index in range(workers):
        folder = tmp_path_factory.mktemp(f"worker{index}")
        env = server_env(cache_dir, data_dir=str(folder / "data"), **common) | storage.env
        deployment.workers.append(
            WorkerProcess(name=f"worker{index}", log_path=folder / "worker.log", env=env, args=worker_args)
        )
    return deployment


@pytest.fixture
def deploy(
    pg_url: str,
    shared_storage: SharedStorage,
    tmp_path_factory: pytest.TempPathFactory,
    cache_dir: Path,
) -> Iterator[DeployFactory]:
    """`deploy(apis=2, workers=2, **settings)`: the processes of one deployment, started; all killed
    afterwards."""
    deployments: list[Deployment] = []

    def start(
        apis: int = 2, workers: int = 2, worker_args: tuple[str, ...] = (), **settings: str | float | int
    ) -> Deployment:
        deployment = new_deployment(
            pg_url, shared_storage, tmp_path_factory, cache_dir, apis, workers, worker_args, **settings
        )
        deployments.append(deployment)
        return deployment.start()

    yield start
    for deployment in deployments:
        deployment.kill()
    for deployment in deployments:
        deployment.assert_no_server_errors()


@pytest.fixture(scope="package")
def shared_deployment(
    pg_cluster: PgCluster, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory, cache_dir: Path
) -> Iterator[Deployment]:
    """Two replicas and two workers (steps of 0.1 s: 100 steps, the most a job takes, are 10 s) for the tests
    that need no settings of their own."""
    deployment = new_deployment(
        pg_cluster.create_database(),
        new_storage(s3_server),
        tmp_path_factory,
        cache_dir,
        apis=2,
        workers=2,
        fake_step_seconds=0.1,
        sweep_interval_s=1,
        allow_private_urls="true",
        webhook_retry_base_s=0.2,
    )
    try:
        yield deployment.start()
    finally:
        deployment.kill()
    deployment.assert_no_server_errors()


@pytest.fixture
def deployment(shared_deployment: Deployment) -> Iterator[Deployment]:
    """The shared deployment with all its processes running: a test waits for its own jobs to end, and the
    processes it killed or stopped are started again before the next test."""
    shared_deployment.repair()
    marks = [api.log_size() for api in shared_deployment.apis]
    yield shared_deployment
    for api, mark in zip(shared_deployment.apis, marks, strict=True):
        if api.process is not None:
            api.assert_no_server_errors(since=mark)
    end_unfinished_jobs(shared_deployment)


def end_unfinished_jobs(deployment: Deployment) -> None:
    """Cancel what a failed test left queued or running, so that the next test starts with idle workers."""
    with psycopg.connect(deployment.database_url) as conn:
        rows = conn.execute("SELECT id FROM jobs WHERE status IN ('queued', 'processing')").fetchall()
    if not rows:
        return
    api = next(api for api in deployment.apis if api.process is not None)
    with api.client(KEY_A) as client:
        for (job_id,) in rows:
            client.post(f"/v1/jobs/{job_id}/cancel")
        for (job_id,) in rows:
            wait_job(client, job_id)
