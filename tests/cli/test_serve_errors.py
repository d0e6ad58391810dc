"""`reangle serve` and `reangle worker` refuse what cannot work in one line, exit 2, before any engine loads:
an unusable data folder, a port out of range or taken, a data folder another server runs on, a role the
database cannot take. A server whose job runtime fails stops with exit 1 instead of serving with no runner."""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reangle.cli import serve
from reangle.cli.main import main
from reangle.compose import SQLITE_FILE
from reangle.core.models import CAMERA_EDIT, WAN_IMAGE, install_catalog, shipped_catalog
from reangle.core.ports import WorkerStatus
from reangle.core.service import JobService
from reangle.settings import Settings
from reangle.store.data_lock import DataFolderLock
from reangle.store.sqlite import SqliteStore
from tests.api.conftest import free_port
from tests.conftest import error_lines


@pytest.fixture
def unusable(tmp_path: Path) -> Path:
    """A data folder that cannot be made: its parent is a file."""
    (tmp_path / "a-file").write_text("")
    return tmp_path / "a-file" / "data"


@pytest.mark.parametrize("command", ["serve", "worker"])
@pytest.mark.parametrize("folder", ["data", "cache"])
def test_a_folder_that_cannot_be_made_is_one_line(
    command: str,
    folder: str,
    unusable: Path,
    tmp_path: Path,
    no_engine: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if command == "worker":  # a database it could share (never reached): the role check passes
        monkeypatch.setenv("REANGLE_DATABASE_URL", "postgresql://db.invalid/reangle")
    if folder == "cache":  # where fetched LoRAs go
        monkeypatch.setenv("REANGLE_CACHE_DIR", str(unusable))
    data_dir = unusable if folder == "data" else tmp_path / "data"
    assert main([command, "--engine", "fake", "--data-dir", str(data_dir)]) == 2
    expected = {
        "data": f"reangle: error: cannot create the data folder {unusable}: Not a directory",
        "cache": f"reangle: error: bad setting: REANGLE_CACHE_DIR: cannot create folders in {unusable}: "
        "Not a directory",
    }
    assert error_lines(capsys.readouterr().err) == [expected[folder]]
    assert no_engine == []


def test_serve_on_postgres_and_s3_needs_no_data_folder(unusable: Path) -> None:
    settings = Settings(
        data_dir=unusable, database_url="postgresql://db.invalid/x", storage_url="s3://bucket/assets"
    )
    serve.make_data_dir(settings)  # nothing is kept in it: no error
    assert not unusable.exists()


@pytest.mark.parametrize("port", ["0", "65536", "99999"])
def test_a_port_flag_out_of_range_is_refused(
    port: str, no_engine: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--engine", "fake", "--port", port])
    assert exited.value.code == 2
    assert error_lines(capsys.readouterr().err) == [
        f"reangle serve: error: argument --port: port {port} is out of range: use 1 to 65535 "
        "(see reangle serve --help)"
    ]


def test_a_port_setting_out_of_range_is_refused(
    monkeypatch: pytest.MonkeyPatch, no_engine: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REANGLE_PORT", "99999")
    assert main(["serve", "--engine", "fake"]) == 2
    assert error_lines(capsys.readouterr().err) == [
        "reangle: error: bad setting: REANGLE_PORT: 99999 is not a TCP port: use 1 to 65535"
    ]


@pytest.mark.parametrize(
    ("args", "role"),
    [
        (["worker", "--engine", "fake"], "worker"),
        (["serve", "--engine", "fake", "--role", "worker"], "worker"),
        (["serve", "--engine", "fake", "--role", "api"], "api"),
    ],
)
def test_a_role_sqlite_cannot_take_says_what_to_set_before_loading_an_engine(
    args: list[str],
    role: str,
    tmp_path: Path,
    no_engine: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([*args, "--data-dir", str(tmp_path)]) == 2
    assert error_lines(capsys.readouterr().err) == [
        f"reangle: error: role {role!r} needs a database shared between processes (set "
        "REANGLE_DATABASE_URL=postgresql://...; the embedded SQLite default runs role all)"
    ]
    assert no_engine == []


@pytest.fixture
def worker_database(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A database `reangle worker` could share (never reached: the role check passes); the catalog its
    settings served is put back to the import-time one afterwards."""
    monkeypatch.setenv("REANGLE_DATABASE_URL", "postgresql://db.invalid/reangle")
    yield
    install_catalog(shipped_catalog(), {})


@pytest.mark.parametrize(
    ("models", "error"),
    [
        (
            f"{CAMERA_EDIT},{WAN_IMAGE}",
            f"--models: {WAN_IMAGE} cannot run here: set REANGLE_DASHSCOPE_API_KEY to run Wan 2.7 Image "
            "through Alibaba's DashScope API",
        ),
        (
            f"{CAMERA_EDIT},no-such-model",
            "unknown model 'no-such-model'; choose from qwen-edit-multiangle-2511, qwen-image-edit-2511, "
            "qwen-image-2512, wan-2.7-image",
        ),
        (
            " , ",  # an unset variable in a script: not every model
            "--models names no model (' , '): give model ids separated by commas, or leave --models out to "
            "take every model",
        ),
    ],
)
def test_a_worker_asked_for_a_model_it_cannot_run_is_refused_before_loading_an_engine(
    models: str,
    error: str,
    worker_database: None,
    tmp_path: Path,
    no_engine: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """It would only fail the model's jobs, which a worker that can run them would take."""
    assert main(["worker", "--engine", "fake", "--models", models, "--data-dir", str(tmp_path)]) == 2
    assert error_lines(capsys.readouterr().err) == [f"reangle: error: {error}"]
    assert no_engine == []


def test_a_worker_with_a_dashscope_key_may_be_asked_for_wan(
    worker_database: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REANGLE_DASHSCOPE_API_KEY", "sk-test")
    worked: list[list[str] | None] = []

    def work(settings: Settings, models: list[str] | None, metrics_socket: socket.socket | None) -> int:
        worked.append(models)
        return 0

    monkeypatch.setattr(serve, "_work", work)
    assert main(["worker", "--engine", "fake", "--models", WAN_IMAGE, "--data-dir", str(tmp_path)]) == 0
    assert worked == [[WAN_IMAGE]]


def test_a_taken_port_is_one_line_before_any_engine_loads(
    tmp_path: Path, no_engine: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--engine", "fake", "--port", str(port), "--data-dir", str(tmp_path)]) == 2
    assert error_lines(capsys.readouterr().err)[-1] == (
        f"reangle: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert no_engine == []


def test_an_address_this_machine_does_not_have_is_one_line(
    tmp_path: Path, no_engine: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REANGLE_HOST", "192.0.2.1")  # TEST-NET-1: never a local address
    assert main(["serve", "--engine", "fake", "--port", "8000", "--data-dir", str(tmp_path)]) == 2
    assert error_lines(capsys.readouterr().err)[-1] == (
        "reangle: error: cannot listen on 192.0.2.1:8000: Cannot assign requested address"
    )


def test_a_data_folder_another_server_runs_on_is_refused_naming_its_pid(
    tmp_path: Path, no_engine: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    running = DataFolderLock(tmp_path)
    running.acquire()
    try:
        assert (
            main(["serve", "--engine", "fake", "--port", str(free_port()), "--data-dir", str(tmp_path)]) == 2
        )
    finally:
        running.release()
    assert error_lines(capsys.readouterr().err)[-1] == (
        f"reangle: error: another reangle server (pid {os.getpid()}) is running on the data folder "
        f"{tmp_path}: stop it, or give this one its own --data-dir"
    )
    assert no_engine == []


def test_a_released_data_folder_can_be_taken_again(tmp_path: Path) -> None:
    first = DataFolderLock(tmp_path)
    first.acquire()
    first.release()
    second = DataFolderLock(tmp_path)
    second.acquire()
    assert (tmp_path / "server.lock").read_text() == f"{os.getpid()}\n"
    second.release()


@pytest.fixture
def server_logging() -> Iterator[None]:
    """`reangle serve` in this process configures the uvicorn and reangle loggers: as they were afterwards."""
    loggers = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "reangle")]
    saved = [(logger.handlers[:], logger.level, logger.propagate, logger.disabled) for logger in loggers]
    yield
    for logger, (handlers, level, propagate, disabled) in zip(loggers, saved, strict=True):
        logger.handlers[:], logger.level, logger.propagate, logger.disabled = (
            handlers,
            level,
            propagate,
            disabled,
        )


def test_serve_stops_with_exit_1_when_its_job_runtime_fails(
    tmp_path: Path, server_logging: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Recovery at start meets a malformed database: no job could ever run, so the server must not go on
    answering /healthz "ok"."""

    def malformed(self: JobService) -> None:
        raise sqlite3.DatabaseError("database disk image is malformed")

    monkeypatch.setattr(JobService, "recover", malformed)
    monkeypatch.setenv("REANGLE_AUTH", "off")
    assert main(["serve", "--engine", "fake", "--port", str(free_port()), "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "CRITICAL reangle.server: the runtime task failed: DatabaseError: " in err  # with its traceback
    assert error_lines(err)[-1] == (
        "reangle: stopped: the runtime task failed: DatabaseError: database disk image is malformed"
    )
    relaunch = DataFolderLock(tmp_path)
    relaunch.acquire()  # the stopped server let go of its data folder
    relaunch.release()


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("REANGLE_LORAS", "notjson", "not valid JSON (Expecting value: line 1 column 1 (char 0))"),
        (
            "REANGLE_RUNPOD_ENDPOINT_MODELS",
            "{ep: 1}",
            "not valid JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))",
        ),
        (
            "REANGLE_PUBLIC_BASE_URL",
            "reangle.example.com",
            "'reangle.example.com' is not an absolute http(s) URL such as https://reangle.example.com",
        ),
        (
            "REANGLE_SIGNING_SECRET",
            "   ",
            "is blank: set a long random string, or unset it to use the generated key",
        ),
        (
            "REANGLE_SIGNING_SECRET",
            "SUPERSECRETshort" + " " * 20,
            "has 16 characters, fewer than 32: one download link would let it be guessed offline; set a long "
            "random string (`openssl rand -hex 32`), or unset it to use the generated key",
        ),
        ("REANGLE_LORA_DIR", "/no/such/folder", "/no/such/folder is not a folder"),
        (
            "REANGLE_RUNPOD_ENDPOINT_MODELS",
            '{"ep-1": "qwen-edit"}',
            "endpoint 'ep-1' names unknown model 'qwen-edit'; choose from qwen-edit-multiangle-2511, "
            "qwen-image-edit-2511, qwen-image-2512, wan-2.7-image",
        ),
        (
            "REANGLE_RUNPOD_ENDPOINT_MODELS",
            '{"ep-1": "qwen-image-2512"}',
            "endpoint 'ep-1' names model 'qwen-image-2512', which the RunPod dialect cannot serve (it serves "
            "edits of images); choose from qwen-edit-multiangle-2511, qwen-image-edit-2511",
        ),
        (
            "REANGLE_RUNPOD_ENDPOINT_MODELS",
            '{"bad id!": "qwen-image-edit-2511"}',
            "endpoint id 'bad id!' is not one: use letters, digits, '.', '_', '-' or '~', at most 100",
        ),
        # numbers no clock or database can take (an infinite TTL made every upload a 500)
        ("REANGLE_RESULT_TTL_S", "inf", "Input should be a finite number"),
        ("REANGLE_UPLOAD_TTL_S", "1e400", "Input should be a finite number"),
        ("REANGLE_URL_TTL_S", "1e12", "1e+12 seconds is more than 10 years: use at most 315360000"),
        ("REANGLE_SWEEP_INTERVAL_S", "nan", "Input should be a finite number"),
        ("REANGLE_HEADER_TIMEOUT_S", "1e9", "1000000000 seconds is more than a day: use at most 86400"),
        ("REANGLE_MAX_QUEUE", "1" + "0" * 20, "Input should be less than or equal to 1000000000"),
        ("REANGLE_MAX_ATTEMPTS", "1000000", "Input should be less than or equal to 1000"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable(
    name: str,
    value: str,
    problem: str,
    tmp_path: Path,
    no_engine: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(name, value)
    assert main(["serve", "--engine", "fake", "--data-dir", str(tmp_path)]) == 2
    assert error_lines(capsys.readouterr().err)[-1] == f"reangle: error: bad setting: {name}: {problem}"
    assert no_engine == []


def test_empty_link_settings_mean_unset_and_a_base_url_loses_its_trailing_slash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REANGLE_SIGNING_SECRET", "")
    monkeypatch.setenv("REANGLE_PUBLIC_BASE_URL", "")
    assert (Settings().signing_secret, Settings().public_base_url) == (None, None)
    monkeypatch.setenv("REANGLE_PUBLIC_BASE_URL", " https://reangle.example.com/ ")
    assert Settings().public_base_url == "https://reangle.example.com"


@pytest.mark.parametrize(
    ("api_keys", "stored", "has_keys"),
    [("", False, False), (" , ,", False, False), ("k1", False, True), ("", True, True)],
)
def test_a_server_without_any_key_is_told_so(
    api_keys: str, stored: bool, has_keys: bool, tmp_path: Path
) -> None:
    """`REANGLE_API_KEYS=" , ,"` accepts no key: `serve` still says that none exists."""
    settings = Settings(api_keys=api_keys, data_dir=tmp_path)
    if stored:
        assert main(["keys", "create", "--name", "ci", "--data-dir", str(tmp_path)]) == 0
    assert serve.has_api_keys(settings) is has_keys


def test_the_start_line_writes_an_ipv6_host_as_a_url_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from reangle.api.stopping_server import StoppingServer

    monkeypatch.setattr(StoppingServer, "run", lambda _self, sockets: None)  # starts, serves nothing
    port = free_port()
    assert (
        main(["serve", "--engine", "fake", "--host", "::1", "--port", str(port), "--data-dir", str(tmp_path)])
        == 0
    )
    assert f"reangle: serving on http://[::1]:{port} (role all;" in capsys.readouterr().err


def test_a_data_folder_an_older_lockless_server_runs_on_is_refused_by_its_heartbeat(
    tmp_path: Path, no_engine: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """An older reangle took no lock: a recent heartbeat of a live process of this machine stops this one;
    a process that has ended is no server, however recent its beat."""

    def beat_from(pid: int) -> None:
        store = SqliteStore(tmp_path / SQLITE_FILE)
        now = time.time()
        name = f"{socket.gethostname()}:{pid}"
        store.record_worker(
            WorkerStatus(name=name, device="cpu", engine="fake", models=(), started_at=now, seen_at=now)
        )
        store.close()

    ended = subprocess.Popen(["true"])
    ended.wait()
    beat_from(ended.pid)
    with socket.socket() as taken:  # so that a server let through stops at its port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert main(["serve", "--engine", "fake", "--port", port, "--data-dir", str(tmp_path)]) == 2
    assert "cannot listen" in error_lines(capsys.readouterr().err)[-1]

    older = subprocess.Popen(["sleep", "60"])
    try:
        beat_from(older.pid)
        with sqlite3.connect(tmp_path / SQLITE_FILE) as db:  # as that older server's version left it
            db.execute("PRAGMA user_version = 0")
        assert main(["serve", "--engine", "fake", "--port", port, "--data-dir", str(tmp_path)]) == 2
    finally:
        older.kill()
        older.wait()
    with sqlite3.connect(tmp_path / SQLITE_FILE) as db:  # not upgraded under the server still running on it
        assert db.execute("PRAGMA user_version").fetchone() == (0,)
    assert error_lines(capsys.readouterr().err)[-1] == (
        f"reangle: error: another reangle server (pid {older.pid}) is running on the data folder "
        f"{tmp_path}: stop it, or give this one its own --data-dir"
    )
    assert no_engine == []
