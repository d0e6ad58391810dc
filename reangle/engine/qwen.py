"""The real engine: diffusers' QwenImageEditPlusPipeline with the Lightning and Multiple-Angles LoRAs, and
Qwen-Image's QwenImagePipeline for text-to-image, loaded at the first generation and sharing the edit
pipeline's text encoder, tokenizer and VAE (see text_to_image.py).

A request's own LoRAs are loaded on demand into each pipeline's LRU of adapters (`AdapterCache`), so that a
job runs exactly its own adapters and the next job with the same LoRA loads nothing.

torch and diffusers are imported here only, inside methods, so that importing reangle stays light.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from reangle.core.edit import (
    ANGLES,
    LIGHTNING_4STEP,
    LIGHTNING_8STEP,
    EditPlan,
    LoraUse,
    SizeLimits,
    elongation_limit,
)
from reangle.engine.acceleration import (
    COMPILE_SETTING,
    DecodeTiling,
    compile_blocks,
    measured_fast_gpu,
    quantize_transformer,
    resolve_speed_settings,
    set_attention_backend,
    to_pil_images,
    uncompile_blocks,
    warmup_edit,
    warmup_generation,
)
from reangle.engine.adapter_cache import AdapterCache, AdapterHost, AdapterUse
from reangle.engine.base import (
    EditResult,
    EngineInfo,
    StepCallback,
    StopCheck,
    offset_progress,
    random_seed,
)
from reangle.engine.lora import LoraFile, load_lora, read_lora_file, resolve_lora_file
from reangle.engine.lora_bake import FUSE_SETTING, bake_default_loras, bake_loras, residual_loras
from reangle.engine.lora_check import ModelLayers, model_layers
from reangle.engine.reference_latents import REFERENCE_CACHE_SETTING, ReferenceLatents
from reangle.engine.text_to_image import (
    LORA_SETTINGS,
    MODEL_SETTING,
    TextToImage,
    TextToImageConfig,
    empty_transformer,
    read_scheduler,
    read_transformer,
    share_with,
    transformer_config,
)
from reangle.engine.text_to_image_residency import (
    Kind,
    TransformerPlacement,
    free_device_bytes,
    module_bytes,
    resolve_residency,
)
from reangle.engine.views import view_prompt_arguments
from reangle.errors import Canceled, EngineError, LoraLoadError, ReangleError
from reangle.settings import CompileMode, CompileSetting, FuseSetting, QuantizeMode, Settings

if TYPE_CHECKING:
    from reangle.engine.fp8 import Fp8Report

logger = logging.getLogger(__name__)

#: Qwen-Image-Edit-2511's own scheduler/scheduler_config.json (for acceleration "none"): dynamic shifting
#: by image size, ending at shift_terminal 0.02. The real model brings it; tiny and bench pipelines use it.
BASE_SCHEDULER_CONFIG: dict[str, Any] = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "invert_sigmas": False,
    "max_image_seq_len": 8192,
    "max_shift": 0.9,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": 0.02,
    "stochastic_sampling": False,
    "time_shift_type": "exponential",
    "use_beta_sigmas": False,
    "use_dynamic_shifting": True,
    "use_exponential_sigmas": False,
    "use_karras_sigmas": False,
}
#: ModelTC's Lightning distillation setup: constant shift 3 (mu = log 3), no terminal shift.
LIGHTNING_SCHEDULER_CONFIG: dict[str, Any] = {
    "base_image_seq_len": 256,
    "base_shift": math.log(3),
    "invert_sigmas": False,
    "max_image_seq_len": 8192,
    "max_shift": math.log(3),
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": None,
    "stochastic_sampling": False,
    "time_shift_type": "exponential",
    "use_beta_sigmas": False,
    "use_dynamic_shifting": True,
    "use_exponential_sigmas": False,
    "use_karras_sigmas": False,
}


#: The area diffusers' edit pipeline scales each input image to for the text encoder (CONDITION_IMAGE_SIZE);
#: it scales them to `QwenConfig.reference_area` for the VAE.
CONDITION_AREA = 384 * 384


@dataclass(frozen=True, kw_only=True)
class QwenConfig:
    model: str
    #: adapter name -> LoRA location (see `resolve_lora_file`)
    loras: dict[str, str] = field(default_factory=dict)
    device: str = "auto"
    offline: bool = False
    cpu_offload: bool = False
    target_area: int = 1024 * 1024
    reference_area: int = 1024 * 1024
    limits: SizeLimits = field(default_factory=SizeLimits)
    name: str = "qwen"
    demo: bool = False
    #: Called with the dtype to build the pipeline instead of `from_pretrained(model)` (benchmarks).
    pipeline_factory: Callable[[Any], Any] | None = None
    #: A diffusers attention backend name (REANGLE_ATTENTION_BACKEND).
    attention_backend: str = "native"
    #: `blocks`: regional torch.compile of the transformer, then one warm-up edit in `load` (REANGLE_COMPILE);
    #: `auto`: blocks on the GPUs it was measured on, falling back to eager (with a note) if compiling fails.
    compile: CompileSetting = "off"
    #: The torch.compile backend used when `compile="blocks"`.
    compile_backend: str | Callable[..., Any] = "inductor"
    #: `fp8`: FP8 linears in the transformer blocks (REANGLE_QUANTIZE).
    quantize: QuantizeMode = "none"
    #: `default`: the default request's LoRAs baked into the transformer weights at load (REANGLE_FUSE_LORAS);
    #: `auto`: default on the GPUs it was measured on.
    fuse_loras: FuseSetting = "off"
    #: How many reference images keep their VAE latents for later edits (REANGLE_REFERENCE_CACHE).
    reference_cache: int = 8
    #: Refuse a LoRA file naming modules the transformer lacks (REANGLE_LORA_STRICT); False loads the rest.
    lora_strict: bool = True
    #: Outputs above this many pixels are VAE-decoded in tiles (REANGLE_VAE_TILE_AREA); smaller ones whole.
    vae_tile_area: int = 2 * 1024 * 1024
    #: A request's own LoRAs kept loaded between jobs, per pipeline (REANGLE_LORA_GPU_CAPACITY).
    lora_gpu_capacity: int = 4
    #: The text-to-image model, loaded at the first generation; None: this engine only edits.
    text_to_image: TextToImageConfig | None = None


def speed_options(settings: Settings) -> dict[str, Any]:
    """The QwenConfig speed options that the settings choose."""
    return {
        "attention_backend": settings.attention_backend,
        "compile": settings.compile,
        "quantize": settings.quantize,
        "fuse_loras": settings.fuse_loras,
        "reference_cache": settings.reference_cache,
        "lora_gpu_capacity": settings.lora_gpu_capacity,
    }


def quiet_libraries() -> None:
    """Our CLI draws its own progress; the libraries' load bars and peft's multi-adapter notice are noise."""
    import warnings

    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute", category=UserWarning)


class QwenEngine:
    """One pipeline on one device, one edit at a time."""

    def __init__(self, config: QwenConfig) -> None:
        self.config = config
        self.info = EngineInfo(
            name=config.name,
            device=config.device,
            demo=config.demo,
            limits=replace(
                config.limits,
                max_input_ratio=elongation_limit(min(CONDITION_AREA, config.reference_area)),
            ),
            target_area=config.target_area,
            can_generate=config.text_to_image is not None,
        )
        self._lock = threading.Lock()
        self._pipe: Any = None
        self._schedulers: dict[str, Any] = {}
        #: Seconds the warm-up edit took in `load` (compile on), else None.
        self.warmup_s: float | None = None
        #: What FP8 quantization did (quantize="fp8"), else None.
        self.fp8_report: Fp8Report | None = None
        #: Adapter -> weight baked into the transformer (fuse_loras="default"), and the layers it changed.
        self.baked_loras: dict[str, float] = {}
        self.baked_layers = 0
        if config.reference_cache < 0:
            raise EngineError(
                f"{REFERENCE_CACHE_SETTING} must be 0 or more, not {config.reference_cache}",
                hint="0 encodes every reference image anew",
            )
        self._references = ReferenceLatents(config.reference_cache)
        self._adapters: AdapterCache | None = None
        self._text_to_image: TextToImage | None = None
        self._placement: TransformerPlacement | None = None
        self._device = config.device
        self._dtype: Any = None
        self._compile_mode: CompileMode = "off"
        self._fuse_mode = "off"
        #: The LoRA-able layers of each pipeline's transformer, once known.
        self._layers: dict[Kind, ModelLayers] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> QwenEngine:
        locations = {
            LIGHTNING_4STEP: settings.lightning_4step_lora,
            LIGHTNING_8STEP: settings.lightning_8step_lora,
            ANGLES: settings.angles_lora,
        }
        return cls(
            QwenConfig(
                model=settings.model,
                loras={adapter: where for adapter, where in locations.items() if where},
                device=settings.device,
                offline=settings.offline,
                cpu_offload=settings.cpu_offload,
                lora_strict=settings.lora_strict,
                vae_tile_area=settings.vae_tile_area,
                target_area=settings.target_area,
                reference_area=settings.reference_area,
                text_to_image=text_to_image_config(settings),
                **speed_options(settings),
            )
        )

    @property
    def pipeline(self) -> Any:
        """The loaded diffusers pipeline (None before `load`), for benchmarks and tests to inspect."""
        return self._pipe

    @property
    def text_to_image_pipeline(self) -> Any:
        """The text-to-image pipeline (None until the first generation), for benchmarks and tests."""
        return None if self._text_to_image is None else self._text_to_image.pipe

    @property
    def adapters(self) -> AdapterCache | None:
        """The edit pipeline's adapter cache (None before `load`)."""
        return self._adapters

    @property
    def text_to_image_adapters(self) -> AdapterCache | None:
        return None if self._text_to_image is None else self._text_to_image.adapters

    def load(self) -> None:
        with self._lock:
            if self._pipe is None:
                self._load()

    def _load(self) -> None:
        import torch
        from diffusers import FlowMatchEulerDiscreteScheduler, QwenImageEditPlusPipeline

        quiet_libraries()
        device = self.config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        compile_mode, fuse_mode = resolve_speed_settings(
            self.config.compile,
            self.config.fuse_loras,
            fast_gpu=measured_fast_gpu(device),
            cpu_offload=self.config.cpu_offload,
        )
        # every LoRA file is found and read first: a wrong name fails before 58 GB of model load
        lora_files = {
            adapter: read_lora_file(resolve_lora_file(location, offline=self.config.offline))
            for adapter, location in self.config.loras.items()
        }
        try:
            if self.config.pipeline_factory is not None:
                pipe = self.config.pipeline_factory(dtype)
            else:
                pipe = QwenImageEditPlusPipeline.from_pretrained(
                    self.config.model,
                    dtype=dtype,
                    local_files_only=self.config.offline,
                    device_map=_load_device_map(device, cpu_offload=self.config.cpu_offload),
                )
        except Exception as exc:
            raise EngineError(
                f"cannot load the model {self.config.model}: {exc}",
                hint="set REANGLE_MODEL to a local diffusers folder, or let it download from the hub "
                "(REANGLE_OFFLINE=false, about 58 GB)",
            ) from exc
        pipe.set_progress_bar_config(disable=True)
        self._decode_tiling = DecodeTiling(pipe.vae, self.config.vae_tile_area)
        notes = self._load_own_loras(pipe, lora_files)
        del lora_files
        if self.config.cpu_offload:
            pipe.enable_model_cpu_offload(device=device)
        elif getattr(pipe, "hf_device_map", None) is None:
            pipe.to(device)
        if fuse_mode == "default":
            # before FP8, which quantizes the baked weights, and before compile
            self.baked_loras, self.baked_layers = bake_default_loras(pipe.transformer, self.config.loras)
        if self.config.quantize == "fp8":
            self.fp8_report = quantize_transformer(pipe.transformer)
        set_attention_backend(pipe.transformer, self.config.attention_backend, device=device, dtype=dtype)
        self._schedulers = {
            "default": pipe.scheduler,
            "lightning": FlowMatchEulerDiscreteScheduler.from_config(LIGHTNING_SCHEDULER_CONFIG),
        }
        self._adapters = self._adapter_cache(pipe, self.config.loras)
        self._layers["edit"] = model_layers(pipe.transformer)
        self._device, self._dtype, self._fuse_mode = device, dtype, fuse_mode
        self._pipe = pipe
        if compile_mode == "blocks":
            try:
                compile_mode, compile_notes = self._compile(pipe.transformer, self._warm_up)
            except EngineError:
                self._pipe = None
                raise
            notes.extend(compile_notes)
        self._compile_mode = compile_mode
        options: dict[str, str | int] = {
            "attention_backend": self.config.attention_backend,
            "compile": compile_mode,
            "quantize": self.config.quantize,
            "fuse_loras": fuse_mode,
            "reference_cache": self.config.reference_cache,
            "lora_gpu_capacity": self.config.lora_gpu_capacity,
        }
        if self.config.text_to_image is not None:
            options["text_to_image_residency"] = self.config.text_to_image.residency
        self.info = replace(self.info, device=device, notes=tuple(notes), options=options)

    def _load_own_loras(self, pipe: Any, lora_files: Mapping[str, LoraFile]) -> list[str]:
        return [
            note
            for adapter, lora in lora_files.items()
            if (note := load_lora(pipe, adapter, lora, strict=self.config.lora_strict))
        ]

    def _adapter_cache(self, pipe: Any, own: Mapping[str, str]) -> AdapterCache:
        return AdapterCache(
            pipe, capacity=self.config.lora_gpu_capacity, pinned=own.keys(), loader=self._load_request_lora
        )

    def _load_request_lora(self, host: AdapterHost, name: str, path: Path) -> None:
        """A request's LoRA, read and attached as strictly as the model's own; a file that matches no layer
        (or, strict, not all of its layers) is a LoraLoadError naming it."""
        try:
            note = load_lora(host, name, read_lora_file(path), strict=self.config.lora_strict)
        except LoraLoadError as exc:
            if self.config.quantize == "fp8" and "not supported" in exc.message:
                raise LoraLoadError(
                    f"{exc.message} (with REANGLE_QUANTIZE=fp8 a request's LoRA can only target layers that "
                    "the model's own LoRAs target too)",
                    hint="set REANGLE_QUANTIZE=none to take LoRAs on any layer",
                ) from exc
            raise
        if note:
            logger.warning(note)

    def _compile(self, transformer: Any, warm_up: Callable[[], None]) -> tuple[CompileMode, tuple[str, ...]]:
        """Compile the transformer blocks and warm them up. Asked for by `auto`, a failure (no C compiler or
        Triton for inductor, say) leaves the blocks eager, with a note: the server still starts."""
        try:
            compile_blocks(transformer, self.config.compile_backend)
            warm_up()
        except EngineError as exc:
            if self.config.compile != "auto":
                raise
            uncompile_blocks(transformer)
            for cache in (self._adapters, self.text_to_image_adapters):
                if cache is not None:
                    cache.forget()
            note = (
                f"{COMPILE_SETTING}=auto: compiling the transformer blocks failed, so they run eagerly "
                f"(slower; set {COMPILE_SETTING}=off to skip the attempt): {exc.message}"
            )
            return "off", (note,)
        return "blocks", ()

    def _warm_up(self) -> None:
        """One edit through the same path as `edit`, so that the first request does not pay for compiling."""
        images, plan = warmup_edit(self.info, self.config.loras)
        started = time.perf_counter()
        try:
            with _as_engine_errors():
                self._run(images, plan, 0, _prompt_arguments(plan), None, None)
        except EngineError as exc:
            raise EngineError(
                f"the warm-up edit of {COMPILE_SETTING}=blocks failed: {exc.message}",
                hint=f"set {COMPILE_SETTING}=off",
            ) from exc
        self.warmup_s = time.perf_counter() - started

    def edit(
        self,
        images: Sequence[Image.Image],
        plan: EditPlan,
        *,
        on_step: StepCallback | None = None,
        should_stop: StopCheck | None = None,
    ) -> EditResult:
        self.load()
        seed = random_seed() if plan.seed is None else plan.seed
        with self._lock:
            self._check_loras(plan)
            with _as_engine_errors():
                timings = self._use("edit")
            started = time.perf_counter()
            with _as_engine_errors(), self._references.serving(self._pipe):
                output = self._run(images, plan, seed, _prompt_arguments(plan), on_step, should_stop)
        timings["inference_s"] = time.perf_counter() - started
        return EditResult(images=output, seed=seed, timings=timings)

    def edit_views(
        self,
        images: Sequence[Image.Image],
        plans: Sequence[EditPlan],
        *,
        on_step: StepCallback | None = None,
        should_stop: StopCheck | None = None,
    ) -> list[EditResult]:
        """One edit per plan over the same images: all prompts go through the text encoder in one forward and
        each reference image through the VAE once. Progress counts the steps of all plans together.

        A single plan has nothing to share and takes `edit`'s path, the one the GPU benchmark times."""
        if len(plans) <= 1:
            return [self.edit(images, plan, on_step=on_step, should_stop=should_stop) for plan in plans]
        self.load()
        seeds = [random_seed() if plan.seed is None else plan.seed for plan in plans]
        total = sum(plan.steps * plan.num_outputs for plan in plans)
        results = []
        with self._lock:
            for plan in plans:
                self._check_loras(plan)
            with _as_engine_errors():
                timings = self._use("edit")
            started = time.perf_counter()
            with _as_engine_errors(), self._references.serving(self._pipe):
                _stop_if_asked(should_stop)
                arguments = view_prompt_arguments(self._pipe, images, plans)
                done = 0
                for plan, seed, prompt in zip(plans, seeds, arguments, strict=True):
                    progress = offset_progress(on_step, done, total)
                    output = self._run(images, plan, seed, prompt, progress, should_stop)
                    finished = time.perf_counter()
                    timings["inference_s"] = finished - started
                    results.append(EditResult(images=output, seed=seed, timings=timings))
                    timings, started = {}, finished
                    done += plan.steps * plan.num_outputs
        return results

    def generate(
        self,
        plans: Sequence[EditPlan],
        *,
        on_step: StepCallback | None = None,
        should_stop: StopCheck | None = None,
    ) -> list[EditResult]:
        """Text-to-image, one result per plan; the text-to-image model loads at the first call. Output k of a
        plan runs alone with seed + k; progress counts the steps of every output of every plan."""
        for plan in plans:  # before 58 + 41 GB of weights are read for a job that cannot run
            self._check_generation_loras(plan)
        self.load()
        seeds = [random_seed() if plan.seed is None else plan.seed for plan in plans]
        total = sum(plan.steps * plan.num_outputs for plan in plans)
        results = []
        with self._lock:
            text_to_image = self._loaded_text_to_image()
            with _as_engine_errors():
                timings = self._use("generate")
                started = time.perf_counter()
                done = 0
                for plan, seed in zip(plans, seeds, strict=True):
                    progress = offset_progress(on_step, done, total)
                    output = self._generate(text_to_image, plan, seed, progress, should_stop)
                    finished = time.perf_counter()
                    timings["inference_s"] = finished - started
                    results.append(EditResult(images=output, seed=seed, timings=timings))
                    timings, started = {}, finished
                    done += plan.steps * plan.num_outputs
        return results

    def load_text_to_image(self) -> None:
        """Load the text-to-image model now rather than at the first generation; idempotent."""
        self.load()
        with self._lock:
            self._loaded_text_to_image()

    def lora_layers(self, text_to_image: bool) -> ModelLayers:
        """The layers a request's LoRA may target: from the loaded transformer, and until it is loaded from
        its config on the meta device, so that checking a LoRA loads no weights (58 GB for the edit model,
        41 GB for the text-to-image one). A pipeline built by a factory (benchmarks, the tiny engine) is
        loaded instead."""
        kind: Kind = "generate" if text_to_image else "edit"
        known = self._layers.get(kind)
        if known is not None:
            return known
        if not text_to_image:
            if self.config.pipeline_factory is not None:
                self.load()
                return self._layers["edit"]
            config = transformer_config(
                self.config.model, offline=self.config.offline, described="the model", setting="REANGLE_MODEL"
            )
        else:
            generation = self._text_to_image_config()
            if generation.transformer_factory is not None:
                return self.lora_layers(False)  # the same architecture; building it would cost its weights
            config = transformer_config(generation.model, offline=self.config.offline)
        layers = model_layers(empty_transformer(config))
        self._layers.setdefault(kind, layers)
        return layers

    def forget_references(self) -> None:
        """Drop the kept reference latents: the next edit of any picture encodes it anew (benchmarks)."""
        with self._lock:
            self._references.clear()

    def _check_loras(self, plan: EditPlan) -> None:
        for lora in plan.loras:
            if lora.path is None and lora.adapter not in self.config.loras:
                raise EngineError(
                    f"this edit needs the {lora.adapter} LoRA, which is not configured",
                    hint=f"set REANGLE_{lora.adapter.upper()}_LORA to its file, or pick another acceleration",
                )

    def _check_generation_loras(self, plan: EditPlan) -> None:
        own = self._text_to_image_config().loras
        for lora in plan.loras:
            if lora.path is None and lora.adapter not in own:
                setting = LORA_SETTINGS.get(lora.adapter, MODEL_SETTING)
                raise EngineError(
                    f"this generation needs the text-to-image model's {lora.adapter} LoRA, which is not "
                    "configured",
                    hint=f"set {setting} to its file, or pick another acceleration",
                )

    def _use(self, kind: Kind) -> dict[str, float]:
        """Put `kind`'s transformer on the device; the seconds it took to move, as a timing, when any."""
        if self._placement is None:
            return {}
        moved = self._placement.use(kind)
        return {"swap_s": moved} if moved else {}

    def _text_to_image_config(self) -> TextToImageConfig:
        if self.config.text_to_image is None:
            raise EngineError(
                "this engine has no text-to-image model", hint=f"set {MODEL_SETTING} to a Qwen-Image model"
            )
        return self.config.text_to_image

    def _loaded_text_to_image(self) -> TextToImage:
        """The text-to-image pipeline, loaded on first use (under the lock)."""
        if self._text_to_image is None:
            self._load_text_to_image(self._text_to_image_config())
        assert self._text_to_image is not None
        return self._text_to_image

    def _load_text_to_image(self, config: TextToImageConfig) -> None:
        """Read the transformer and scheduler, share the rest with the edit pipeline, attach the Lightning
        LoRAs, then apply the engine's speed options as the edit transformer got them: bake (fuse_loras),
        FP8, attention backend, compiled blocks with one warm-up generation."""
        edit_pipe = self._pipe
        lora_files = {
            adapter: read_lora_file(resolve_lora_file(location, offline=self.config.offline))
            for adapter, location in config.loras.items()
        }
        mode = resolve_residency(
            config.residency,
            cpu_offload=self.config.cpu_offload,
            transformer_bytes=module_bytes(edit_pipe.transformer),
            free_bytes=free_device_bytes(self._device),
        )
        placement = TransformerPlacement(mode, self._device)
        placement.add("edit", edit_pipe, resident=True)
        try:
            self._read_text_to_image(config, placement, lora_files)
        except BaseException as exc:
            self._text_to_image, self._placement = None, None
            placement.use("edit")  # swap: the edit transformer back in place
            if isinstance(exc, Exception) and not isinstance(exc, ReangleError):
                raise EngineError(
                    f"cannot load the text-to-image model {config.model}: {type(exc).__name__}: {exc}"
                ) from exc
            raise

    def _read_text_to_image(
        self, config: TextToImageConfig, placement: TransformerPlacement, lora_files: Mapping[str, LoraFile]
    ) -> None:
        edit_pipe = self._pipe
        device, dtype = self._device, self._dtype
        placement.park("edit")  # swap: the new transformer is read straight onto the device, in its place
        transformer = read_transformer(
            config,
            dtype=dtype,
            offline=self.config.offline,
            device_map=None if self.config.cpu_offload else device,
        )
        scheduler = read_scheduler(config, offline=self.config.offline, fallback=BASE_SCHEDULER_CONFIG)
        pipe = share_with(edit_pipe, transformer, scheduler)
        notes = self._load_own_loras(pipe, lora_files)
        if not self.config.cpu_offload:
            transformer.to(device)  # a factory's transformer, or adapters read onto the host
        baked: dict[str, float] = {}
        if self._fuse_mode == "default":
            baked = _bake_generation_loras(transformer, config.loras)
        if self.config.quantize == "fp8":
            quantize_transformer(transformer)
        set_attention_backend(transformer, self.config.attention_backend, device=device, dtype=dtype)
        from diffusers import FlowMatchEulerDiscreteScheduler

        text_to_image = TextToImage(
            pipe=pipe,
            adapters=self._adapter_cache(pipe, config.loras),
            schedulers={
                "default": scheduler,
                "lightning": FlowMatchEulerDiscreteScheduler.from_config(LIGHTNING_SCHEDULER_CONFIG),
            },
            baked=baked,
        )
        placement.add("generate", pipe, resident=placement.mode != "offload")
        self._text_to_image, self._placement = text_to_image, placement
        if self._compile_mode == "blocks":
            notes.extend(self._compile(transformer, self._warm_up_generation)[1])
        self._layers["generate"] = model_layers(transformer)
        self.info = replace(
            self.info,
            notes=(*self.info.notes, *notes),
            options={**self.info.options, "text_to_image_residency": placement.mode},
        )

    def _warm_up_generation(self) -> None:
        """One generation through the same path as `generate`, so that the first request does not compile."""
        assert self._text_to_image is not None
        plan = warmup_generation(self.info, self._text_to_image_config().loras)
        try:
            with _as_engine_errors():
                self._use("generate")
                self._generate(self._text_to_image, plan, 0, None, None)
        except EngineError as exc:
            raise EngineError(
                f"the warm-up generation of {COMPILE_SETTING}=blocks failed: {exc.message}",
                hint=f"set {COMPILE_SETTING}=off",
            ) from exc

    def _generate(
        self,
        text_to_image: TextToImage,
        plan: EditPlan,
        seed: int,
        on_step: StepCallback | None,
        should_stop: StopCheck | None,
    ) -> list[Image.Image]:
        pipe = text_to_image.pipe
        pipe.scheduler = text_to_image.schedulers[plan.scheduler]
        text_to_image.adapters.activate(_adapter_uses(plan.loras, text_to_image.baked))
        arguments = {"prompt": plan.prompt, "negative_prompt": plan.negative_prompt}
        return self._denoise(pipe, plan, seed, arguments, on_step, should_stop)

    def _run(
        self,
        images: Sequence[Image.Image],
        plan: EditPlan,
        seed: int,
        prompt: dict[str, Any],
        on_step: StepCallback | None,
        should_stop: StopCheck | None,
    ) -> list[Image.Image]:
        """One planned edit on the edit pipeline, with exactly the plan's adapters active."""
        import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus as edit_plus

        pipe = self._pipe
        pipe.scheduler = self._schedulers[plan.scheduler]
        assert self._adapters is not None
        self._adapters.activate(_adapter_uses(plan.loras, self.baked_loras))
        # NOTE: the pipeline reads this module constant at call time; one pipeline per process makes it safe.
        edit_plus.VAE_IMAGE_SIZE = self.config.reference_area
        return self._denoise(pipe, plan, seed, {"image": list(images), **prompt}, on_step, should_stop)

    def _denoise(
        self,
        pipe: Any,
        plan: EditPlan,
        seed: int,
        arguments: dict[str, Any],
        on_step: StepCallback | None,
        should_stop: StopCheck | None,
    ) -> list[Image.Image]:
        """Output k runs alone with seed + k, so it is exactly the picture a single run with that seed gives
        (a batch would differ by rounding); progress counts the steps of all outputs."""
        import torch

        outputs: list[Image.Image] = []
        total = plan.steps * plan.num_outputs

        def step_end(_pipe: Any, step: int, _timestep: Any, _tensors: dict[str, Any]) -> dict[str, Any]:
            _stop_if_asked(should_stop)
            if on_step is not None:
                on_step(len(outputs) * plan.steps + step + 1, total)  # the outputs before count too
            return {}

        for k in range(plan.num_outputs):
            _stop_if_asked(should_stop)
            with (
                torch.inference_mode(),
                _offload_restored(pipe),
                self._decode_tiling.for_output(plan.width, plan.height),
            ):
                result = pipe(
                    **arguments,
                    true_cfg_scale=plan.true_cfg_scale,
                    width=plan.width,
                    height=plan.height,
                    num_inference_steps=plan.steps,
                    num_images_per_prompt=1,
                    generator=torch.Generator("cpu").manual_seed(seed + k),
                    callback_on_step_end=step_end,
                    output_type="pt",
                )
                outputs += to_pil_images(result.images)
        return outputs


@contextlib.contextmanager
def _offload_restored(pipe: Any) -> Iterator[None]:
    """A canceled or failed call skips the pipeline's own `maybe_free_model_hooks`, which with CPU offload
    would leave the transformer on the GPU under the next job's text encoder. (A no-op without offload.)"""
    try:
        yield
    except BaseException:
        pipe.maybe_free_model_hooks()
        raise


def text_to_image_config(settings: Settings) -> TextToImageConfig | None:
    """The text-to-image model the settings name; None when REANGLE_TEXT_TO_IMAGE_MODEL is empty."""
    if not settings.text_to_image_model:
        return None
    locations = {
        LIGHTNING_4STEP: settings.text_to_image_lightning_4step_lora,
        LIGHTNING_8STEP: settings.text_to_image_lightning_8step_lora,
    }
    return TextToImageConfig(
        model=settings.text_to_image_model,
        loras={adapter: where for adapter, where in locations.items() if where},
        residency=settings.text_to_image_residency,
    )


def _adapter_uses(loras: Sequence[LoraUse], baked: Mapping[str, float]) -> list[AdapterUse]:
    """The adapters to activate for a plan's LoRAs on weights holding `baked`; a request's LoRAs (never
    baked) keep their files."""
    paths = {lora.adapter: lora.path for lora in loras}
    return [
        AdapterUse(name=lora.adapter, weight=lora.weight, path=paths.get(lora.adapter))
        for lora in residual_loras(loras, baked)
    ]


def _bake_generation_loras(transformer: Any, configured: Mapping[str, str]) -> dict[str, float]:
    """Bake the default generation's Lightning LoRA (4-step at 1.0, where configured) into `transformer`."""
    weights = {LIGHTNING_4STEP: 1.0} if LIGHTNING_4STEP in configured else {}
    try:
        bake_loras(transformer, weights)
    except Exception as exc:
        raise EngineError(
            f"cannot bake the LoRAs into the text-to-image weights ({FUSE_SETTING}=default): "
            f"{type(exc).__name__}: {exc}",
            hint=f"set {FUSE_SETTING}=off",
        ) from exc
    return weights


def _load_device_map(device: str, *, cpu_offload: bool) -> str | None:
    """Where `from_pretrained` puts the weights as it reads them: straight onto the device, so the host never
    holds the whole 58 GB model on its way to the GPU. diffusers takes "cuda" and "cpu" (not "cuda:1"); the
    others, and CPU offload, load on the host first and move."""
    return device if device in ("cuda", "cpu") and not cpu_offload else None


def _prompt_arguments(plan: EditPlan) -> dict[str, Any]:
    return {"prompt": plan.prompt, "negative_prompt": plan.negative_prompt}


def _stop_if_asked(should_stop: StopCheck | None) -> None:
    if should_stop is not None and should_stop():
        raise Canceled("the job was canceled")


@contextlib.contextmanager
def _as_engine_errors() -> Iterator[None]:
    try:
        yield
    except ReangleError:
        raise
    except Exception as exc:
        raise EngineError(f"the pipeline failed: {type(exc).__name__}: {exc}") from exc
