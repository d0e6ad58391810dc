"""The real engine: diffusers' QwenImageEditPlusPipeline with the Lightning and Multiple-Angles LoRAs.

torch and diffusers are imported here only, inside methods, so that importing reangle stays light.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from PIL import Image

from reangle.core.edit import ANGLES, LIGHTNING_4STEP, LIGHTNING_8STEP, EditPlan, LoraUse, SizeLimits
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
)
from reangle.engine.base import (
    EditResult,
    EngineInfo,
    StepCallback,
    StopCheck,
    offset_progress,
    random_seed,
)
from reangle.engine.lora import load_lora, read_lora_file, resolve_lora_file
from reangle.engine.lora_bake import bake_default_loras, residual_loras
from reangle.engine.reference_latents import REFERENCE_CACHE_SETTING, ReferenceLatents
from reangle.engine.views import view_prompt_arguments
from reangle.errors import Canceled, EngineError, ReangleError
from reangle.settings import CompileMode, CompileSetting, FuseSetting, QuantizeMode, Settings

if TYPE_CHECKING:
    from reangle.engine.fp8 import Fp8Report

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


def speed_options(settings: Settings) -> dict[str, Any]:
    """The QwenConfig speed options that the settings choose."""
    return {
        "attention_backend": settings.attention_backend,
        "compile": settings.compile,
        "quantize": settings.quantize,
        "fuse_loras": settings.fuse_loras,
        "reference_cache": settings.reference_cache,
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
            limits=config.limits,
            target_area=config.target_area,
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
        #: (adapter, weight) pairs active in the pipeline; None when unknown (before the first edit).
        self._lora_selection: tuple[tuple[str, float], ...] | None = None

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
                **speed_options(settings),
            )
        )

    @property
    def pipeline(self) -> Any:
        """The loaded diffusers pipeline (None before `load`), for benchmarks and tests to inspect."""
        return self._pipe

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
        notes = [
            note
            for adapter, lora in lora_files.items()
            if (note := load_lora(pipe, adapter, lora, strict=self.config.lora_strict))
        ]
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
        self._lora_selection = None
        self._pipe = pipe
        if compile_mode == "blocks":
            compile_mode, compile_notes = self._compile(pipe)
            notes.extend(compile_notes)
        self.info = replace(
            self.info,
            device=device,
            notes=tuple(notes),
            options={
                "attention_backend": self.config.attention_backend,
                "compile": compile_mode,
                "quantize": self.config.quantize,
                "fuse_loras": fuse_mode,
                "reference_cache": self.config.reference_cache,
            },
        )

    def _compile(self, pipe: Any) -> tuple[CompileMode, tuple[str, ...]]:
        """Compile the transformer blocks and warm them up. Asked for by `auto`, a failure (no C compiler or
        Triton for inductor, say) leaves the blocks eager, with a note: the server still starts."""
        try:
            compile_blocks(pipe.transformer, self.config.compile_backend)
            self._warm_up()
        except EngineError as exc:
            if self.config.compile != "auto":
                self._pipe = None
                raise
            uncompile_blocks(pipe.transformer)
            self._lora_selection = None
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
            started = time.perf_counter()
            with _as_engine_errors(), self._references.serving(self._pipe):
                output = self._run(images, plan, seed, _prompt_arguments(plan), on_step, should_stop)
        return EditResult(images=output, seed=seed, timings={"inference_s": time.perf_counter() - started})

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
        total = sum(plan.steps for plan in plans)
        results = []
        with self._lock:
            for plan in plans:
                self._check_loras(plan)
            started = time.perf_counter()
            with _as_engine_errors(), self._references.serving(self._pipe):
                _stop_if_asked(should_stop)
                arguments = view_prompt_arguments(self._pipe, images, plans)
                done = 0
                for plan, seed, prompt in zip(plans, seeds, arguments, strict=True):
                    progress = offset_progress(on_step, done, total)
                    output = self._run(images, plan, seed, prompt, progress, should_stop)
                    finished = time.perf_counter()
                    results.append(
                        EditResult(images=output, seed=seed, timings={"inference_s": finished - started})
                    )
                    started = finished
                    done += plan.steps
        return results

    def forget_references(self) -> None:
        """Drop the kept reference latents: the next edit of any picture encodes it anew (benchmarks)."""
        with self._lock:
            self._references.clear()

    def _check_loras(self, plan: EditPlan) -> None:
        for lora in plan.loras:
            if lora.adapter not in self.config.loras:
                raise EngineError(
                    f"this edit needs the {lora.adapter} LoRA, which is not configured",
                    hint=f"set REANGLE_{lora.adapter.upper()}_LORA to its file, or pick another acceleration",
                )

    def _select_loras(self, loras: Sequence[LoraUse]) -> None:
        """Switch adapters only when the set or a weight differs from the last edit's: peft visits every LoRA
        layer on a switch (40-80 ms per edit on the real model, docs/benchmarks.md 1.4)."""
        selection = tuple((lora.adapter, lora.weight) for lora in loras)
        if selection == self._lora_selection:
            return
        self._lora_selection = None  # unknown until the switch is complete
        if loras:
            self._pipe.enable_lora()
            self._pipe.set_adapters([lora.adapter for lora in loras], [lora.weight for lora in loras])
        elif self.config.loras:
            self._pipe.disable_lora()
        self._lora_selection = selection

    def _run(
        self,
        images: Sequence[Image.Image],
        plan: EditPlan,
        seed: int,
        prompt: dict[str, Any],
        on_step: StepCallback | None,
        should_stop: StopCheck | None,
    ) -> list[Image.Image]:
        """Output k runs alone with seed + k, so it is exactly the picture a single run with that seed gives
        (a batch would differ by rounding); progress counts the steps of all outputs."""
        import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus as edit_plus
        import torch

        pipe = self._pipe
        pipe.scheduler = self._schedulers[plan.scheduler]
        self._select_loras(residual_loras(plan.loras, self.baked_loras))
        # NOTE: the pipeline reads this module constant at call time; one pipeline per process makes it safe.
        edit_plus.VAE_IMAGE_SIZE = self.config.reference_area
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
                    image=list(images),
                    **prompt,
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


def _load_device_map(device: str, *, cpu_offload: bool) -> str | None:
    """Where `from_pretrained` puts the weights as it reads them: straight onto the device, so the host never
    holds the whole 58 GB model on its way to the GPU. diffusers takes "cuda" and "cpu" (not "cuda:1"); the
    others, and CPU offload, load on the host first and move."""
    return device if device in ("cuda", "cpu") and not cpu_offload else None


def _prompt_arguments(plan: EditPlan) -> dict[str, Any]:
    return {"prompt": plan.prompt, "negative_prompt": plan.negative_prompt}


def _stop_if_asked(should_stop: StopCheck | None) -> None:
    if should_stop is not None and should_stop():
        raise Canceled("the edit was canceled")


@contextlib.contextmanager
def _as_engine_errors() -> Iterator[None]:
    try:
        yield
    except ReangleError:
        raise
    except Exception as exc:
        raise EngineError(f"the pipeline failed: {type(exc).__name__}: {exc}") from exc
