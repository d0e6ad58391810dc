"""The text-to-image pipeline (diffusers' QwenImagePipeline) built beside the edit pipeline.

Qwen-Image and Qwen-Image-Edit-2511 share their text encoder (Qwen2.5-VL-7B-Instruct, frozen in both), its
tokenizer and their VAE (AutoencoderKLQwenImage with the same config). So only two parts of the text-to-image
model are read: `transformer/` (its own 20.4 B-parameter MMDiT, the same architecture as the edit one
without `zero_cond_t`) and `scheduler/`. The pipeline object takes the edit pipeline's `text_encoder`,
`tokenizer` and `vae` objects as they are: no second copy in memory, nothing more to download. What stays
separate: the transformer, its LoRA adapters (the Lightning ones of Qwen-Image and a request's own), the
scheduler, and the pipeline's own prompt template (text only, no image tokens), which diffusers keeps in
the pipeline class.

torch and diffusers are imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reangle.engine.adapter_cache import AdapterCache
from reangle.engine.text_to_image_residency import Residency
from reangle.errors import EngineError

MODEL_SETTING = "REANGLE_TEXT_TO_IMAGE_MODEL"
#: The setting naming each of the text-to-image pipeline's own adapters.
LORA_SETTINGS = {
    "lightning_4step": "REANGLE_TEXT_TO_IMAGE_LIGHTNING_4STEP_LORA",
    "lightning_8step": "REANGLE_TEXT_TO_IMAGE_LIGHTNING_8STEP_LORA",
}


@dataclass(frozen=True, kw_only=True)
class TextToImageConfig:
    #: Qwen-Image in diffusers layout (hub id or local folder); only `transformer/` and `scheduler/` are read.
    model: str
    #: adapter name -> LoRA location (see `resolve_lora_file`)
    loras: dict[str, str] = field(default_factory=dict)
    #: Whether both transformers stay on the GPU (see text_to_image_residency).
    residency: Residency = "auto"
    #: Called with the dtype to build the transformer instead of reading it (benchmarks, tests).
    transformer_factory: Callable[[Any], Any] | None = None


@dataclass
class TextToImage:
    """The loaded text-to-image pipeline and what the engine keeps beside it."""

    pipe: Any
    adapters: AdapterCache
    #: scheduler kind of a plan -> scheduler
    schedulers: dict[str, Any]
    #: Adapter -> weight baked into the transformer (REANGLE_FUSE_LORAS=default).
    baked: dict[str, float] = field(default_factory=dict)


def read_transformer(config: TextToImageConfig, *, dtype: Any, offline: bool, device_map: str | None) -> Any:
    """The text-to-image transformer, read straight onto `device_map` when given (else onto the CPU)."""
    from diffusers import QwenImageTransformer2DModel

    if config.transformer_factory is not None:
        return config.transformer_factory(dtype)
    try:
        return QwenImageTransformer2DModel.from_pretrained(
            config.model,
            subfolder="transformer",
            torch_dtype=dtype,
            local_files_only=offline,
            device_map=device_map,
        )
    except Exception as exc:
        raise EngineError(
            f"cannot load the text-to-image model {config.model}: {type(exc).__name__}: {exc}",
            hint=f"set {MODEL_SETTING} to a local diffusers folder of Qwen-Image (only transformer/ and "
            "scheduler/ are read), or let it download them from the hub (about 41 GB)",
        ) from exc


def read_scheduler(config: TextToImageConfig, *, offline: bool, fallback: dict[str, Any]) -> Any:
    """The model's own scheduler (for acceleration `none`); `fallback` for a factory-built transformer."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    if config.transformer_factory is not None:
        return FlowMatchEulerDiscreteScheduler.from_config(fallback)
    try:
        return FlowMatchEulerDiscreteScheduler.from_pretrained(
            config.model, subfolder="scheduler", local_files_only=offline
        )
    except Exception as exc:
        raise EngineError(
            f"cannot load the scheduler of the text-to-image model {config.model}: "
            f"{type(exc).__name__}: {exc}",
            hint=f"set {MODEL_SETTING} to a diffusers folder of Qwen-Image",
        ) from exc


def transformer_config(
    model: str, *, offline: bool, described: str = "the text-to-image model", setting: str = MODEL_SETTING
) -> dict[str, Any]:
    """The config.json of a diffusers model's transformer (a hub id or a folder), read without its weights."""
    from diffusers import QwenImageTransformer2DModel

    try:
        loaded: dict[str, Any] = QwenImageTransformer2DModel.load_config(
            model, subfolder="transformer", local_files_only=offline
        )
    except Exception as exc:
        raise EngineError(
            f"cannot read the transformer config of {described} {model}: {exc}",
            hint=f"set {setting} to a diffusers folder of the model",
        ) from exc
    return loaded


def empty_transformer(config: dict[str, Any]) -> Any:
    """The transformer of `config` on the meta device: its layers, without memory for weights."""
    import torch
    from diffusers import QwenImageTransformer2DModel

    with torch.device("meta"):
        return QwenImageTransformer2DModel.from_config(config)


def share_with(edit_pipe: Any, transformer: Any, scheduler: Any) -> Any:
    """A QwenImagePipeline on `transformer` that uses the edit pipeline's text encoder, tokenizer and VAE
    objects themselves."""
    from diffusers import QwenImagePipeline

    pipe = QwenImagePipeline(
        scheduler=scheduler,
        vae=edit_pipe.vae,
        text_encoder=edit_pipe.text_encoder,
        tokenizer=edit_pipe.tokenizer,
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
