"""A scale-out deployment made of real processes: API replicas (`reangle serve --role api`) and workers
(`reangle worker`, fake engine) sharing one PostgreSQL database, each with its own data directory."""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from tests.api.conftest import REPO, START_TIMEOUT_S, STOP_TIMEOUT_S, ServerProcess, server_env
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


def wait_until_registered(database_url: str, workers: int, timeout: float = START_TIMEOUT_S) -> None:
    """Until `workers` Procrastinate workers are registered: a worker prints its ready line before its
    Procrastinate worker has started (registered, then listening and fetching at once); on a loaded machine
    that takes seconds, in which the other workers would take every job."""
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(database_url) as conn:
            row = conn.execute("SELECT count(*) FROM procrastinate_workers").fetchone()
        if row is not None and row[0] >= workers:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{row} of {workers} workers registered in {timeout} s")
        time.sleep(0.05)


@dataclass
class Deployment:
    database_url: str
    #: the key prefix of this deployment's objects in the bucket
    storage_prefix: str
    apis: list[ServerProcess] = field(default_factory=list)
    workers: list[WorkerProcess] = field(default_factory=list)


DeployFactory = Callable[..., Deployment]


@dataclass(frozen=True)
class SharedStorage:
    settings: dict[str, str]
    env: dict[str, str]


@pytest.fixture
def shared_storage(s3_server: S3Server) -> SharedStorage:
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
def deploy(
    pg_url: str,
    shared_storage: SharedStorage,
    tmp_path_factory: pytest.TempPathFactory,
    cache_dir: Path,
) -> Iterator[DeployFactory]:
    """`deploy(apis=2, workers=2, **settings)`: the processes of one deployment, each with a data directory
    of its own (nothing is shared but the database and the object store); all killed afterwards."""
    deployments: list[Deployment] = []

    def start(
        apis: int = 2, workers: int = 2, worker_args: tuple[str, ...] = (), **settings: str | float | int
    ) -> Deployment:
        prefix = shared_storage.settings["storage_url"].split("/", 3)[3]
        deployment = Deployment(database_url=pg_url, storage_prefix=prefix)
        deployments.append(deployment)
        common = {"database_url": pg_url, **shared_storage.settings, **settings}
        for index in range(apis):
            data_dir = tmp_path_factory.mktemp(f"api{index}") / "data"
            env = server_env(cache_dir, role="api", **common) | shared_storage.env
            deployment.apis.append(ServerProcess(data_dir=data_dir, env=env).start())
        for index in range(workers):
            folder = tmp_path_factory.mktemp(f"worker{index}")
            env = server_env(cache_dir, data_dir=str(folder / "data"), **common) | shared_storage.env
            worker = WorkerProcess(
                name=f"worker{index}", log_path=folder / "worker.log", env=env, args=worker_args
            )
            deployment.workers.append(worker.start())
        wait_until_registered(pg_url, workers)
        return deployment

    yield start
    for deployment in deployments:
        running: list[ServerProcess | WorkerProcess] = [*deployment.apis, *deployment.workers]
        for process in running:
            if process.process is not None:
                process.kill()
        for api in deployment.apis:
            api.assert_no_server_errors()
