"""Speed options of the qwen engine (attention kernel, regional compile, FP8) and the output conversion.

Each option is one setting, checked when the model loads: a wrong value is an EngineError that names the
setting, never a slow or broken first request. torch and diffusers are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Collection, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from PIL import Image

from reangle.core.edit import EditPlan, EditRequest, GenerateRequest, plan_edit, plan_generation
from reangle.engine.base import EngineInfo
from reangle.errors import EngineError
from reangle.settings import CompileMode, CompileSetting, FuseMode, FuseSetting

if TYPE_CHECKING:
    from reangle.engine.fp8 import Fp8Report

ATTENTION_SETTING = "REANGLE_ATTENTION_BACKEND"
COMPILE_SETTING = "REANGLE_COMPILE"
QUANTIZE_SETTING = "REANGLE_QUANTIZE"
#: Graphs dynamo keeps for the one block code. Each LoRA set in use (4- or 8-step, with or without the angle
#: LoRA, none) and a batch of several outputs adds one; past torch's default of 8 it would fall back to eager.
RECOMPILE_LIMIT = 64
#: Side of the uniform picture the warm-up edit starts from; the output is at the engine's target area.
WARMUP_INPUT_SIDE = 64


def measured_fast_gpu(device: str) -> bool:
    """Whether `device` is of the GPU class the `auto` speed settings were measured on: NVIDIA Hopper (H100,
    H200; compute capability 9.x). On an H200 (docs/benchmarks.md 1.4) compiled blocks on baked LoRAs took a
    1024x1024 edit from 2.44 s to 1.65 s end to end, with the same output within 51 dB PSNR."""
    import torch

    if not device.startswith("cuda") or not torch.cuda.is_available():
        return False
    if torch.version.hip is not None:  # ROCm reports AMD MI200/MI300 as capability 9.x too
        return False
    return bool(torch.cuda.get_device_capability(device)[0] == 9)


def resolve_speed_settings(
    compile_setting: CompileSetting, fuse_setting: FuseSetting, *, fast_gpu: bool, cpu_offload: bool
) -> tuple[CompileMode, FuseMode]:
    """What `auto` means here: compiled blocks and baked LoRAs on a measured GPU holding the whole model (CPU
    offload moves blocks on and off the GPU, and baking there would run on the CPU); off anywhere else."""
    fast = fast_gpu and not cpu_offload
    compile_mode: CompileMode = compile_setting if compile_setting != "auto" else "blocks" if fast else "off"
    fuse_mode: FuseMode = fuse_setting if fuse_setting != "auto" else "default" if fast else "off"
    return compile_mode, fuse_mode


class DecodeTiling:
    """Tiles the VAE's decode of outputs above `min_area` pixels, and never its encode: diffusers' one
    `use_tiling` flag covers both, and tiled reference latents would differ from (and be cached beside)
    whole ones. Several outputs are always decoded one at a time (`enable_slicing`)."""

    def __init__(self, vae: Any, min_area: int) -> None:
        self.min_area = min_area
        self._tile_next = False
        vae.enable_slicing()
        vae.use_tiling = False
        decode = vae.decode

        def tiled_when_asked(*args: Any, **kwargs: Any) -> Any:
            vae.use_tiling = self._tile_next
            try:
                return decode(*args, **kwargs)
            finally:
                vae.use_tiling = False

        vae.decode = tiled_when_asked  # an instance attribute: the pipeline calls it as vae.decode(...)

    @contextlib.contextmanager
    def for_output(self, width: int, height: int) -> Iterator[None]:
        self._tile_next = width * height > self.min_area
        try:
            yield
        finally:
            self._tile_next = False


def attention_backend_names() -> list[str]:
    from diffusers.models.attention_dispatch import AttentionBackendName

    return sorted(member.value for member in AttentionBackendName)


def set_attention_backend(transformer: Any, name: str, *, device: str, dtype: Any) -> None:
    """Route every attention of `transformer` through the diffusers backend `name`, and check that it runs.

    diffusers checks that the backend's package is installed; one probe call on `device` in `dtype` also
    catches kernels this machine lacks (cuDNN attention on a CPU, FA3 before Hopper).
    """
    import torch
    from diffusers.models.attention_dispatch import AttentionBackendName, dispatch_attention_fn

    accepted = attention_backend_names()
    hint = f"set {ATTENTION_SETTING} to one of: {', '.join(accepted)}"
    if name not in accepted:
        raise EngineError(f"unknown attention backend {name!r} ({ATTENTION_SETTING})", hint=hint)
    config = transformer.config
    try:
        with _silenced("diffusers.models.modeling_utils"):  # "attention backends are experimental", each load
            transformer.set_attention_backend(name)
        probe = torch.randn(
            1, 64, config.num_attention_heads, config.attention_head_dim, device=device, dtype=dtype
        )
        dispatch_attention_fn(probe, probe, probe, backend=AttentionBackendName(name))
    except Exception as exc:
        raise EngineError(
            f"the attention backend {name!r} ({ATTENTION_SETTING}) does not work on {device}: "
            f"{type(exc).__name__}: {exc}",
            hint=hint,
        ) from exc


def compile_blocks(transformer: Any, backend: str | Callable[..., Any]) -> None:
    """Regional compile: one graph of the block code serves all blocks (60 in the real model).

    `dynamic=True` makes sizes, prompt lengths and LoRA weights symbolic from the first compile, so after the
    warm-up no request of another size or pose compiles again (the tests show it; `dynamic=None` would compile
    a second, dynamic graph on the first request whose prompt length differs from the warm-up's).
    """
    import torch

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    try:
        transformer.compile_repeated_blocks(fullgraph=True, dynamic=True, backend=backend)
    except Exception as exc:
        raise EngineError(
            f"cannot compile the transformer blocks ({COMPILE_SETTING}=blocks): {type(exc).__name__}: {exc}",
            hint=f"set {COMPILE_SETTING}=off",
        ) from exc


def uncompile_blocks(transformer: Any) -> None:
    """Undo `compile_blocks`: every block runs its eager forward again, and dynamo forgets what it traced."""
    import torch

    for module in transformer.modules():
        # what nn.Module.compile() set; torch has no public way to undo it
        module.__dict__.pop("_compiled_call_impl", None)
    torch._dynamo.reset()


def quantize_transformer(transformer: Any) -> Fp8Report:
    """FP8 linears in the transformer blocks; one runs once here, so that a GPU without FP8 fails at load."""
    import torch

    from reangle.engine.fp8 import Fp8Linear, quantize_fp8

    try:
        report = quantize_fp8(transformer)
        layer = next((m for m in transformer.modules() if isinstance(m, Fp8Linear)), None)
        if layer is None:
            raise ValueError("no linear layer of the transformer blocks could be quantized")
        with torch.inference_mode():
            layer(torch.zeros(16, layer.in_features, device=layer.weight_fp8.device, dtype=transformer.dtype))
    except Exception as exc:
        raise EngineError(
            f"FP8 quantization ({QUANTIZE_SETTING}=fp8) does not work here: {type(exc).__name__}: {exc}",
            hint=f"set {QUANTIZE_SETTING}=none, or use a GPU with FP8 matmuls (H100, H200, L40S, RTX 4090)",
        ) from exc
    return report


def warmup_edit(info: EngineInfo, adapters: Collection[str]) -> tuple[list[Image.Image], EditPlan]:
    """The default request (4 steps, the angle LoRA) on a uniform picture, at the engine's target area,
    with only the LoRAs that are configured."""
    image = Image.new("RGB", (WARMUP_INPUT_SIDE, WARMUP_INPUT_SIDE), (128, 128, 128))
    plan = plan_edit(EditRequest(seed=0), [image.size], limits=info.limits, target_area=info.target_area)
    return [image], replace(plan, loras=tuple(lora for lora in plan.loras if lora.adapter in adapters))


def warmup_generation(info: EngineInfo, adapters: Collection[str]) -> EditPlan:
    """The default text-to-image request (4 steps) at the engine's target area, with only the LoRAs that are
    configured."""
    plan = plan_generation(
        GenerateRequest(prompt="a grey cube on a table", seed=0),
        limits=info.limits,
        target_area=info.target_area,
    )
    return replace(plan, loras=tuple(lora for lora in plan.loras if lora.adapter in adapters))


def to_pil_images(images: Any) -> list[Image.Image]:
    """Pipeline output (`output_type="pt"`: [B, 3, H, W] in [0, 1], on its device) to PIL images.

    The same arithmetic as diffusers' "pil" output (float32 x 255, round half to even, uint8), done on the
    device, so only uint8 pixels cross to the CPU and the bytes are identical.
    """
    import torch

    pixels = (images.float() * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()
    return [Image.fromarray(picture) for picture in pixels]


@contextlib.contextmanager
def _silenced(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
