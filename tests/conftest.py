"""Shared fixtures. Nothing here reaches the network: the tiny pipeline is built in process, once."""

from __future__ import annotations

import contextlib
import io
import os
import socketserver
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

from reangle.cli import serve
from reangle.core.assets import AssetService
from reangle.core.service import JobService, ServiceLimits
from reangle.runtime.local_bus import LocalEventBus
from reangle.settings import Settings
from reangle.store.files import FileBlobStore
from reangle.store.sqlite import SqliteStore
from tests.pg_cluster import PgCluster, PostgresMissing
from tests.s3_server import S3Missing, S3Server

# The tiny models' ops are too small to gain from threads, and on a loaded machine spinning OpenMP threads
# make each edit several times slower: torch runs on one thread here and in every process a test starts
# (torch is not imported yet: importing reangle never imports it).
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reangle-cache")


@pytest.fixture(scope="session", autouse=True)
def _no_shell_settings() -> Iterator[None]:
    """No REANGLE_ variable of the shell that started pytest reaches a test, a fixture or its processes."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [name for name in os.environ if name.startswith("REANGLE_")]:
            patch.delenv(name)
        yield


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch, cache_dir: Path) -> None:
    """Every test (and every CLI it starts) builds the tiny model in the session cache, offline."""
    monkeypatch.setenv("REANGLE_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """For `reangle serve` and `reangle worker` run in process: the engines the command asked for, none of
    which may be made (a command that refuses its settings stops before; with qwen, loading takes minutes)."""
    made: list[str] = []

    def create_engine(name: str, settings: Settings) -> None:
        made.append(name)
        raise AssertionError(f"the {name} engine was made before the settings were checked")

    monkeypatch.setattr(serve, "create_engine", create_engine)
    return made


def error_lines(err: str) -> list[str]:
    """The lines of a command's stderr that say something."""
    return [line for line in err.splitlines() if line.strip()]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    """An empty SQLite store in the test's own folder, closed afterwards."""
    opened = SqliteStore(tmp_path / "reangle.sqlite3")
    yield opened
    opened.close()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A throwaway PostgreSQL server for the session (see tests/pg_cluster.py). Without PostgreSQL's binaries
    the tests that use it fail, saying what to install: they never skip."""
    try:
        cluster = PgCluster()
    except PostgresMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> str:
    """The URL of a fresh, empty database of the session's cluster."""
    return pg_cluster.create_database()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """The job store of the suites' shared servers: every test on those servers runs on the embedded SQLite
    default and again on PostgreSQL."""
    return str(request.param)


def backend_settings(request: pytest.FixtureRequest, backend: str) -> dict[str, str]:
    """The settings of one server on `backend`: on PostgreSQL, a database of its own in the session's
    cluster (two servers on one database would run each other's jobs)."""
    if backend == "sqlite":
        return {}
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    return {"database_url": cluster.create_database()}


@pytest.fixture
def settings(cache_dir: Path) -> Settings:
    return Settings(cache_dir=cache_dir, fake_step_seconds=0)


def job_service(
    store: SqliteStore, folder: Path, limits: ServiceLimits | None = None, *, max_bytes: int = 1 << 20
) -> JobService:
    """A job service on `store`, its files under `folder`, that fetches no URL (a test that tries fails)."""
    assets = AssetService(
        store,
        FileBlobStore(folder / "assets"),
        max_bytes=max_bytes,
        max_pixels=max_bytes,
        upload_ttl_s=600,
        result_ttl_s=600,
    )

    async def no_fetch(url: str, field: str) -> bytes:
        raise AssertionError("no URL is fetched here")

    return JobService(store, assets, no_fetch, limits or ServiceLimits(), events=LocalEventBus())


@contextlib.contextmanager
def serving(server: socketserver.BaseServer, before_stop: Callable[[], None]) -> Iterator[None]:
    """`server` answering on a thread of its own; `before_stop` (release what it holds) before it stops."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield
    finally:
        before_stop()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def make_image(
    width: int = 80, height: int = 60, *, color: tuple[int, int, int] = (200, 40, 40)
) -> Image.Image:
    """A small picture with some structure (a gradient and a block), so edits have something to see."""
    image = Image.new("RGB", (width, height), color)
    for x in range(width):
        for y in range(0, height, 3):
            image.putpixel((x, y), (x * 255 // width, y * 255 // height, 120))
    return image


def image_bytes(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A throwaway SeaweedFS S3 server with one bucket for the session (see tests/s3_server.py). Without the
    `weed` binary the tests that use it fail, saying what to install: they never skip."""
    try:
        server = S3Server()
    except S3Missing as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        server.start()
        yield server
    finally:
        server.destroy()
