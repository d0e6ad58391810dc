"""The one Settings object: environment variables prefixed `REANGLE_`, built once and passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

EngineName = Literal["auto", "qwen", "tiny", "fake"]

HUB_MODEL = "Qwen/Qwen-Image-Edit-2511"
HUB_LIGHTNING = "lightx2v/Qwen-Image-Edit-2511-Lightning"
HUB_LIGHTNING_4STEP = f"{HUB_LIGHTNING}/Qwen-Image-Edit-2511-Lightning-4steps-V1.0-bf16.safetensors"
HUB_LIGHTNING_8STEP = f"{HUB_LIGHTNING}/Qwen-Image-Edit-2511-Lightning-8steps-V1.0-bf16.safetensors"
HUB_ANGLES = (
    "fal/Qwen-Image-Edit-2511-Multiple-Angles-LoRA/qwen-image-edit-2511-multiple-angles-lora.safetensors"
)


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "reangle"


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
    #: Never reach the hub: models and LoRAs must already be local or in the hub cache.
    offline: bool = False
    device: str = "auto"
    #: Move whole components to the GPU only while they run (for cards under ~64 GB).
    cpu_offload: bool = False
    #: Default output area in pixels when no size is given (the aspect follows the last input image).
    target_area: int = Field(default=1024 * 1024, gt=0)
    #: Area at which each reference image is VAE-encoded (the model's own value is 1 MP).
    reference_area: int = Field(default=1024 * 1024, gt=0)
    #: Where the tiny demo pipeline is built and cached.
    cache_dir: Path = Field(default_factory=_default_cache_dir)
    #: Seconds the fake engine sleeps per denoising step.
    fake_step_seconds: float = Field(default=0.05, ge=0)
