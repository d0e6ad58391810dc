"""The one Settings object: environment variables prefixed `REANGLE_`, built once and passed down."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr
from pydantic_core import PydanticUseDefault
from pydantic_settings import BaseSettings, SettingsConfigDict

from reangle.remote.base_url import base_url_problem

EngineName = Literal["auto", "qwen", "tiny", "fake"]
CompileMode = Literal["off", "blocks"]
QuantizeMode = Literal["none", "fp8"]
FuseMode = Literal["off", "default"]
#: `auto`: the measured fast choice on the GPUs it was measured on (H100, H200), else off.
CompileSetting = Literal["auto", "off", "blocks"]
FuseSetting = Literal["auto", "off", "default"]

HUB_MODEL = "Qwen/Qwen-Image-Edit-2511"
HUB_LIGHTNING = "lightx2v/Qwen-Image-Edit-2511-Lightning"
HUB_LIGHTNING_4STEP = f"{HUB_LIGHTNING}/Qwen-Image-Edit-2511-Lightning-4steps-V1.0-bf16.safetensors"
HUB_LIGHTNING_8STEP = f"{HUB_LIGHTNING}/Qwen-Image-Edit-2511-Lightning-8steps-V1.0-bf16.safetensors"
HUB_ANGLES = (
    "fal/Qwen-Image-Edit-2511-Multiple-Angles-LoRA/qwen-image-edit-2511-multiple-angles-lora.safetensors"
)
HUB_TEXT_TO_IMAGE_MODEL = "Qwen/Qwen-Image-2512"
HUB_TEXT_TO_IMAGE_LIGHTNING = "lightx2v/Qwen-Image-2512-Lightning"
HUB_TEXT_TO_IMAGE_LIGHTNING_4STEP = (
    f"{HUB_TEXT_TO_IMAGE_LIGHTNING}/Qwen-Image-2512-Lightning-4steps-V1.0-bf16.safetensors"
)
HUB_TEXT_TO_IMAGE_LIGHTNING_8STEP = (
    f"{HUB_TEXT_TO_IMAGE_LIGHTNING}/Qwen-Image-2512-Lightning-8steps-V1.0-bf16.safetensors"
)
DASHSCOPE_INTL = "https://dashscope-intl.aliyuncs.com"


def _endpoint(url: str) -> str:
    """A vendor endpoint setting, refused at startup when unusable (rather than failing every job later)."""
    problem = base_url_problem(url)
    if problem is not None:
        raise ValueError(f"must be the http(s) URL of the region's endpoint, as {DASHSCOPE_INTL}; {problem}")
    return url.strip()


def _tcp_port(port: int) -> int:
    """A port a server can listen on: 0 would be any free port, not the one printed."""
    if not 1 <= port <= 65535:
        raise ValueError(f"{port} is not a TCP port: use 1 to 65535")
    return port


def _public_base_url(url: str | None) -> str | None:
    """The absolute base of the links handed out: a typo would break every link, so it stops the start."""
    if not url:  # unset, or set empty
        return None
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"{url!r} is not an absolute http(s) URL such as https://reangle.example.com")
    return url.strip().rstrip("/")


#: The shortest link-signing secret taken (as the generated key's file): one download link would let a shorter
#: one be found offline, and with it any link signed.
MIN_SIGNING_SECRET_CHARS = 32


def _secret(value: str | None) -> str | None:
    """A key of spaces would sign every link with nothing secret in it; empty means unset."""
    if not value:
        return None
    if not value.strip():
        raise ValueError("is blank: set a long random string, or unset it to use the generated key")
    length = len(value.strip())
    if length < MIN_SIGNING_SECRET_CHARS:
        raise ValueError(
            f"has {length} characters, fewer than {MIN_SIGNING_SECRET_CHARS}: one download link would "
            "let it be guessed offline; set a long random string (`openssl rand -hex 32`), or unset it to "
            "use the generated key"
        )
    return value


def _empty_is_unset(value: object) -> object:
    """A folder, file or count set to the empty string (`REANGLE_LORA_DIR=` in an env file) is unset: its
    default, never the working directory (which the empty path is) nor a refused number."""
    if value == "":
        raise PydanticUseDefault
    return value


EmptyIsUnset = BeforeValidator(_empty_is_unset)


def _registered_loras(loras: dict[str, str]) -> dict[str, str]:
    """Each registered LoRA's location: an http(s) URL without a user name or password (it would be written
    in logs and errors), or the absolute path of a .safetensors file (a relative one would depend on the
    directory the server started in)."""
    for name, location in loras.items():
        scheme, separator, _ = location.partition("://")
        if separator:
            authority = urlsplit(location).netloc
            if scheme.lower() not in ("http", "https") or not authority:
                raise ValueError(f"{name}: {scheme}:// is not taken: give an http(s) URL or a file's path")
            if "@" in authority:
                raise ValueError(f"{name}: the URL holds a user name or password, which is not taken")
        elif not Path(location).expanduser().is_absolute() or not location.endswith(".safetensors"):
            raise ValueError(f"{name}: {location!r} is not the absolute path of a .safetensors file")
    return loras


def _at_most(limit: float, words: str) -> Callable[[float], float]:
    """A bound on a number of seconds: far past it is a typo, or a value whose date no clock can write."""

    def check(seconds: float) -> float:
        if seconds > limit:
            raise ValueError(f"{seconds:.12g} seconds is more than {words}: use at most {limit:.0f}")
        return seconds

    return check


#: Ten years: a TTL or sweep interval of `inf` or 1e12 would date links and expiries past the year 9999.
TEN_YEARS_S = 10 * 365 * 24 * 3600
ONE_DAY_S = 24 * 3600
#: How long something lasts or waits (TTLs, the sweep's interval): finite, positive, at most ten years.
Lifetime = Annotated[
    float, Field(gt=0, allow_inf_nan=False), AfterValidator(_at_most(TEN_YEARS_S, "10 years"))
]
#: A deadline or a wait between tries: finite, positive, at most a day.
Timeout = Annotated[float, Field(gt=0, allow_inf_nan=False), AfterValidator(_at_most(ONE_DAY_S, "a day"))]
#: A count the job store compares in SQL (a 64-bit integer there): far beyond any real queue.
MAX_COUNT = 1_000_000_000


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "reangle"


def _default_data_dir() -> Path:
    """The same for `reangle serve` and `reangle keys create` whatever directory each is started from."""
    return Path.home() / ".local" / "share" / "reangle"


class Settings(BaseSettings):
    """Every setting of reangle. Each field reads the environment variable REANGLE_<FIELD NAME>."""

    model_config = SettingsConfigDict(env_prefix="REANGLE_", extra="ignore")

    engine: EngineName = "auto"
    #: Base pipeline: a hub id or a local directory in diffusers layout.
    model: str = HUB_MODEL
    #: LoRA locations: a local .safetensors file or `<owner>/<repo>/<file>` on the hub; empty disables.
    lightning_4step_lora: str = HUB_LIGHTNING_4STEP
    lightning_8step_lora: str = HUB_LIGHTNING_8STEP
    angles_lora: str = HUB_ANGLES
    #: Refuse a LoRA file that names modules the transformer does not have (a LoRA for another model runs
    #: half-applied otherwise); false loads the modules that match and says which were left out.
    lora_strict: bool = True
    #: Never reach the hub: models and LoRAs must already be local or in the hub cache.
    offline: bool = False
    device: str = "auto"
    #: Move whole components to the GPU only while they run (for cards under ~64 GB).
    cpu_offload: bool = False
    #: Default output area in pixels when no size is given (the aspect follows the last input image).
    target_area: int = Field(default=1024 * 1024, gt=0)
    #: Outputs above this many pixels are VAE-decoded in tiles, to bound memory (about 4 GB per megapixel
    #: decoded whole in bf16); smaller outputs are decoded whole.
    vae_tile_area: int = Field(default=2 * 1024 * 1024, gt=0)
    #: Area at which each reference image is VAE-encoded (the model's own value is 1 MP).
    reference_area: int = Field(default=1024 * 1024, gt=0)
    #: Attention kernel of the transformer: a diffusers backend name (native, _native_cudnn, _native_flash,
    #: _native_efficient, flash, _flash_3, ...), checked when the model loads.
    attention_backend: str = "native"
    #: `blocks`: torch.compile one transformer block, reused by all 60; loading then runs one warm-up edit.
    #: `auto`: blocks on an H100 or H200 (falling back to eager, with a note, if compiling fails), else off.
    compile: CompileSetting = "auto"
    #: `fp8`: e4m3 weights and FP8 matmuls in the transformer blocks' linear layers (needs FP8 GPUs: H100...).
    quantize: QuantizeMode = "none"
    #: `default`: bake the default request's LoRAs (4-step Lightning and angles at 1.0) into the transformer
    #: weights at load; other requests run only the difference, so every request keeps its exact LoRA weights.
    #: `auto`: default on an H100 or H200 without CPU offload, else off.
    fuse_loras: FuseSetting = "auto"
    #: How many recent reference images keep their VAE latents, so that another edit of the same picture (the
    #: next angle of one photo) skips encoding it; 0 encodes every time. About 7 MB of GPU memory per 1 MP
    #: image.
    reference_cache: int = Field(default=8, ge=0)
    #: Where the tiny demo pipeline is built and cached.
    cache_dir: Annotated[Path, EmptyIsUnset] = Field(default_factory=_default_cache_dir)
    #: Seconds the fake engine sleeps per denoising step.
    fake_step_seconds: Annotated[float, AfterValidator(_at_most(ONE_DAY_S, "a day"))] = Field(
        default=0.05, ge=0, allow_inf_nan=False
    )

    # text-to-image (Qwen-Image): its pipeline shares the edit pipeline's text encoder and VAE
    #: Qwen-Image in diffusers layout (hub id or local folder), loaded at the first generation; only its
    #: transformer/ and scheduler/ are read. Empty: no text-to-image.
    text_to_image_model: str = HUB_TEXT_TO_IMAGE_MODEL
    text_to_image_lightning_4step_lora: str = HUB_TEXT_TO_IMAGE_LIGHTNING_4STEP
    text_to_image_lightning_8step_lora: str = HUB_TEXT_TO_IMAGE_LIGHTNING_8STEP
    #: `both`: the edit and text-to-image transformers stay on the GPU (~95 GiB of weights: an H200);
    #: `swap`: one at a time, the other in host memory, moved when the kind of job changes (a few seconds);
    #: `auto`: both when the GPU has room for the second one after the edit model, else swap
    #: (docs/text-to-image.md).
    text_to_image_residency: Literal["auto", "both", "swap"] = "auto"

    # the prompt rewriter (Qwen3-VL)
    #: `2b`, `4b` or `8b` (Qwen/Qwen3-VL-<size>-Instruct), a hub id or a local folder; `off`: no rewriter
    #: (a job asking for a rewrite keeps its prompt and says why). 4b fits beside the edit model on an 80 GB
    #: GPU (docs/rewriter.md).
    rewriter_model: str = "4b"
    #: `auto`: the edit engine's device.
    rewriter_device: str = "auto"
    rewriter_max_new_tokens: int = Field(default=160, ge=8, le=1024)
    #: A rewrite taking longer keeps the original prompt.
    rewriter_timeout_s: Timeout = 20
    #: Load the rewriter when the worker starts rather than at the first request that asks for it.
    rewriter_preload: bool = False

    # requests' own LoRAs
    #: Largest LoRA file a request may name by URL.
    lora_max_bytes: int = Field(default=2 * 1024**3, gt=0)
    #: Bound of the disk cache of downloaded LoRAs (<cache_dir>/loras); least recently used go first.
    lora_cache_bytes: int = Field(default=20 * 1024**3, gt=0)

    lora_fetch_timeout_s: Timeout = 600
    #: The only folder `{"path": ...}` LoRA references may name; empty refuses them.
    lora_dir: Annotated[Path | None, EmptyIsUnset] = None
    #: LoRAs requests may name by id, as JSON ({"my-style": "/loras/style.safetensors" or an https URL}).
    loras: Annotated[dict[str, str], AfterValidator(_registered_loras)] = Field(default_factory=dict)
    #: Request LoRAs kept loaded on the GPU between jobs (least recently used are unloaded past it).
    lora_gpu_capacity: int = Field(default=4, ge=0)

    # remote models
    #: DashScope (Alibaba Model Studio) key for Wan 2.7 image; empty lists the model as unavailable.
    dashscope_api_key: SecretStr | None = None
    #: The region's endpoint; the vendor's documented paths are appended (Beijing: https://dashscope.aliyuncs.com).
    dashscope_base_url: Annotated[str, AfterValidator(_endpoint)] = DASHSCOPE_INTL
    #: First wait between polls of a vendor task; each next wait is half again as long, up to 10 s (or this).
    dashscope_poll_interval_s: float = Field(default=2.0, gt=0, le=60, allow_inf_nan=False)
    #: A vendor task not done this long after it was created fails its job (the vendor is not asked again).
    dashscope_task_timeout_s: Timeout = 600.0
    #: Remote jobs waited on at once (they hold no GPU).
    remote_concurrency: int = Field(default=4, ge=1)

    # the model catalog
    #: An operator's TOML catalog, added to (and overriding by id) the shipped one (docs/catalog.md).
    catalog_file: Annotated[Path | None, EmptyIsUnset] = None

    # server
    host: str = "127.0.0.1"
    port: Annotated[int, AfterValidator(_tcp_port)] = 8000
    #: SQLite database, asset files, hashed API keys and the URL-signing secret live here.
    data_dir: Annotated[Path, EmptyIsUnset] = Field(default_factory=_default_data_dir)
    #: What `reangle serve` runs: `all` (the API and the jobs), `api` (the API only: on PostgreSQL, workers
    #: started with `reangle worker` run the jobs) or `worker` (the jobs only, as `reangle worker` does).
    role: Literal["all", "api", "worker"] = "all"
    #: Where jobs, asset records and API keys live: empty for the SQLite file in the data directory, or
    #: `postgresql://user:password@host:port/dbname` (scale-out: many API replicas and workers share it).
    database_url: str | None = None
    #: Where asset bytes live: empty for files in the data directory, or `s3://bucket/prefix` for an
    #: S3-compatible object store (credentials and region the standard AWS ways: environment, profile...).
    storage_url: str | None = None
    #: The object store's endpoint as the servers reach it (default: AWS's own for the region).
    s3_endpoint_url: str | None = None
    #: The endpoint clients download from, which download links are signed for (default: s3_endpoint_url).
    s3_public_endpoint_url: str | None = None
    s3_region: str | None = None
    #: Address buckets as https://host/bucket/key instead of https://bucket.host/key (most self-hosted
    #: S3-compatible servers need it).
    s3_path_style: bool = False
    #: Absolute base of the links given to clients (https://reangle.example.com); default: the request's.
    public_base_url: Annotated[str | None, AfterValidator(_public_base_url)] = None
    auth: Literal["on", "off"] = "on"
    #: Extra accepted API keys, comma-separated (besides those made with `reangle keys create`).
    api_keys: str = ""
    max_queue: int = Field(default=1000, ge=1, le=MAX_COUNT)
    #: Queued jobs one API key may have at a time (None: only max_queue), so no key can fill the queue.
    max_queue_per_key: Annotated[int | None, EmptyIsUnset] = Field(default=None, ge=1, le=MAX_COUNT)
    #: Event streams one API key may hold open at once in this process (429 past it: clients poll instead).
    max_streams_per_key: int = Field(default=50, ge=1, le=MAX_COUNT)
    max_attempts: int = Field(default=3, ge=1, le=1000)
    result_ttl_s: Lifetime = 24 * 3600
    upload_ttl_s: Lifetime = 3600
    #: How long a download link stays valid (never past the asset's own expiry).
    url_ttl_s: Lifetime = 3600
    sweep_interval_s: Lifetime = 60
    #: Seconds a client has to send a request's line and headers once it starts (or connects): 408 after.
    header_timeout_s: Timeout = 10
    #: Seconds a request body may go without a byte arriving before it is answered 408.
    body_timeout_s: Timeout = 30
    max_upload_bytes: int = Field(default=30 * 1024 * 1024, gt=0)
    max_upload_pixels: int = Field(default=40_000_000, gt=0)
    #: Images decoded at once (uploads, inline and URL images); the others wait. Bounds the memory that
    #: many small files claiming many pixels can take together.
    max_concurrent_decodes: int = Field(default=2, ge=1)
    #: Largest request body of any kind (inline base64 images make JSON bodies large).
    max_request_bytes: int = Field(default=128 * 1024 * 1024, gt=0)
    #: Let input URLs point at loopback, private and link-local addresses (off: SSRF protection).
    allow_private_urls: bool = False
    url_fetch_timeout_s: Timeout = 20
    #: The first wait before a failed webhook delivery is tried again; the later waits of the schedule
    #: (`reangle.core.webhooks.RETRY_DELAYS_S`: 8 attempts over about 23 h at the default 30 s) scale with it.
    webhook_retry_base_s: Timeout = 30
    #: HMAC key for download links; default: a random key kept in the data directory.
    signing_secret: Annotated[str | None, AfterValidator(_secret)] = None
    #: RunPod dialect: which model each endpoint id serves, as JSON ({"ep-abc": "qwen-image-edit-2511"});
    #: any other endpoint id serves the multi-angle camera model.
    runpod_endpoint_models: dict[str, str] = Field(default_factory=dict)

    # client
    #: Server the CLI's --server commands talk to, and the key they send.
    server: str | None = None
    api_key: str | None = None


def setting_names() -> set[str]:
    """Every REANGLE_ variable reangle reads: each Settings field's (the CLI's REANGLE_SERVER and
    REANGLE_API_KEY included)."""
    return {f"REANGLE_{name.upper()}" for name in Settings.model_fields}


def unknown_settings(environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """The REANGLE_ variables of `environ` that name no setting (a typo reangle would silently ignore), each
    with the known name closest to it, if any is close."""
    known = setting_names()
    suffixes = {name.removeprefix("REANGLE_"): name for name in known}
    unknown = []
    for name in sorted(environ):
        # pydantic-settings reads the variables whatever their case
        upper = name.upper()
        if not upper.startswith("REANGLE_") or upper in known:
            continue
        close = difflib.get_close_matches(upper.removeprefix("REANGLE_"), suffixes, n=1)
        unknown.append((name, suffixes[close[0]] if close else None))
    return unknown
