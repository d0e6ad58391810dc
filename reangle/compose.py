"""The composition root: the job service on the job store, blob store and event bus the settings ask for,
and what runs the jobs.

Each back end is one module under `reangle.store`, named here by its URL scheme and imported only when chosen
(the embedded default imports neither psycopg nor boto3).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from reangle.core.assets import AssetService
from reangle.core.lora_refs import LoraRules
from reangle.core.ports import BlobStore, EventBus, JobStore
from reangle.core.service import JobService, ServiceLimits
from reangle.engine.base import Engine
from reangle.errors import InvalidInput
from reangle.runtime.base import Runtime
from reangle.settings import Settings
from reangle.store.url_fetch import FetchPolicy, fetch_url

if TYPE_CHECKING:
    from reangle.engine.lora_sources import LoraSources
    from reangle.engine.rewriter import PromptRewriter
    from reangle.remote.dashscope import DashScopeClient
    from reangle.runtime.local import LocalRunner
    from reangle.runtime.lora_prefetch import LoraPrefetch
    from reangle.runtime.webhook_sender import WebhookSender

SQLITE_FILE = "reangle.sqlite3"
T = TypeVar("T")


class SettingsError(InvalidInput):
    """A setting names a back end this reangle does not have, or asks for a role it cannot take."""


def open_job_store(settings: Settings) -> JobStore:
    url = settings.database_url
    if not url:
        from reangle.store.sqlite import SqliteStore

        return SqliteStore(settings.data_dir / SQLITE_FILE)
    return _opener(JOB_STORES, url, "REANGLE_DATABASE_URL")(url, settings)


def open_blob_store(settings: Settings) -> BlobStore:
    url = settings.storage_url
    if not url:
        from reangle.store.files import FileBlobStore

        return FileBlobStore(settings.data_dir / "assets")
    return _opener(BLOB_STORES, url, "REANGLE_STORAGE_URL")(url, settings)


def shared_database_url(settings: Settings) -> str | None:
    """The PostgreSQL database the processes of a deployment share; None on the embedded SQLite store."""
    url = settings.database_url
    return url if url and urlsplit(url).scheme.lower() in JOB_STORES else None


def open_event_bus(settings: Settings, store: JobStore) -> EventBus:
    """Between the processes sharing the database: PostgreSQL's NOTIFY; in-process otherwise."""
    url = shared_database_url(settings)
    if url:
        from reangle.runtime.pg_bus import PgEventBus

        return PgEventBus(url, store)
    from reangle.runtime.local_bus import LocalEventBus

    return LocalEventBus(store.get_job)


def build_service(settings: Settings, engine: Engine) -> JobService:
    """The job service on the stores and event bus the settings name, for jobs run on `engine`."""
    store = open_job_store(settings)
    assets = AssetService(
        store,
        open_blob_store(settings),
        max_bytes=settings.max_upload_bytes,
        max_pixels=settings.max_upload_pixels,
        upload_ttl_s=settings.upload_ttl_s,
        result_ttl_s=settings.result_ttl_s,
        max_concurrent_decodes=settings.max_concurrent_decodes,
    )
    policy = FetchPolicy(
        allow_private=settings.allow_private_urls,
        max_bytes=settings.max_upload_bytes,
        timeout_s=settings.url_fetch_timeout_s,
    )

    async def fetch(url: str, where: str) -> bytes:
        return await fetch_url(url, policy, field=where)

    limits = ServiceLimits(
        max_queue=settings.max_queue,
        max_queue_per_key=settings.max_queue_per_key,
        max_attempts=settings.max_attempts,
        result_ttl_s=settings.result_ttl_s,
        sizes=engine.info.limits,
        target_area=engine.info.target_area,
        # embedded: this process runs the jobs, so its LoRA settings are the runner's
        loras=None
        if shared_database_url(settings)
        else LoraRules.of(settings.loras, paths_allowed=settings.lora_dir is not None),
    )
    return JobService(store, assets, fetch, limits, events=open_event_bus(settings, store))


def check_database_url(settings: Settings) -> None:
    """SettingsError naming the schemes taken for a REANGLE_DATABASE_URL that names no store reangle has."""
    if settings.database_url:
        _opener(JOB_STORES, settings.database_url, "REANGLE_DATABASE_URL")


def check_role(settings: Settings) -> None:
    """SettingsError unless the role can run on the settings' database: `api` and `worker` need one shared
    between processes. Cheap: the CLI asks before it loads an engine."""
    check_database_url(settings)
    if settings.role != "all" and not shared_database_url(settings):
        raise SettingsError(
            f"role {settings.role!r} needs a database shared between processes",
            hint="set REANGLE_DATABASE_URL=postgresql://...; the embedded SQLite default runs role all",
        )


def open_runtime(
    settings: Settings, service: JobService, engine: Engine, *, models: Collection[str] | None = None
) -> Runtime:
    """What runs the jobs of this process. On the embedded store: the in-process runner and sweeper (role
    `all` only). On PostgreSQL: a Procrastinate worker (roles `all` and `worker`) or nothing (role `api`:
    the workers run the jobs)."""
    check_role(settings)
    url = shared_database_url(settings)
    if not url:
        from reangle.runtime.embedded import EmbeddedRuntime

        runner = job_runner(settings, service, engine)
        return EmbeddedRuntime(
            service,
            engine,
            runner,
            sweep_interval_s=settings.sweep_interval_s,
            webhooks=webhook_sender(settings, service, engine),
            prefetch=lora_prefetch(service, runner.preparer.loras),
        )
    if settings.role == "api":
        from reangle.runtime.base import NoRuntime

        return NoRuntime()
    from reangle.runtime.worker import WorkerRuntime

    webhooks = webhook_sender(settings, service, engine)
    runner = job_runner(settings, service, engine)
    return WorkerRuntime(url, service, engine, settings, runner=runner, models=models, webhooks=webhooks)


def job_runner(settings: Settings, service: JobService, engine: Engine) -> LocalRunner:
    """The runner of this process's jobs: the engine, with the prompt rewriter, the request LoRAs' sources
    and the remote models' clients the settings configure."""
    from reangle.runtime.job_prep import JobPreparer
    from reangle.runtime.local import LocalRunner
    from reangle.runtime.remote_jobs import RemoteJobs

    preparer = JobPreparer(
        service,
        rewriter=prompt_rewriter(settings, engine),
        loras=lora_sources(settings),
        layers=engine.lora_layers,
    )
    remote = RemoteJobs(
        service,
        preparer,
        dashscope_clients(settings),
        concurrency=settings.remote_concurrency,
        unavailable=DASHSCOPE_UNAVAILABLE,
    )
    return LocalRunner(service, engine, preparer=preparer, remote=remote)


#: The settings the tiny rewriter takes when the user set them (its own options are sized for its model).
TINY_REWRITER_SETTINGS = {"rewriter_max_new_tokens": "max_new_tokens", "rewriter_timeout_s": "timeout_s"}

DASHSCOPE_UNAVAILABLE = "set REANGLE_DASHSCOPE_API_KEY to run it through Alibaba's DashScope API"


def prompt_rewriter(settings: Settings, engine: Engine) -> PromptRewriter | None:
    """The Qwen3-VL rewriter the settings name, built at its first use (or now, with rewriter_preload).
    The demo engines run a tiny random-weight (tiny) or scripted (fake) rewriter unless the setting names a
    local checkpoint folder; the tiny one keeps its own answer length and timeout unless those are set."""
    from reangle.engine.rewriter import LazyRewriter, RewriteOptions, load_rewriter

    choice = settings.rewriter_model.strip()
    if choice.lower() == "off":
        return None
    local = Path(choice).expanduser().is_dir()
    options = RewriteOptions(
        max_new_tokens=settings.rewriter_max_new_tokens, timeout_s=settings.rewriter_timeout_s
    )
    if engine.info.name == "fake" and not local:
        from reangle.engine.fake_rewriter import FakeRewriter

        return FakeRewriter()
    if engine.info.name == "tiny" and not local:
        from reangle.engine.tiny_rewriter import TINY_OPTIONS, tiny_rewriter

        given = {
            option: getattr(settings, setting)
            for setting, option in TINY_REWRITER_SETTINGS.items()
            if setting in settings.model_fields_set
        }
        tiny_options = replace(TINY_OPTIONS, **given)
        rewriter = LazyRewriter(lambda: tiny_rewriter(tiny_options))
    else:
        device = engine.info.device if settings.rewriter_device == "auto" else settings.rewriter_device
        rewriter = LazyRewriter(
            lambda: load_rewriter(choice, device=device, offline=settings.offline, options=options)
        )
    if settings.rewriter_preload:
        rewriter.load()
    return rewriter


def lora_sources(settings: Settings) -> LoraSources:
    from reangle.engine.lora_sources import LoraSources, LoraSourcesConfig

    policy = FetchPolicy(
        allow_private=settings.allow_private_urls,
        max_bytes=settings.lora_max_bytes,
        timeout_s=settings.lora_fetch_timeout_s,
    )
    try:
        config = LoraSourcesConfig(
            cache_dir=settings.cache_dir / "loras",
            max_cache_bytes=settings.lora_cache_bytes,
            fetch=policy,
            allowed_dir=settings.lora_dir,
            registered=settings.loras,
            strict=settings.lora_strict,
        )
    except ValueError as exc:
        raise SettingsError(f"REANGLE_LORA_MAX_BYTES / REANGLE_LORA_CACHE_BYTES: {exc}") from None
    try:
        return LoraSources(config)
    except OSError as exc:
        raise _unusable_cache_dir(settings, exc) from None


def make_cache_dir(settings: Settings) -> None:
    """Create the cache folder's LoRA folder, which a process running jobs needs: an unusable
    REANGLE_CACHE_DIR, or a LoRA cache smaller than the largest LoRA a request may name, is then one line
    (SettingsError) before any engine loads."""
    if settings.lora_max_bytes > settings.lora_cache_bytes:
        raise SettingsError(
            f"bad setting: REANGLE_LORA_CACHE_BYTES: {settings.lora_cache_bytes:,} bytes cannot hold the "
            f"largest LoRA a request may name (REANGLE_LORA_MAX_BYTES, {settings.lora_max_bytes:,} bytes)",
            field="lora_cache_bytes",
        )
    try:
        (settings.cache_dir / "loras").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unusable_cache_dir(settings, exc) from None


def _unusable_cache_dir(settings: Settings, exc: OSError) -> SettingsError:
    return SettingsError(
        f"bad setting: REANGLE_CACHE_DIR: cannot create folders in {settings.cache_dir}: "
        f"{exc.strerror or exc}",
        field="cache_dir",
    )


def lora_prefetch(service: JobService, loras: LoraSources | None) -> LoraPrefetch | None:
    """The download of queued jobs' LoRA URLs into the runner's cache (`loras`), for a process that runs
    the jobs it accepts (the embedded server); None without LoRA sources, or when every job must fetch its
    URLs itself (url_trust_s 0)."""
    if loras is None or loras.config.url_trust_s <= 0:
        return None
    from reangle.runtime.lora_prefetch import LoraPrefetch

    return LoraPrefetch(service, loras)


def dashscope_clients(settings: Settings) -> Callable[[str], DashScopeClient] | None:
    """A new DashScope client per job (for the vendor model it names); None without an API key."""
    key = settings.dashscope_api_key.get_secret_value().strip() if settings.dashscope_api_key else ""
    if not key:
        return None
    from reangle.remote.dashscope import DashScopeClient, DashScopeConfig

    download = FetchPolicy(allow_private=settings.allow_private_urls, max_bytes=64 * 1024 * 1024)

    def client(model: str) -> DashScopeClient:
        config = DashScopeConfig(
            api_key=key,
            base_url=settings.dashscope_base_url,
            model=model,
            poll_interval_s=settings.dashscope_poll_interval_s,
            max_poll_interval_s=max(10.0, settings.dashscope_poll_interval_s),
            task_timeout_s=settings.dashscope_task_timeout_s,
            download=download,
        )
        return DashScopeClient(config)

    return client


def webhook_sender(settings: Settings, service: JobService, engine: Engine) -> WebhookSender:
    """The sender of the outbox's deliveries, with payloads carrying the download links the API gives."""
    from reangle.api.state import url_signer
    from reangle.api.webhook_payloads import PayloadRenderer
    from reangle.runtime.webhook_sender import WebhookSender

    renderer = PayloadRenderer(
        service,
        url_signer(settings, service.store),
        public_base_url=settings.public_base_url,
        url_ttl_s=settings.url_ttl_s,
        demo=engine.info.demo,
    )
    policy = FetchPolicy(allow_private=settings.allow_private_urls, timeout_s=settings.url_fetch_timeout_s)
    return WebhookSender(
        service.store, renderer.render, retry_base_s=settings.webhook_retry_base_s, policy=policy
    )


def storage_summary(settings: Settings) -> dict[str, str]:
    """Where jobs and assets live, for /healthz (no passwords)."""
    return {
        "jobs": _without_password(settings.database_url) if settings.database_url else "sqlite",
        "assets": settings.storage_url or "files",
    }


def describe_storage(settings: Settings) -> str:
    """Where jobs and assets live, for the log (no passwords)."""
    where = storage_summary(settings)
    return f"jobs in {where['jobs']}, assets in {where['assets']}, data in {settings.data_dir}"


def _postgres(url: str, settings: Settings) -> JobStore:
    from reangle.store.postgres import PostgresStore

    return PostgresStore(url)


def _s3(url: str, settings: Settings) -> BlobStore:
    from reangle.store.s3 import S3BlobStore

    try:
        return S3BlobStore.from_settings(url, settings)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


JOB_STORES: dict[str, Callable[[str, Settings], JobStore]] = {"postgresql": _postgres, "postgres": _postgres}
BLOB_STORES: dict[str, Callable[[str, Settings], BlobStore]] = {"s3": _s3}


def _opener(openers: dict[str, T], url: str, setting: str) -> T:
    scheme = urlsplit(url).scheme.lower()
    if scheme not in openers:
        choices = ", ".join(f"{name}://..." for name in openers)
        raise SettingsError(f"{setting}={_without_password(url)!r}: use {choices}, or leave it empty")
    return openers[scheme]


def _without_password(url: str) -> str:
    """Scheme, host, port and path only: no user, password or query (libpq takes `?password=` too)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return f"{parts.scheme}://{netloc}{parts.path}"
