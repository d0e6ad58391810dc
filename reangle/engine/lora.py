"""LoRA files: find them, read them into diffusers' form before the model loads, and attach them strictly.

`read_lora_file` accepts every format diffusers' Qwen-Image loader reads (diffusers/peft keys with or without
the `transformer.` prefix, kohya `lora_down`/`lora_up` with or without `.alpha`, `lora_unet_` and
`diffusion_model.` prefixes, peft's `.default.` adapter names) and keeps the file's `lora_adapter_metadata`
header (the trained `lora_alpha`, which a bare tensor dict would lose). `load_lora` then refuses a file whose
modules the transformer lacks or whose shapes differ, instead of diffusers' warning and a half-applied LoRA.

Errors name a file by its name only, never its folder: they may end up in a job's error, which users see (the
runner names a request's LoRA there as the request did). The full path goes to the server log.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reangle.errors import LoraLoadError

log = logging.getLogger("reangle.lora")

STRICT_SETTING = "REANGLE_LORA_STRICT"
#: The safetensors header entry where diffusers' `save_lora_weights` keeps the adapter's LoraConfig.
METADATA_KEY = "lora_adapter_metadata"
_DIFFUSERS_KEY = re.compile(
    r"transformer\.(?P<module>.+)\.(?P<part>lora_A\.weight|lora_B\.weight|lora_B\.bias)"
)
_KOHYA_DOWN = ".lora_down.weight"
#: How many names an error lists before it says how many more there are.
_LISTED = 5


@dataclass(frozen=True)
class LoraFile:
    path: Path
    #: `transformer.<module>.lora_A.weight` / `.lora_B.weight` (and `.lora_B.bias`), any kohya alpha folded
    #: into the weights.
    state_dict: dict[str, Any]
    #: The file's adapter metadata (LoraConfig fields, keys prefixed `transformer.`), or None.
    metadata: dict[str, Any] | None
    #: module name -> (rank, in features, out features)
    modules: dict[str, tuple[int, int, int]]


def resolve_lora_file(location: str, *, offline: bool) -> Path:
    """A local .safetensors file as is; otherwise `<owner>/<repo>/<path in repo>` fetched from the hub."""
    path = Path(location).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        if len(files) != 1:
            raise LoraLoadError(
                f"LoRA directory {path.name} must hold exactly one .safetensors file, found {len(files)}"
            )
        return files[0]
    parts = location.split("/")
    if location.startswith((".", "/", "~")) or len(parts) < 3:
        raise LoraLoadError(
            f"LoRA file not found: {path.name}",
            hint="give a local .safetensors file or <owner>/<repo>/<file> on the Hugging Face hub",
        )
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download("/".join(parts[:2]), "/".join(parts[2:]), local_files_only=offline))
    except Exception as exc:
        log.warning("cannot fetch LoRA %s from the hub", location, exc_info=True)
        raise LoraLoadError(
            f"cannot fetch LoRA {location} from the hub: {type(exc).__name__} (the server log has details)"
        ) from exc


def read_lora_file(path: Path) -> LoraFile:
    """Read `path` into diffusers' key form with its metadata, or raise a LoraLoadError naming the file."""
    tensors, header = _read_safetensors(path)
    if not tensors:
        raise LoraLoadError(f"LoRA file {path.name} holds no tensors")
    try:
        state_dict = diffusers_state_dict(tensors)
        modules = _module_shapes(state_dict)
        metadata = _adapter_metadata(header)
    except ValueError as exc:
        raise LoraLoadError(f"LoRA file {path.name} is not a LoRA reangle can read: {exc}") from exc
    return LoraFile(path=path, state_dict=state_dict, metadata=metadata, modules=modules)


def diffusers_state_dict(tensors: dict[str, Any]) -> dict[str, Any]:
    """`tensors` in the form diffusers' transformer loader takes, converted as its Qwen-Image loader does.

    Two cases it gets wrong are put right first: a `transformer.` prefix on a file it converts (it would add
    a second one), and kohya keys with no `.alpha` and no other mark of the format (it would not convert
    them; an absent alpha means alpha = rank, as in its converter)."""
    import torch
    from diffusers.loaders import QwenImageLoraLoaderMixin

    if any("dora_scale" in key or "lora_magnitude_vector" in key for key in tensors):
        raise ValueError("it is a DoRA; only plain LoRAs are supported")
    bare = {key.removeprefix("transformer."): value for key, value in tensors.items()}
    if not _diffusers_converts(bare):
        if not any(key.endswith(_KOHYA_DOWN) for key in bare):
            return {f"transformer.{key}": value for key, value in bare.items()}
        for key, down in list(bare.items()):
            if key.endswith(_KOHYA_DOWN):
                # float32: the rank must stay exact, whatever the file's dtype (bf16, fp8)
                alpha = down.new_tensor(float(down.shape[0]), dtype=torch.float32)
                bare[key.removesuffix(_KOHYA_DOWN) + ".alpha"] = alpha
    try:
        converted: dict[str, Any] = QwenImageLoraLoaderMixin.lora_state_dict(bare)
    except (KeyError, ValueError, IndexError, AttributeError) as exc:
        raise ValueError(f"its keys do not convert ({type(exc).__name__}: {exc})") from exc
    return converted


def _diffusers_converts(keys: dict[str, Any]) -> bool:
    """The test diffusers' Qwen-Image `lora_state_dict` applies before converting a file's keys."""
    return any(
        key.endswith(".alpha") or key.startswith(("lora_unet_", "diffusion_model.")) or "default." in key
        for key in keys
    )


def _module_shapes(state_dict: dict[str, Any]) -> dict[str, tuple[int, int, int]]:
    parts: dict[str, dict[str, Any]] = {}
    unexpected = []
    for key, value in state_dict.items():
        match = _DIFFUSERS_KEY.fullmatch(key)
        if match is None:
            unexpected.append(key)
        else:
            parts.setdefault(match["module"], {})[match["part"]] = value
    if unexpected:
        raise ValueError(f"unexpected keys {_listed(sorted(unexpected))}")
    shapes = {}
    for module, pair in sorted(parts.items()):
        down, up = pair.get("lora_A.weight"), pair.get("lora_B.weight")
        if down is None or up is None:
            has, lacks = ("B", "A") if down is None else ("A", "B")
            raise ValueError(f"{module} has lora_{has} but not lora_{lacks}")
        if down.ndim != 2 or up.ndim != 2 or down.shape[0] != up.shape[1]:
            raise ValueError(
                f"{module}: lora_A {tuple(down.shape)} and lora_B {tuple(up.shape)} are not a rank-r pair"
            )
        shapes[module] = (int(down.shape[0]), int(down.shape[1]), int(up.shape[0]))
    return shapes


def _adapter_metadata(header: dict[str, str]) -> dict[str, Any] | None:
    raw = header.get(METADATA_KEY)
    if not raw:
        return None
    try:
        metadata = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"its {METADATA_KEY} header is not JSON ({exc})") from exc
    if not isinstance(metadata, dict):
        raise ValueError(f"its {METADATA_KEY} header is not a JSON object")
    # diffusers writes the transformer's fields prefixed; unprefixed ones would make it build a default config
    return metadata if any(key.startswith("transformer.") for key in metadata) else None


def _read_safetensors(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    except Exception as exc:
        log.warning("cannot read the LoRA file %s", path, exc_info=True)
        reason = str(exc).replace(str(path), path.name)  # safetensors' own words may name the whole path
        raise LoraLoadError(f"{path.name} is not a readable safetensors LoRA file: {reason}") from exc
    return tensors, header


def load_lora(pipe: Any, adapter: str, lora: LoraFile, *, strict: bool = True) -> str | None:
    """Attach `lora` to the pipeline's transformer as `adapter`. Modules the transformer lacks are an error,
    or with `strict=False` are left out and named in the returned note; a shape that differs is always an
    error."""
    missing, mismatched = _unmatched_modules(pipe.transformer, lora.modules)
    if mismatched:
        raise LoraLoadError(
            f"LoRA file {lora.path.name} does not fit this model: shapes differ at {_listed(mismatched)}",
            hint="is it a LoRA for Qwen-Image-Edit-2511?",
        )
    if len(missing) == len(lora.modules):
        raise LoraLoadError(
            f"LoRA file {lora.path.name} matched no weights of the transformer (first: {_listed(missing)})",
            hint="is it a LoRA for Qwen-Image-Edit (keys like transformer_blocks.N.attn.to_q...)?",
        )
    state_dict = lora.state_dict
    note = None
    if missing:
        if strict:
            raise LoraLoadError(
                f"LoRA file {lora.path.name} names {len(missing)} modules the transformer does not have: "
                f"{_listed(missing)}",
                hint=f"another model or version? {STRICT_SETTING}=false loads the modules that match",
            )
        dropped = {f"transformer.{module}" for module in missing}
        state_dict = {
            key: value for key, value in state_dict.items() if key.rsplit(".lora_", 1)[0] not in dropped
        }
        note = (
            f"{STRICT_SETTING}=false: LoRA {adapter} ({lora.path.name}) left out {len(missing)} modules the "
            f"transformer does not have: {_listed(missing)}"
        )
    try:
        pipe.transformer.load_lora_adapter(
            dict(state_dict),
            prefix="transformer",
            adapter_name=adapter,
            metadata=lora.metadata,
            low_cpu_mem_usage=True,  # as the pipeline's own loader: no random init of what the file then sets
        )
    except Exception as exc:
        log.warning("LoRA file %s does not fit the model", lora.path, exc_info=True)
        reason = str(exc).replace(str(lora.path), lora.path.name)
        raise LoraLoadError(
            f"LoRA file {lora.path.name} does not fit this model: {type(exc).__name__}: {reason}"
        ) from exc
    attached = _lora_module_count(pipe.transformer, adapter)
    expected = len(lora.modules) - len(missing)
    if attached != expected:
        raise LoraLoadError(f"LoRA file {lora.path.name} attached to {attached} of its {expected} modules")
    return note


def _unmatched_modules(
    transformer: Any, modules: dict[str, tuple[int, int, int]]
) -> tuple[list[str], list[str]]:
    missing, mismatched = [], []
    for module, (_rank, in_features, out_features) in modules.items():
        try:
            layer = transformer.get_submodule(module)
        except AttributeError:
            missing.append(module)
            continue
        base = getattr(layer, "base_layer", layer)  # a layer holding another adapter already
        shape = (getattr(base, "in_features", None), getattr(base, "out_features", None))
        if shape != (in_features, out_features):
            mismatched.append(f"{module} (file {in_features}->{out_features}, model {shape[0]}->{shape[1]})")
    return missing, mismatched


def _lora_module_count(transformer: Any, adapter: str) -> int:
    return sum(1 for module in transformer.modules() if adapter in getattr(module, "lora_A", {}))


def _listed(names: list[str]) -> str:
    more = len(names) - _LISTED
    return ", ".join(names[:_LISTED]) + (f" and {more} more" if more > 0 else "")
