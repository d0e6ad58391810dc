"""What the tests of request LoRAs share: small random LoRA files in each naming style, and the tiny
transformer's layers."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch

Style = Literal["diffusers", "peft", "kohya", "kohya_unet"]
#: Two linear layers of each of the tiny transformer's blocks: enough to change its output.
TARGETS = ("transformer_blocks.0.attn.to_q", "transformer_blocks.1.img_mlp.net.2")


def tiny_pipe() -> Any:
    from diffusers import QwenImageEditPlusPipeline

    from reangle.engine.tiny import build_tiny_components

    pipe = QwenImageEditPlusPipeline(**build_tiny_components())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def lora_tensors(
    shapes: Mapping[str, tuple[int, int]], *, seed: int, style: Style = "diffusers", rank: int = 2
) -> dict[str, torch.Tensor]:
    """A random LoRA over `shapes` (module -> (in, out)), keyed as `style` names them."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for module, (in_features, out_features) in shapes.items():
        down = torch.randn(rank, in_features, generator=generator) * 0.5
        up = torch.randn(out_features, rank, generator=generator) * 0.5
        if style == "diffusers":
            tensors[f"transformer.{module}.lora_A.weight"] = down
            tensors[f"transformer.{module}.lora_B.weight"] = up
        elif style == "peft":
            tensors[f"{module}.lora_A.default.weight"] = down
            tensors[f"{module}.lora_B.default.weight"] = up
        else:
            name = f"lora_unet_{module.replace('.', '_')}" if style == "kohya_unet" else module
            tensors[f"{name}.lora_down.weight"] = down
            tensors[f"{name}.lora_up.weight"] = up
            tensors[f"{name}.alpha"] = torch.tensor(float(rank))
    return tensors


def write_lora(
    path: Path, shapes: Mapping[str, tuple[int, int]], *, seed: int = 0, style: Style = "diffusers"
) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(lora_tensors(shapes, seed=seed, style=style), str(path))
    return path


def lora_bytes(shapes: Mapping[str, tuple[int, int]], *, seed: int = 0, style: Style = "diffusers") -> bytes:
    from safetensors.torch import save

    return save(lora_tensors(shapes, seed=seed, style=style))
