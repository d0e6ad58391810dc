"""Load a LoRA into the pipeline and prove it attached: diffusers only warns when a file matches nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reangle.errors import LoraLoadError

#: Key prefixes diffusers recognises and converts itself (plus kohya `.alpha` files).
_KNOWN_PREFIXES = ("transformer.", "diffusion_model.", "lora_unet_")


def resolve_lora_file(location: str, *, offline: bool) -> Path:
    """A local .safetensors file as is; otherwise `<owner>/<repo>/<path in repo>` fetched from the hub."""
    path = Path(location).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        if len(files) != 1:
            raise LoraLoadError(
                f"LoRA directory {path} must hold exactly one .safetensors file, found {len(files)}"
            )
        return files[0]
    parts = location.split("/")
    if location.startswith((".", "/", "~")) or len(parts) < 3:
        raise LoraLoadError(
            f"LoRA file not found: {location}",
            hint="give a local .safetensors file or <owner>/<repo>/<file> on the Hugging Face hub",
        )
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download("/".join(parts[:2]), "/".join(parts[2:]), local_files_only=offline))
    except Exception as exc:
        raise LoraLoadError(f"cannot fetch LoRA {location} from the hub: {exc}") from exc


def read_lora_state_dict(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    try:
        state_dict: dict[str, Any] = load_file(str(path))
    except Exception as exc:
        raise LoraLoadError(f"{path} is not a readable safetensors LoRA file: {exc}") from exc
    if not state_dict:
        raise LoraLoadError(f"LoRA file {path} holds no tensors")
    return _with_transformer_prefix(state_dict)


def _with_transformer_prefix(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Bare peft keys (`blocks.0.attn.to_q.lora_A.weight`) load nothing in diffusers; prefix them."""
    keys = state_dict.keys()
    if any(key.startswith(_KNOWN_PREFIXES) or key.endswith(".alpha") for key in keys):
        return state_dict
    return {f"transformer.{key}": value for key, value in state_dict.items()}


def load_lora(pipe: Any, adapter: str, path: Path) -> None:
    """Load `path` as adapter `adapter`; a file that matched no weights of the transformer is an error."""
    state_dict = read_lora_state_dict(path)
    try:
        pipe.load_lora_weights(state_dict, adapter_name=adapter)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise LoraLoadError(f"LoRA file {path} does not fit this model: {exc}") from exc
    if (
        adapter not in pipe.get_list_adapters().get("transformer", [])
        or _lora_module_count(pipe, adapter) == 0
    ):
        raise LoraLoadError(
            f"LoRA file {path} matched no weights of the transformer",
            hint="is it a LoRA for Qwen-Image-Edit (keys like transformer_blocks.N.attn.to_q...)?",
        )


def _lora_module_count(pipe: Any, adapter: str) -> int:
    return sum(1 for module in pipe.transformer.modules() if adapter in getattr(module, "lora_A", {}))
