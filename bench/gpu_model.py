"""The random-weight pipelines `gpu_edit.py` runs, and random LoRA files of the real shapes.

`pipeline_factory` builds either the real-size Qwen-Image-Edit-2511 architecture (60-layer MMDiT, Qwen-Image
VAE, Qwen2.5-VL-7B text encoder) with random weights created directly on the device, or reangle's tiny random
pipeline. Both seed torch before building, so every build in a process (and on the same kind of device, in any
process) holds the same weights; `weights_fingerprint` shows it.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpu_timing import synchronize

from reangle.engine.qwen import BASE_SCHEDULER_CONFIG
from reangle.engine.tiny import SPECIAL_TOKENS

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
        "scheduler": FlowMatchEulerDiscreteScheduler.from_config(BASE_SCHEDULER_CONFIG),
        "tokenizer": tokenizer,
        "processor": build_processor(tokenizer),
    }


@dataclass(kw_only=True)
class Build:
    """What the factory recorded about the pipeline it built, before the engine touched it."""

    seconds: float = 0.0
    params: dict[str, int] = field(default_factory=dict)
    fingerprint: dict[str, float] = field(default_factory=dict)
    #: The pipeline, weakly: dead once nothing holds it any more.
    pipeline: weakref.ref[Any] | None = None

    def released(self) -> bool:
        return self.pipeline is None or self.pipeline() is None


def pipeline_factory(config: str, device: str, instruction: str, build: Build) -> Callable[[Any], Any]:
    """The engine's `pipeline_factory`: called with the dtype, returns the pipeline already on `device`."""

    def factory(dtype: Any) -> Any:
        import torch
        from diffusers import QwenImageEditPlusPipeline

        from reangle.engine.tiny import build_tiny_components

        started = time.perf_counter()
        if config == "real":
            pipe = QwenImageEditPlusPipeline(**build_real_components(device, dtype, instruction))
        else:
            with torch.device(device), default_dtype(dtype):
                pipe = QwenImageEditPlusPipeline(**build_tiny_components())
        synchronize(device)
        build.seconds = time.perf_counter() - started
        build.params = base_parameter_counts(pipe)
        build.fingerprint = weights_fingerprint(pipe)
        build.pipeline = weakref.ref(pipe)
        return pipe

    return factory


def weights_fingerprint(pipe: Any) -> dict[str, float]:
    """Sum and sum of squares of every weight of each model (float64): equal across builds with equal weights.

    Chunks of at most 2**26 elements keep the float64 temporaries small (512 MB) beside 58 GB of weights.
    """
    import torch

    sums = {}
    with torch.no_grad():
        for name in ("transformer", "text_encoder", "vae"):
            total = torch.zeros((), dtype=torch.float64, device=pipe.device)
            squares = torch.zeros_like(total)
            for parameter in getattr(pipe, name).parameters():
                for chunk in parameter.detach().reshape(-1).split(2**26):
                    wide = chunk.double()
                    total += wide.sum().to(total.device)
                    squares += wide.square().sum().to(total.device)
            sums[f"{name}_sum"] = float(total)
            sums[f"{name}_sum_squares"] = float(squares)
    return sums


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
