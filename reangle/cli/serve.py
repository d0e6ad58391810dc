"""`reangle serve` (the server) and `reangle worker` (a scale-out worker); `reangle keys` is in keys.py."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reangle.catalog import load_catalog
from reangle.cli.db import upgrade_schema
from reangle.cli.open_files import raise_open_file_limit
from reangle.cli.queue_logs import ASYNCIO_LOGGER, QUEUE_LOGGER, QueueOutageLines, queue_handler
from reangle.core.models import MODELS, TASK_INPUTS, check_one_base_per_engine, install_catalog
from reangle.engine.base import ENGINE_NAMES, Engine, create_engine, cuda_available
from reangle.errors import InvalidInput
from reangle.settings import Settings
from reangle.store.data_lock import DataFolderLock, check_no_unlocked_server

if TYPE_CHECKING:
    from reangle.core.service import JobService
    from reangle.runtime.base import Runtime

DEMO_BANNER = """
==========================================================================================
  DEMO MODE: the {engine} engine's images are MEANINGLESS ({what}).
  {why}
==========================================================================================
"""
DEMO_ENGINES = {"tiny": "a random-weight model", "fake": "placeholder pictures, no model"}
#: reangle's own log lines (jobs started and ended, warnings), in `reangle serve` and `reangle worker`.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: psycopg's pool logs each failed reconnection (about two a second while PostgreSQL is down); reangle says
#: once that the database is away.
QUIET_POOL_LEVEL = "ERROR"


def add_serve_commands(commands: argparse._SubParsersAction[Any]) -> None:
    serve = commands.add_parser("serve", help="run the HTTP server (SQLite + files, nothing else to start)")
    serve.add_argument("--engine", choices=("auto", *ENGINE_NAMES), help="default: REANGLE_ENGINE or auto")
    serve.add_argument("--host", help="default: REANGLE_HOST or 127.0.0.1")
    serve.add_argument("--port", type=tcp_port, help="1 to 65535 (default: REANGLE_PORT or 8000)")
    serve.add_argument("--data-dir", type=Path, help="default: REANGLE_DATA_DIR or ~/.local/share/reangle")
    serve.add_argument(
        "--role",
        choices=("all", "api", "worker"),
        help="all: the API and the jobs (default: REANGLE_ROLE or all); api: the API only; worker: the jobs "
        "only (api and worker need REANGLE_DATABASE_URL=postgresql://...)",
    )
    serve.set_defaults(run=run_serve)

    worker = commands.add_parser(
        "worker", help="run jobs from a shared PostgreSQL database on one GPU (scale-out; no HTTP)"
    )
    worker.add_argument("--engine", choices=("auto", *ENGINE_NAMES), help="default: REANGLE_ENGINE or auto")
    worker.add_argument("--device", help="the GPU to use, e.g. cuda:1 (default: REANGLE_DEVICE or auto)")
    worker.add_argument(
        "--models", help="comma-separated model ids this worker takes (default: all its engine serves)"
    )
    worker.add_argument("--data-dir", type=Path, help="default: REANGLE_DATA_DIR or ~/.local/share/reangle")
    worker.add_argument(
        "--metrics-port",
        type=tcp_port,
        help="serve the Prometheus metrics of the jobs this worker runs at http://HOST:PORT/metrics "
        "(HOST: REANGLE_HOST or 127.0.0.1; default: none)",
    )
    worker.set_defaults(run=run_worker)


def tcp_port(text: str) -> int:
    """--port: a TCP port a server can listen on (argparse's one-line error otherwise)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range: use 1 to 65535")
    return port


def with_flags(settings: Settings, args: argparse.Namespace, *names: str) -> Settings:
    """The settings with the command's flags applied, and the data directory made absolute."""
    update = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    settings = settings.model_copy(update=update)
    return settings.model_copy(update={"data_dir": settings.data_dir.expanduser().resolve()})


def make_data_dir(settings: Settings, *, jobs_only: bool = False) -> None:
    """Create the data folder where the stores the settings name keep files in it (the SQLite database;
    asset files and the signing key unless REANGLE_STORAGE_URL is set): an unusable folder is then one line
    (InvalidInput), before any engine loads. `jobs_only`: the command opens only the job store."""
    uses_folder = not settings.database_url or (not jobs_only and not settings.storage_url)
    if not uses_folder:
        return
    try:
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # its owner's alone
    except OSError as exc:
        raise InvalidInput(
            f"cannot create the data folder {settings.data_dir}: {exc.strerror or exc}", field="data-dir"
        ) from None


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from reangle.api.app import create_app
    from reangle.api.slow_clients import timed_protocol
    from reangle.api.stopping_server import StoppingServer
    from reangle.compose import check_role, make_cache_dir

    settings = with_flags(settings, args, "engine", "host", "port", "data_dir", "role")
    check_role(settings)
    raise_open_file_limit()
    make_data_dir(settings)
    if settings.role != "api":  # it runs jobs: their LoRAs are cached there
        make_cache_dir(settings)
    _serve_catalog(settings)
    if settings.role == "worker":
        return _work(settings, models=None)
    data_lock = DataFolderLock(settings.data_dir)
    if not settings.database_url:
        data_lock.acquire()
    _upgrade_schema(settings)
    listener = bound_socket(settings.host, settings.port)  # before the engine loads: a taken port is one line
    settings, engine = _engine(settings, load=settings.role == "all")
    if settings.auth == "on" and not has_api_keys(settings):
        print(
            "reangle: no API keys yet: make one with `reangle keys create`, or set REANGLE_AUTH=off",
            file=sys.stderr,
        )
    app = create_app(settings, engine)
    config = uvicorn.Config(
        app,
        log_level="info",
        log_config=server_logging(),
        timeout_graceful_shutdown=5,
        http=timed_protocol(settings.header_timeout_s),
    )
    state = app.state.reangle
    server = StoppingServer(config, on_stop=state.service.stop_waiting)
    state.on_failure = lambda: setattr(server, "should_exit", True)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host  # IPv6, as URLs write it
    print(
        f"reangle: serving on http://{host}:{settings.port} (role {settings.role}; {_where(settings)})",
        file=sys.stderr,
    )
    try:
        server.run(sockets=[listener])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl+C it caught once it has shut down
        pass
    finally:
        data_lock.release()
    if state.failure is not None:
        print(f"reangle: stopped: {state.failure}", file=sys.stderr)
        return 1
    return 0


def server_logging() -> dict[str, Any]:
    """uvicorn's logging configuration (its access lines by PlainAccessFormatter), with reangle's own lines at
    INFO, timestamped, on stderr."""
    from reangle.api.access_log import log_config

    config = log_config()
    config["formatters"]["reangle"] = {"format": LOG_FORMAT}
    config["handlers"]["reangle"] = {
        "class": "logging.StreamHandler",
        "formatter": "reangle",
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["reangle"] = {"handlers": ["reangle"], "level": "INFO", "propagate": False}
    config["loggers"]["psycopg.pool"] = {"level": QUIET_POOL_LEVEL}
    # a malformed form is answered 422 naming it: the form parser's own warnings would be bare stderr lines
    config["loggers"]["python_multipart"] = {"level": "ERROR"}
    config["handlers"]["queue"] = {"()": queue_handler, "format": LOG_FORMAT}
    config["loggers"][QUEUE_LOGGER] = {"handlers": ["queue"], "level": "WARNING", "propagate": False}
    config.setdefault("filters", {})["queue_outage"] = {"()": QueueOutageLines}
    config["loggers"][ASYNCIO_LOGGER] = {
        "handlers": ["reangle"],
        "filters": ["queue_outage"],
        "propagate": False,
    }
    return config


def worker_logging() -> None:
    """A worker's own lines at INFO, timestamped, on stderr, and the libraries' from WARNING (httpx would log
    each webhook URL, a receiver's token included); Procrastinate's outage lines quiet (as `server_logging`
    has them)."""
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    logging.getLogger("reangle").setLevel(logging.INFO)
    queue_logger = logging.getLogger(QUEUE_LOGGER)
    queue_logger.setLevel(logging.WARNING)
    queue_logger.addHandler(queue_handler(LOG_FORMAT))
    queue_logger.propagate = False
    logging.getLogger(ASYNCIO_LOGGER).addFilter(QueueOutageLines())
    logging.getLogger("psycopg.pool").setLevel(QUIET_POOL_LEVEL)


def bound_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port for the server to listen on; InvalidInput when it cannot be."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InvalidInput(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            field="host" if isinstance(exc, socket.gaierror) else "port",
        ) from None
    return sock


def run_worker(args: argparse.Namespace, settings: Settings) -> int:
    from reangle.compose import check_role, make_cache_dir

    settings = with_flags(settings, args, "engine", "device", "data_dir").model_copy(
        update={"role": "worker"}
    )
    check_role(settings)
    raise_open_file_limit()
    make_data_dir(settings)
    make_cache_dir(settings)
    models = (
        None if args.models is None else [model.strip() for model in args.models.split(",") if model.strip()]
    )
    if models == []:  # an unset variable in a script: it must not quietly take every model
        raise InvalidInput(
            f"--models names no model ({args.models!r}): give model ids separated by commas, or leave "
            "--models out to take every model",
            field="models",
        )
    _serve_catalog(settings, models)
    metrics_socket = bound_socket(settings.host, args.metrics_port) if args.metrics_port else None
    return _work(settings, models, metrics_socket)


def _upgrade_schema(settings: Settings) -> None:
    """Bring the database's schema up to date before an engine loads, saying which PostgreSQL migrations
    that took; on SQLite, opening the file does it (with the data folder's lock held: an older server
    that takes none, still running on it, stops this one here). A database a newer reangle upgraded stops
    here too."""
    from reangle.compose import SQLITE_FILE, open_job_store

    if not settings.database_url:
        check_no_unlocked_server(settings.data_dir / SQLITE_FILE, settings.data_dir)
        open_job_store(settings).close()
    for migration in upgrade_schema(settings):
        print(
            f"reangle: applied schema migration {migration.version}: {migration.description}", file=sys.stderr
        )


def _serve_catalog(settings: Settings, models: list[str] | None = None) -> None:
    """Serve the shipped models and the operator's catalog file; a bad entry stops here with one line, as do
    `models`, the ones a worker was asked for, unless each can run here."""
    catalog = load_catalog(settings.catalog_file, inputs=TASK_INPUTS)
    check_one_base_per_engine(catalog)
    install_catalog(catalog, settings.model_dump())
    if models is not None:
        check_worker_models(models)
    for spec in MODELS.values():
        if models is None and spec.unavailable:  # a worker asked for some models runs only those
            print(f"reangle: note: model {spec.id} is unavailable: {spec.unavailable}", file=sys.stderr)
    check_served_settings(settings)


def check_worker_models(models: list[str]) -> None:
    """`reangle worker --models`: each a served model that this worker can run, which it would otherwise only
    fail (Wan without a DashScope key), leaving the jobs a worker that can run them would take."""
    for model in models:
        if model not in MODELS:
            raise InvalidInput(f"unknown model {model!r}; choose from {', '.join(MODELS)}", field="models")
        unavailable = MODELS[model].unavailable
        if unavailable:
            raise InvalidInput(f"--models: {model} cannot run here: {unavailable}", field="models")


def check_served_settings(settings: Settings) -> None:
    """Settings that name things the server serves or reads, checked against them once it knows them."""
    if settings.lora_dir is not None and not settings.lora_dir.is_dir():
        raise InvalidInput(
            f"bad setting: REANGLE_LORA_DIR: {settings.lora_dir} is not a folder", field="lora_dir"
        )
    from reangle.catalog.parse import DIALECT_TASKS
    from reangle.dialects.runpod import checked_endpoint_id

    bad, tasks = "bad setting: REANGLE_RUNPOD_ENDPOINT_MODELS", DIALECT_TASKS["runpod"]
    for endpoint, model in settings.runpod_endpoint_models.items():
        try:
            checked_endpoint_id(endpoint)
        except InvalidInput as exc:  # no client could call it
            raise InvalidInput(f"{bad}: {exc.message}", field="runpod_endpoint_models") from None
        if model not in MODELS:
            raise InvalidInput(
                f"{bad}: endpoint {endpoint!r} names unknown model {model!r}; "
                f"choose from {', '.join(MODELS)}",
                field="runpod_endpoint_models",
            )
        if MODELS[model].entry.task not in tasks:
            served = ", ".join(spec.id for spec in MODELS.values() if spec.entry.task in tasks)
            raise InvalidInput(
                f"{bad}: endpoint {endpoint!r} names model {model!r}, which the RunPod dialect cannot serve "
                f"(it serves edits of images); choose from {served}",
                field="runpod_endpoint_models",
            )


def _work(settings: Settings, models: list[str] | None, metrics_socket: socket.socket | None = None) -> int:
    """A worker process: runs jobs until SIGTERM or SIGINT; then the job in hand gets a few seconds to end
    before it goes back to the queue for another worker, and the process exits. With `metrics_socket`, the
    metrics of the jobs it ends are served there."""
    from reangle.api.metrics import Metrics
    from reangle.compose import build_service, open_runtime

    _upgrade_schema(settings)
    worker_logging()
    settings, engine = _engine(settings, load=True)
    service = build_service(settings, engine)
    runtime = open_runtime(settings, service, engine, models=models)
    metrics_server = None
    if metrics_socket is not None:
        metrics_server = Metrics(service, store_gauges=False).serve(metrics_socket)
    print(f"reangle: worker on {engine.info.device} ({_where(settings)})", file=sys.stderr)
    try:
        asyncio.run(_until_stopped(service, runtime))
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
    print("reangle: worker stopped", file=sys.stderr)
    return 0


async def _until_stopped(service: JobService, runtime: Runtime) -> None:
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(stop_signal, main.cancel)
    listener = asyncio.create_task(service.events.listen(), name="events")
    try:
        await runtime.run()
    except asyncio.CancelledError:
        pass
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        service.events.close()
        service.store.close()


def _where(settings: Settings) -> str:
    """Where the state lives, without passwords."""
    from reangle.compose import describe_storage

    return describe_storage(settings)


def _engine(settings: Settings, *, load: bool) -> tuple[Settings, Engine]:
    """The engine the settings name, loaded unless `load` is false (an API replica only plans jobs)."""
    why = "Chosen with --engine or REANGLE_ENGINE. Use --engine qwen on a CUDA GPU for real edits."
    if settings.engine == "auto":
        settings = settings.model_copy(update={"engine": "qwen" if cuda_available() else "tiny"})
        why = "No CUDA GPU here, so reangle runs the tiny engine. Use a CUDA machine for real edits."
    if settings.engine in DEMO_ENGINES:
        banner = DEMO_BANNER.format(engine=settings.engine, what=DEMO_ENGINES[settings.engine], why=why)
        print(banner, file=sys.stderr)
    engine = create_engine(settings.engine, settings)
    if not load:
        return settings, engine
    print(f"reangle: loading the {engine.info.name} engine ...", file=sys.stderr)
    engine.load()  # here, not in the app's startup: a failure is then one clear line, not a traceback
    if engine.info.options:
        options = " ".join(f"{name}={value}" for name, value in engine.info.options.items())
        print(f"reangle: engine options: {options}", file=sys.stderr)
    for note in engine.info.notes:
        print(f"reangle: note: {note}", file=sys.stderr)
    return settings, engine


def has_api_keys(settings: Settings) -> bool:
    """Whether any key would be accepted: one in REANGLE_API_KEYS (not just commas and blanks) or stored."""
    from reangle.api.auth import listed_keys

    if listed_keys(settings.api_keys):
        return True
    from reangle.compose import open_job_store

    store = open_job_store(settings)
    try:
        return store.count_api_keys() > 0
    finally:
        store.close()
