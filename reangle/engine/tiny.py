"""The tiny engine: the real qwen engine code on a random-weight pipeline built in process, fully offline.

Its images are meaningless noise-like pictures; it exists so that the real diffusers path (from_pretrained,
LoRA loading, scheduler, callbacks) runs on any CPU in seconds, for tests and for the demo mode. Text-to-image
too: a tiny QwenImagePipeline transformer and scheduler are saved beside the edit pipeline (in
`text-to-image/`) and share its text encoder, tokenizer and VAE, as the real models do.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from reangle.core.edit import ANGLES, LIGHTNING_4STEP, LIGHTNING_8STEP, SizeLimits
from reangle.engine.qwen import BASE_SCHEDULER_CONFIG, QwenConfig, QwenEngine, quiet_libraries, speed_options
from reangle.engine.text_to_image import TextToImageConfig
from reangle.settings import Settings

#: Bump when the builder changes, so cached copies are rebuilt.
TINY_VERSION = 3  # 2: the base model's scheduler config; 3: the text-to-image transformer
#: The tiny text-to-image model's folder inside the tiny model's: transformer/, scheduler/ and loras/.
TEXT_TO_IMAGE_DIR = "text-to-image"
TINY_TARGET_AREA = 128 * 128
TINY_REFERENCE_AREA = 64 * 64
TINY_LIMITS = SizeLimits(min_side=16, max_side=1024)
DEMO_BANNER = "demo mode: images come from a tiny random-weight model and are meaningless"

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
#: Linear layers of each transformer block that the tiny LoRAs touch.
_LORA_TARGETS = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "img_mlp.net.2")
#: Generator seed of each tiny LoRA file; the Lightning ones use kohya-style keys, like the real files.
_LORA_SEEDS = {LIGHTNING_4STEP: 4, LIGHTNING_8STEP: 8, ANGLES: 1}
_TEXT_TO_IMAGE_LORA_SEEDS = {LIGHTNING_4STEP: 14, LIGHTNING_8STEP: 18}


def tiny_engine(settings: Settings) -> QwenEngine:
    model_dir = ensure_tiny_model(settings.cache_dir / f"tiny-v{TINY_VERSION}")
    text_to_image_dir = model_dir / TEXT_TO_IMAGE_DIR
    return QwenEngine(
        QwenConfig(
            model=str(model_dir),
            loras={adapter: str(model_dir / "loras" / f"{adapter}.safetensors") for adapter in _LORA_SEEDS},
            text_to_image=TextToImageConfig(
                model=str(text_to_image_dir),
                loras={
                    adapter: str(text_to_image_dir / "loras" / f"{adapter}.safetensors")
                    for adapter in _TEXT_TO_IMAGE_LORA_SEEDS
                },
                residency=settings.text_to_image_residency,
            ),
            device="cpu",
            offline=True,
            target_area=TINY_TARGET_AREA,
            reference_area=TINY_REFERENCE_AREA,
            limits=TINY_LIMITS,
            name="tiny",
            demo=True,
            # the speed settings work here too, so that they can be tried without a GPU
            **speed_options(settings),
        )
    )


def ensure_tiny_model(directory: Path) -> Path:
    """Build the tiny pipeline and its LoRA files into `directory` once; later calls reuse it."""
    if (directory / "model_index.json").is_file():
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=directory.parent))
    try:
        write_tiny_model(staging)
        staging.rename(directory)
    except OSError:
        if not (directory / "model_index.json").is_file():  # not a concurrent builder that won the race
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def write_tiny_model(directory: Path) -> None:
    from diffusers import QwenImageEditPlusPipeline

    quiet_libraries()
    pipe = QwenImageEditPlusPipeline(**build_tiny_components())
    loras = directory / "loras"
    loras.mkdir(parents=True)
    for adapter, seed in _LORA_SEEDS.items():
        write_tiny_lora(
            pipe.transformer, loras / f"{adapter}.safetensors", seed=seed, kohya=adapter != ANGLES
        )
    write_tiny_text_to_image(directory / TEXT_TO_IMAGE_DIR)
    # model_index.json is written last, so its presence marks a complete build
    pipe.save_pretrained(directory)


def write_tiny_text_to_image(directory: Path) -> None:
    """The tiny text-to-image model's own parts, as the engine reads a real one: transformer/ and scheduler/
    (the text encoder, tokenizer and VAE are the edit pipeline's), and its Lightning LoRAs in loras/."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    transformer = build_tiny_text_to_image_transformer()
    transformer.save_pretrained(directory / "transformer")
    FlowMatchEulerDiscreteScheduler.from_config(BASE_SCHEDULER_CONFIG).save_pretrained(
        directory / "scheduler"
    )
    (directory / "loras").mkdir()
    for adapter, seed in _TEXT_TO_IMAGE_LORA_SEEDS.items():
        write_tiny_lora(transformer, directory / "loras" / f"{adapter}.safetensors", seed=seed, kohya=True)


def build_tiny_text_to_image_transformer(*, num_layers: int = 2) -> Any:
    """A seeded tiny Qwen-Image transformer: the edit one's shapes (so that it takes the same text encoder
    and VAE), its own weights, and no `zero_cond_t` (Qwen-Image has no reference images)."""
    return _tiny_transformer(num_layers=num_layers, seed=1, zero_cond_t=False)


def build_tiny_components(*, num_layers: int = 2) -> dict[str, Any]:
    """Seeded tiny transformer (`num_layers` blocks), VAE and Qwen2.5-VL text encoder, with an offline
    byte-level tokenizer."""
    import torch
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    tokenizer = _build_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=28 * 28, max_pixels=56 * 56),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
    )
    # as in 2511: reference tokens are modulated with t=0
    transformer = _tiny_transformer(num_layers=num_layers, seed=0, zero_cond_t=True)
    torch.manual_seed(0)
    vae = AutoencoderKLQwenImage(
        base_dim=24,
        z_dim=4,
        dim_mult=[1, 2, 4],
        num_res_blocks=1,
        temperal_downsample=[False, True],
        latents_mean=[0.0] * 4,
        latents_std=[1.0] * 4,
    )
    torch.manual_seed(0)
    text_config = {
        "hidden_size": 16,
        "intermediate_size": 16,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "rope_theta": 1000000.0,
        "vocab_size": len(tokenizer),
        "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
    }
    text_encoder = Qwen2_5_VLForConditionalGeneration(
        Qwen2_5_VLConfig(
            text_config=text_config,
            vision_config={
                "depth": 2,
                "hidden_size": 16,
                "intermediate_size": 16,
                "num_heads": 2,
                "out_hidden_size": 16,
            },
            hidden_size=16,
            vocab_size=len(tokenizer),
            image_token_id=ids["<|image_pad|>"],
            video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"],
            vision_end_token_id=ids["<|vision_end|>"],
        )
    )
    return {
        "transformer": transformer,
        "vae": vae,
        "scheduler": FlowMatchEulerDiscreteScheduler.from_config(BASE_SCHEDULER_CONFIG),
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "processor": processor,
    }


def _tiny_transformer(*, num_layers: int, seed: int, zero_cond_t: bool) -> Any:
    import torch
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(seed)
    return QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=num_layers,
        attention_head_dim=16,
        num_attention_heads=3,
        joint_attention_dim=16,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
        zero_cond_t=zero_cond_t,
    )


def _build_tokenizer() -> Any:
    """Byte-level BPE with no merges (every byte is a token) plus the Qwen special tokens."""
    from tokenizers import pre_tokenizers
    from transformers import Qwen2Tokenizer

    vocab = {symbol: index for index, symbol in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab, merges=[], unk_token="<|endoftext|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    return tokenizer


def write_tiny_lora(transformer: Any, path: Path, *, seed: int, kohya: bool = False, rank: int = 4) -> None:
    """A random LoRA over the tiny transformer, in diffusers (`transformer.` prefix) or kohya style."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for block in range(len(transformer.transformer_blocks)):
        for target in _LORA_TARGETS:
            layer = transformer.get_submodule(f"transformer_blocks.{block}.{target}")
            down = torch.randn(rank, layer.in_features, generator=generator) * 0.3
            up = torch.randn(layer.out_features, rank, generator=generator) * 0.3
            name = f"transformer_blocks.{block}.{target}"
            if kohya:
                tensors |= {f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up}
                tensors[f"{name}.alpha"] = torch.tensor(float(rank))
            else:
                tensors |= {
                    f"transformer.{name}.lora_A.weight": down,
                    f"transformer.{name}.lora_B.weight": up,
                }
    save_file(tensors, str(path))
