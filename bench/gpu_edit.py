#!/usr/bin/env python
"""Time one camera edit through reangle's `qwen` engine, phase by phase.

`--config real` builds the real-size Qwen-Image-Edit-2511 architecture (60-layer MMDiT, Qwen-Image VAE,
Qwen2.5-VL-7B text encoder) with random bf16 weights created directly on the GPU, writes random LoRA files
of the real shapes (Lightning: rank 64 on the attention and MLP linears; Multiple-Angles: rank 16 on those
plus the modulation linears), and runs `QwenEngine.edit` exactly as the server does, through the engine's
`pipeline_factory` seam. Weights are random, so the images are noise: only the timings and the memory mean
anything. The arithmetic (shapes, token counts, kernels) is that of the real model.

`--config tiny` uses reangle's tiny random pipeline on any device in seconds: it checks that this script works
and says nothing about speed.

Phase timings come from wrappers installed on the pipeline object from outside (encode_prompt, the VAE's
encode/decode, the image processor, forward hooks on the text encoder and the transformer, the engine's step
callback), each synchronising the device before and after. Separate "clean" runs without any wrapper give the
end-to-end number and the back-to-back throughput.

    .venv/bin/python bench/gpu_edit.py --config real --runs 5 --warmup 2 --json-out bench-h100.json
    .venv/bin/python bench/gpu_edit.py --config tiny --runs 1 --warmup 1 --size 64

Exit status: 0 done, 2 bad usage (including `--config real` without CUDA), 1 the run failed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import math
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from reangle.engine.tiny import SPECIAL_TOKENS

if TYPE_CHECKING:
    from reangle.core.edit import Acceleration

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
GIB = 1024**3

# Real-model architecture (Qwen/Qwen-Image-Edit-2511 config files; see docs/benchmarks.md) -----------------

REAL_TRANSFORMER: dict[str, Any] = {
    "patch_size": 2,
    "in_channels": 64,
    "out_channels": 16,
    "num_layers": 60,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 3584,
    "guidance_embeds": False,
    "axes_dims_rope": (16, 56, 56),
    "zero_cond_t": True,
}
#: The VAE's real config equals the class defaults; the architecture fields are spelled out and checked.
REAL_VAE: dict[str, Any] = {
    "base_dim": 96,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "dropout": 0.0,
}
REAL_TEXT_MODEL: dict[str, Any] = {
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "hidden_act": "silu",
    "vocab_size": 152064,
    "max_position_embeddings": 128000,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "use_sliding_window": False,
}
REAL_VISION_MODEL: dict[str, Any] = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "out_hidden_size": 3584,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31],
    "tokens_per_second": 2,
    "hidden_act": "silu",
}
#: Image settings of the real processor: 28 px per merged token, so a 384x384 condition image is 196 tokens.
REAL_IMAGE_PROCESSOR: dict[str, Any] = {
    "min_pixels": 3136,
    "max_pixels": 12845056,
    "patch_size": 14,
    "merge_size": 2,
    "temporal_patch_size": 2,
}
#: The base model's scheduler (used only by acceleration "none"; Lightning swaps in its own).
REAL_SCHEDULER: dict[str, Any] = {
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
#: Parameter counts of the real checkpoints, to check the build against.
REAL_PARAMS = {"transformer": 20_430_401_088, "text_encoder": 8_292_166_656}
#: Sizes of the real LoRA files (bytes), for comparison with the random ones.
REAL_LORA_BYTES = {"lightning_4step": 849_608_296, "angles": 295_140_688}

ATTENTION_LINEARS = (
    "attn.to_q",
    "attn.to_k",
    "attn.to_v",
    "attn.to_out.0",
    "attn.add_q_proj",
    "attn.add_k_proj",
    "attn.add_v_proj",
    "attn.to_add_out",
)
MLP_LINEARS = ("img_mlp.net.0.proj", "img_mlp.net.2", "txt_mlp.net.0.proj", "txt_mlp.net.2")
MODULATION_LINEARS = ("img_mod.1", "txt_mod.1")


@dataclass(frozen=True, kw_only=True)
class LoraSpec:
    """A random LoRA: rank, which linears of each block, key style (kohya like Lightning, or peft)."""

    rank: int
    targets: tuple[str, ...]
    kohya: bool
    seed: int


#: rank 64 x 12 linears x 60 blocks in bf16 is 849.3 MB, the Lightning file's size; rank 16 x 14 linears is
#: 294.9 MB, the angles file's size (the shapes are inferred from the sizes; the key style does not matter).
REAL_LORAS = {
    "lightning": LoraSpec(rank=64, targets=ATTENTION_LINEARS + MLP_LINEARS, kohya=True, seed=4),
    "angles": LoraSpec(
        rank=16, targets=ATTENTION_LINEARS + MLP_LINEARS + MODULATION_LINEARS, kohya=False, seed=1
    ),
}
TINY_LORAS = {
    name: LoraSpec(rank=4, targets=spec.targets, kohya=spec.kohya, seed=spec.seed)
    for name, spec in REAL_LORAS.items()
}

#: Phases every run reports (per-step phases `step_<k>` come on top).
CORE_PHASES = (
    "decode_input",
    "plan",
    "lora_select",
    "preprocess",
    "text_encode",
    "text_encoder_forward",
    "vae_encode",
    "denoise",
    "vae_decode",
    "postprocess",
    "edit",
    "encode_png",
    "end_to_end",
)


#: Phases inside engine.edit that do not overlap; the rest of `edit` is reported as `edit_unaccounted_s`.
ACCOUNTED_PHASES = (
    "lora_select",
    "preprocess",
    "text_encode",
    "vae_encode",
    "denoise",
    "vae_decode",
    "postprocess",
)


# Building the pipeline ------------------------------------------------------------------------------------


@contextlib.contextmanager
def default_dtype(dtype: Any) -> Iterator[None]:
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def prompt_template() -> tuple[str, int]:
    """The pipeline's own prompt template and the count of leading tokens it drops."""
    from diffusers import QwenImageEditPlusPipeline

    empty = QwenImageEditPlusPipeline(
        scheduler=None, vae=None, text_encoder=None, tokenizer=None, processor=None, transformer=None
    )
    return empty.prompt_template_encode, empty.prompt_template_encode_start_idx


def build_tokenizer(instruction: str = "") -> Any:
    """An offline Qwen2 tokenizer whose token counts match the real one on this workload.

    The real vocabulary is not available offline. A byte-level BPE trained on the pipeline's own template and
    the 96 camera prompts gives whole-word tokens, as the real 151k vocabulary does for this English text, so
    the system prefix is 64 tokens (the count the pipeline drops) and the text stream has a realistic length.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    from reangle.core.camera import all_poses

    template, _ = prompt_template()
    corpus = [template.format(f"Picture 1: {pose.prompt(instruction)}") for pose in all_poses()]
    reference = Qwen2Tokenizer(vocab={"<|endoftext|>": 0}, merges=[]).backend_tokenizer
    trainer_model = Tokenizer(models.BPE())
    trainer_model.normalizer = reference.normalizer
    trainer_model.pre_tokenizer = reference.pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=8000,
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
    )
    trainer_model.train_from_iterator(corpus, trainer)
    model = json.loads(trainer_model.to_str())["model"]
    merges = [
        tuple(merge) if isinstance(merge, list) else tuple(merge.split(" ")) for merge in model["merges"]
    ]
    tokenizer = Qwen2Tokenizer(
        vocab=model["vocab"],
        merges=merges,
        unk_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    return tokenizer


def build_processor(tokenizer: Any) -> Any:
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    return Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(**REAL_IMAGE_PROCESSOR),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
    )


def build_real_transformer() -> Any:
    from diffusers import QwenImageTransformer2DModel

    return QwenImageTransformer2DModel(**REAL_TRANSFORMER)


def build_real_components(device: str, dtype: Any, instruction: str = "") -> dict[str, Any]:
    """The six pipeline components at real size, random weights allocated on `device` in `dtype`.

    `device="meta"` builds the modules without memory (used to count parameters on a CPU).
    """
    import torch
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = build_tokenizer(instruction)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    text_config = {
        **REAL_TEXT_MODEL,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
    }
    config = Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=REAL_VISION_MODEL,
        vocab_size=REAL_TEXT_MODEL["vocab_size"],
        hidden_size=REAL_TEXT_MODEL["hidden_size"],
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    with torch.device(device), default_dtype(dtype), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        transformer = build_real_transformer()
        vae = AutoencoderKLQwenImage(**REAL_VAE)
        text_encoder = Qwen2_5_VLForConditionalGeneration(config)
    for module in (transformer, vae, text_encoder):
        module.eval()  # as from_pretrained leaves them
        module.requires_grad_(False)
    return {
        "transformer": transformer,
        "vae": vae,
        "text_encoder": text_encoder,
        "scheduler": FlowMatchEulerDiscreteScheduler(**REAL_SCHEDULER),
        "tokenizer": tokenizer,
        "processor": build_processor(tokenizer),
    }


def real_pipeline_factory(device: str, instruction: str, built: dict[str, float]) -> Callable[[Any], Any]:
    """The engine's `pipeline_factory`: called with the dtype, returns the pipeline already on `device`."""

    def factory(dtype: Any) -> Any:
        from diffusers import QwenImageEditPlusPipeline

        started = time.perf_counter()
        pipe = QwenImageEditPlusPipeline(**build_real_components(device, dtype, instruction))
        synchronize(device)
        built["build_s"] = time.perf_counter() - started
        return pipe

    return factory


def tiny_pipeline_factory(device: str, built: dict[str, float]) -> Callable[[Any], Any]:
    def factory(dtype: Any) -> Any:
        import torch
        from diffusers import QwenImageEditPlusPipeline

        from reangle.engine.tiny import build_tiny_components

        started = time.perf_counter()
        with torch.device(device), default_dtype(dtype):
            pipe = QwenImageEditPlusPipeline(**build_tiny_components())
        built["build_s"] = time.perf_counter() - started
        return pipe

    return factory


def base_parameter_counts(components: Any) -> dict[str, int]:
    """Parameters of the transformer, text encoder and VAE (pipeline or components dict), without LoRAs."""
    counts = {}
    for name in ("transformer", "text_encoder", "vae"):
        module = components[name] if isinstance(components, dict) else getattr(components, name)
        counts[name] = sum(
            parameter.numel() for key, parameter in module.named_parameters() if "lora_" not in key
        )
    return counts


# Random LoRA files ----------------------------------------------------------------------------------------


def lora_shapes(transformer: Any, targets: Sequence[str]) -> list[tuple[str, int, int]]:
    """(module path, in features, out features) of each targeted linear of each block."""
    shapes = []
    for block in range(len(transformer.transformer_blocks)):
        for target in targets:
            name = f"transformer_blocks.{block}.{target}"
            layer = transformer.get_submodule(name)
            shapes.append((name, layer.in_features, layer.out_features))
    return shapes


def write_lora(path: Path, shapes: Sequence[tuple[str, int, int]], spec: LoraSpec, dtype: Any) -> int:
    """A random LoRA file (small values, so the outputs stay finite); returns its size in bytes."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(spec.seed)
    tensors: dict[str, torch.Tensor] = {}
    for name, fan_in, fan_out in shapes:
        rank = min(spec.rank, fan_in, fan_out)
        down = (torch.randn(rank, fan_in, generator=generator) / math.sqrt(fan_in)).to(dtype)
        up = (torch.randn(fan_out, rank, generator=generator) * 0.01).to(dtype)
        if spec.kohya:
            tensors[f"{name}.lora_down.weight"] = down
            tensors[f"{name}.lora_up.weight"] = up
            tensors[f"{name}.alpha"] = torch.tensor(float(rank), dtype=dtype)
        else:
            tensors[f"transformer.{name}.lora_A.weight"] = down
            tensors[f"transformer.{name}.lora_B.weight"] = up
    save_file(tensors, str(path))
    return path.stat().st_size


def write_loras(
    directory: Path, transformer: Any, specs: dict[str, LoraSpec], dtype: Any
) -> tuple[dict[str, str], dict[str, int]]:
    """Lightning (used for both the 4- and the 8-step adapter, as the server loads both) and angles."""
    from reangle.core.edit import ANGLES, LIGHTNING_4STEP, LIGHTNING_8STEP

    sizes = {}
    paths = {}
    for name, spec in specs.items():
        path = directory / f"{name}.safetensors"
        sizes[name] = write_lora(path, lora_shapes(transformer, spec.targets), spec, dtype)
        paths[name] = str(path)
    adapters = {
        LIGHTNING_4STEP: paths["lightning"],
        LIGHTNING_8STEP: paths["lightning"],
        ANGLES: paths["angles"],
    }
    return adapters, sizes


# Timing ---------------------------------------------------------------------------------------------------


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


class PhaseTimer:
    """Wraps pipeline internals from the outside and records per-phase seconds for the current run."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.samples: dict[str, float] = defaultdict(float)
        self._depth: dict[str, int] = defaultdict(int)
        self._restore: list[Callable[[], None]] = []
        self._step_started: float | None = None
        self._denoise_started: float | None = None
        self.text_tokens: int | None = None

    def now(self) -> float:
        synchronize(self.device)
        return time.perf_counter()

    def reset(self) -> None:
        self.samples = defaultdict(float)
        self._step_started = None
        self._denoise_started = None

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the outermost entry into `name` (nested calls, e.g. preprocess -> resize, count once)."""
        self._depth[name] += 1
        started = self.now() if self._depth[name] == 1 else 0.0
        try:
            yield
        finally:
            self._depth[name] -= 1
            if self._depth[name] == 0:
                self.samples[name] += self.now() - started

    def wrap(self, owner: Any, attribute: str, name: str) -> None:
        original = getattr(owner, attribute)
        had_own = attribute in vars(owner)

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.phase(name):
                return original(*args, **kwargs)

        setattr(owner, attribute, timed)  # an instance attribute shadows the class's method

        def restore() -> None:
            if had_own:
                setattr(owner, attribute, original)
            else:
                delattr(owner, attribute)

        self._restore.append(restore)

    def hook_module(self, module: Any, name: str) -> None:
        def before(_module: Any, _args: Any) -> None:
            self._depth[name] += 1
            if self._depth[name] == 1:
                self.samples[f"_{name}_start"] = self.now()

        def after(_module: Any, _args: Any, _output: Any) -> None:
            self._depth[name] -= 1
            if self._depth[name] == 0:
                self.samples[name] += self.now() - self.samples.pop(f"_{name}_start")

        handles = [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
        self._restore.extend(handle.remove for handle in handles)

    def install(self, pipe: Any) -> None:
        self.wrap(pipe, "encode_prompt", "text_encode")
        self.wrap(pipe.vae, "encode", "vae_encode")
        self.wrap(pipe.vae, "decode", "vae_decode")
        self.wrap(pipe.image_processor, "preprocess", "preprocess")
        self.wrap(pipe.image_processor, "resize", "preprocess")
        self.wrap(pipe.image_processor, "postprocess", "postprocess")
        for method in ("set_adapters", "enable_lora", "disable_lora"):
            self.wrap(pipe, method, "lora_select")
        self.hook_module(pipe.text_encoder, "text_encoder_forward")
        visual = getattr(getattr(pipe.text_encoder, "model", None), "visual", None)
        if visual is not None:
            self.hook_module(visual, "vision_tower_forward")

        def step_start(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
            if self._step_started is None:  # the first forward of a step (true CFG runs two)
                self._step_started = self.now()
                if self._denoise_started is None:
                    self._denoise_started = self._step_started
            prompt = kwargs.get("encoder_hidden_states")
            if prompt is not None:
                self.text_tokens = int(prompt.shape[1])

        handle = pipe.transformer.register_forward_pre_hook(step_start, with_kwargs=True)
        self._restore.append(handle.remove)

    def step_end(self, step: int, steps: int) -> None:
        """The engine's on_step callback: called after the scheduler step of each denoising step."""
        ended = self.now()
        if self._step_started is not None:
            self.samples[f"step_{step}"] += ended - self._step_started
        self._step_started = None
        if step == steps and self._denoise_started is not None:
            self.samples["denoise"] += ended - self._denoise_started

    def uninstall(self) -> None:
        while self._restore:
            self._restore.pop()()


@dataclass(frozen=True, kw_only=True)
class Workload:
    input_png: bytes
    size: int
    steps: int | None
    acceleration: Acceleration
    instruction: str


def make_input_png(size: int) -> bytes:
    """A photo-like picture (smooth gradients, shapes, mild noise), PNG-encoded."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    base = np.stack([200 * x + 30, 160 * y + 50, 120 * (1 - x * y) + 60], axis=-1)
    noisy = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype("uint8")
    image = Image.fromarray(noisy, "RGB")
    draw = ImageDraw.Draw(image)
    draw.ellipse((size * 0.3, size * 0.3, size * 0.7, size * 0.75), fill=(180, 60, 40))
    draw.rectangle((size * 0.1, size * 0.7, size * 0.35, size * 0.95), fill=(40, 90, 170))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def run_once(engine: Any, work: Workload, seed: int, timer: PhaseTimer | None) -> dict[str, float]:
    """Input bytes -> decoded image -> plan -> engine.edit -> PNG bytes, as the server's runner does it."""
    from reangle.core.camera import resolve_pose
    from reangle.core.edit import EditRequest
    from reangle.core.images import decode_image, encode_image
    from reangle.engine.base import plan_for

    device = engine.info.device
    marks: dict[str, float] = {}
    synchronize(device)
    started = time.perf_counter()
    image = decode_image(work.input_png, name="input").image
    marks["decode_input"] = time.perf_counter()
    request = EditRequest(
        prompt=work.instruction,
        pose=resolve_pose(horizontal_angle=90),
        acceleration=work.acceleration,
        steps=work.steps,
        seed=seed,
        width=work.size,
        height=work.size,
    )
    plan = plan_for(engine, request, [image])
    marks["plan"] = time.perf_counter()
    on_step = timer.step_end if timer is not None else _no_progress
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # random weights may give NaN pixels
        result = engine.edit([image], plan, on_step=on_step)
    synchronize(device)
    marks["edit"] = time.perf_counter()
    encode_image(result.images[0], "png")
    marks["encode_png"] = time.perf_counter()
    timings = {
        "decode_input": marks["decode_input"] - started,
        "plan": marks["plan"] - marks["decode_input"],
        "edit": marks["edit"] - marks["plan"],
        "encode_png": marks["encode_png"] - marks["edit"],
        "end_to_end": marks["encode_png"] - started,
    }
    if timer is not None:
        timings |= {name: value for name, value in timer.samples.items() if not name.startswith("_")}
    return timings


def _no_progress(_step: int, _steps: int) -> None:
    pass


def summarise(runs: Sequence[dict[str, float]]) -> dict[str, dict[str, Any]]:
    names = sorted({name for run in runs for name in run}, key=_phase_order)
    return {
        name: {
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
            "n": len(values),
            "values": values,
        }
        for name in names
        if (values := [run[name] for run in runs if name in run])
    }


def _phase_order(name: str) -> tuple[int, int, str]:
    split = CORE_PHASES.index("denoise")
    order = [*CORE_PHASES[:split], "vision_tower_forward", "step_", *CORE_PHASES[split:]]
    if name.startswith("step_"):
        return (order.index("step_"), int(name.removeprefix("step_")), name)
    if name in order:
        return (order.index(name), 0, name)
    return (len(order), 0, name)


# Environment ----------------------------------------------------------------------------------------------


def versions() -> dict[str, str | None]:
    import diffusers
    import peft
    import PIL
    import torch
    import transformers

    import reangle

    cudnn: Any = torch.backends.cudnn
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": str(cudnn.version()) if cudnn.is_available() else None,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "pillow": PIL.__version__,
        "reangle": reangle.__version__,
    }


def device_info(device: str) -> dict[str, Any]:
    import os

    import torch

    info: dict[str, Any] = {
        "device": device,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        info |= {
            "name": props.name,
            "total_memory_gib": round(props.total_memory / GIB, 2),
            "capability": f"{props.major}.{props.minor}",
            "multiprocessors": props.multi_processor_count,
        }
    else:
        info["name"] = f"CPU ({info['cpu']}, {info['cpu_count']} cores)"
    return info


def memory_gib(device: str, what: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    import torch

    value = getattr(torch.cuda, what)(device)
    return round(float(value) / GIB, 3)


# Main -----------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="gpu_edit.py",
        description="Time a camera edit through reangle's qwen engine on a random-weight pipeline.",
    )
    parser.add_argument(
        "--config", choices=("real", "tiny"), default="real", help="model size (default real)"
    )
    parser.add_argument("--device", help="cuda, cuda:1, cpu ... (default: cuda if available, else cpu)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs with phase timers (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    parser.add_argument("--edits", type=int, help="back-to-back edits for the throughput (default: 2 x runs)")
    parser.add_argument(
        "--size", type=int, default=1024, help="input and output side in pixels (default 1024)"
    )
    parser.add_argument("--steps", type=int, help="denoising steps (default: the acceleration's, 4 for high)")
    parser.add_argument(
        "--acceleration", choices=("none", "regular", "high"), default="high", help="(default high)"
    )
    parser.add_argument("--prompt", default="", help="instruction after the camera phrase (default none)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--work-dir", type=Path, help="where the random LoRA files go (default: a temp dir)")
    parser.add_argument("--json-out", type=Path, help="write the report here as JSON")
    args = parser.parse_args(argv)
    for name in ("runs", "size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.warmup < 0 or (args.edits is not None and args.edits < 0):
        parser.error("--warmup and --edits must not be negative")
    if args.size % 16:
        parser.error("--size must be a multiple of 16")
    return args


def resolve_device(args: argparse.Namespace) -> str:
    """The device to run on; exits with 2 when the real configuration is asked for without CUDA."""
    import torch

    device: str = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        fail_usage(f"--device {device} was given, but torch sees no CUDA device")
    if args.config == "real" and not device.startswith("cuda"):
        fail_usage(
            "--config real needs a CUDA GPU with about 70 GB of memory (H100 80 GB, H200); "
            f"this machine {'has none' if not torch.cuda.is_available() else f'was asked for {device}'}. "
            "Use --config tiny to check the script on a CPU."
        )
    return device


def fail_usage(message: str) -> None:
    print(f"gpu_edit.py: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args)
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="reangle-bench-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    from reangle.errors import ReangleError

    try:
        report = benchmark(args, device, work_dir)
    except ReangleError as exc:  # e.g. the pipeline did not fit in GPU memory
        print(f"gpu_edit.py: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    print_report(report)
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.json_out}")
    return EXIT_OK


def benchmark(args: argparse.Namespace, device: str, work_dir: Path) -> dict[str, Any]:
    import torch

    from reangle.core.edit import SizeLimits
    from reangle.engine.qwen import QwenConfig, QwenEngine, quiet_libraries
    from reangle.engine.tiny import build_tiny_components

    quiet_libraries()
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    setup: dict[str, float] = {}

    started = time.perf_counter()
    if args.config == "real":
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            shape_source = build_real_transformer()
        specs = REAL_LORAS
    else:
        shape_source = build_tiny_components()["transformer"]
        specs = TINY_LORAS
    loras, lora_bytes = write_loras(
        work_dir, shape_source, specs, torch.bfloat16 if args.config == "real" else dtype
    )
    setup["lora_files_s"] = time.perf_counter() - started

    factory = (
        real_pipeline_factory(device, args.prompt, setup)
        if args.config == "real"
        else tiny_pipeline_factory(device, setup)
    )
    engine = QwenEngine(
        QwenConfig(
            model=f"random-weight {args.config} architecture (bench)",
            loras=loras,
            device=device,
            offline=True,
            target_area=args.size * args.size,
            reference_area=args.size * args.size,
            limits=SizeLimits(min_side=16, max_side=2048),
            name="qwen",
            demo=True,
            pipeline_factory=factory,
        )
    )
    started = time.perf_counter()
    engine.load()
    synchronize(device)
    setup["load_s"] = time.perf_counter() - started  # build + LoRA loading
    pipe = engine.pipeline  # read-only access, to install the timers from outside
    params = base_parameter_counts(pipe)
    memory: dict[str, float | None] = {
        "weights_gib": memory_gib(device, "memory_allocated"),
        "peak_load_gib": memory_gib(device, "max_memory_allocated"),
    }
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)

    work = Workload(
        input_png=make_input_png(args.size),
        size=args.size,
        steps=args.steps,
        acceleration=cast("Acceleration", args.acceleration),
        instruction=args.prompt,
    )
    for index in range(args.warmup):
        run_once(engine, work, args.seed + index, None)

    timer = PhaseTimer(device)
    timer.install(pipe)
    phased = []
    try:
        for index in range(args.runs):
            timer.reset()
            phased.append(run_once(engine, work, args.seed + index, timer))
    finally:
        timer.uninstall()
    clean = [run_once(engine, work, args.seed + index, None)["end_to_end"] for index in range(args.runs)]

    edits = args.edits if args.edits is not None else 2 * args.runs
    started = time.perf_counter()
    for index in range(edits):
        run_once(engine, work, args.seed + index, None)
    wall = time.perf_counter() - started
    memory |= {
        "peak_edit_gib": memory_gib(device, "max_memory_allocated"),
        "peak_edit_reserved_gib": memory_gib(device, "max_memory_reserved"),
    }

    phases = summarise(phased)
    phases["end_to_end_clean"] = summarise([{"end_to_end_clean": value} for value in clean])[
        "end_to_end_clean"
    ]
    accounted = sum(phases[name]["median"] for name in ACCOUNTED_PHASES if name in phases)
    steps = sorted(name for name in phases if name.startswith("step_"))
    return {
        "bench": "gpu_edit",
        "schema": 1,
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "config": args.config,
        "meaningful_for_speed": args.config == "real",
        "device": device_info(device),
        "versions": versions(),
        "settings": {
            "size": args.size,
            "steps": len(steps),
            "acceleration": args.acceleration,
            "runs": args.runs,
            "warmup": args.warmup,
            "edits": edits,
            "seed": args.seed,
            "dtype": str(dtype).removeprefix("torch."),
            "prompt": args.prompt,
            "loras": {
                name: {"rank": spec.rank, "linears_per_block": len(spec.targets), "bytes": lora_bytes[name]}
                for name, spec in specs.items()
            },
            "text_tokens": timer.text_tokens,
            "image_tokens": (args.size // 16) ** 2,
            "reference_tokens": (args.size // 16) ** 2,
        },
        "params": params,
        "setup_s": setup,
        "phases_s": phases,
        "medians_s": {name: stats["median"] for name, stats in phases.items()},
        "step_median_s": statistics.median(phases[name]["median"] for name in steps) if steps else None,
        "edit_unaccounted_s": phases["edit"]["median"] - accounted,
        "memory": memory,
        "throughput": {
            "edits": edits,
            "wall_s": wall,
            "edits_per_minute": 60 * edits / wall if edits and wall > 0 else None,
        },
    }


def print_report(report: dict[str, Any]) -> None:
    settings, device = report["settings"], report["device"]
    print(
        f"reangle gpu_edit: config {report['config']} on {device['name']}; "
        f"{settings['size']}x{settings['size']} in and out, {settings['steps']} steps "
        f"({settings['acceleration']}), {settings['dtype']}, "
        f"{settings['runs']} runs after {settings['warmup']} warm-up"
    )
    if not report["meaningful_for_speed"]:
        print(
            "NOTE: the tiny configuration only checks that this script works; "
            "its times say nothing about speed"
        )
    print(f"\n{'phase':<24}{'median ms':>12}{'min ms':>12}{'max ms':>12}{'n':>5}")
    for name, stats in report["phases_s"].items():
        print(
            f"{name:<24}{stats['median'] * 1e3:>12.2f}{stats['min'] * 1e3:>12.2f}"
            f"{stats['max'] * 1e3:>12.2f}{stats['n']:>5}"
        )
    memory = report["memory"]
    if memory["peak_edit_gib"] is not None:
        print(
            f"\nmemory: weights {memory['weights_gib']} GiB, "
            f"peak while loading {memory['peak_load_gib']} GiB, "
            f"peak while editing {memory['peak_edit_gib']} GiB "
            f"(reserved {memory['peak_edit_reserved_gib']} GiB)"
        )
    throughput = report["throughput"]
    if throughput["edits_per_minute"] is not None:
        print(
            f"throughput: {throughput['edits']} edits back to back in {throughput['wall_s']:.2f} s = "
            f"{throughput['edits_per_minute']:.1f} edits/min"
        )
    params = ", ".join(f"{name} {count:,}" for name, count in report["params"].items())
    print(
        f"parameters: {params}; text tokens {settings['text_tokens']}; setup {_fmt_setup(report['setup_s'])}"
    )


def _fmt_setup(setup: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.1f} s" for name, value in setup.items())


if __name__ == "__main__":
    sys.exit(main())
