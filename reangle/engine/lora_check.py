"""Check that a file is a LoRA for this model from its safetensors header alone, before any tensor is read.

A safetensors file starts with an 8-byte little-endian header length and a JSON header that gives each
tensor's dtype, shape and byte range; that is enough to know whether the file is whole, whether its keys
are LoRA pairs (diffusers/peft `lora_A`/`lora_B`, kohya `lora_down`/`lora_up`, with the `transformer.`,
`diffusion_model.`, `base_model.model.` or kohya `lora_unet_` prefixes and peft's `.default.` adapter names)
and which layers of the model they target, with which shapes. So a request's LoRA is refused in
milliseconds, before it is loaded on the GPU, with an `InvalidInput` naming the request field.

Partial matches: a file whose layers the model partly lacks is refused when `strict` (the default, as for
the model's own LoRAs: REANGLE_LORA_STRICT), because a LoRA for another model that shares some layer names
would run half-applied and look like a bad LoRA; with `strict=False` it is accepted and `LoraCheck.missing`
names what the loader must leave out. A file that matches no layer, or whose shapes differ from the
model's at any layer, is always refused.

No torch here: `model_layers` reads a module's `named_modules()` duck-typed.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Mapping, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reangle.errors import InvalidInput

#: The largest header read; safetensors' own reader stops at 100 MB. A LoRA over all 60 blocks of the
#: Qwen-Image transformer has a few thousand tensors, a header of a few hundred kB.
MAX_HEADER_BYTES = 16 * 1024 * 1024
#: Bytes per element of each safetensors dtype whose elements fill whole bytes.
DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
    "C64": 8,
}
FLOAT_DTYPES = frozenset({"F8_E4M3", "F8_E5M2", "F16", "BF16", "F32", "F64"})
#: A model's LoRA-able layers: module name -> (in features, out features), or None when only names are known.
ModelLayers = Mapping[str, tuple[int, int] | None]

_PREFIXES = ("transformer.", "diffusion_model.", "base_model.model.")
_KOHYA_PREFIX = "lora_unet_"
_PART = re.compile(
    r"(?P<module>.+?)\.(?P<part>lora_A|lora_B|lora_down|lora_up)(?:\.(?P<adapter>[\w-]+))?\.(?P<kind>weight|bias)"
)
_DORA = ("lora_magnitude_vector", "dora_scale")
#: peft's own sub-modules of a layer holding adapters, which are not layers of the model.
_PEFT_PARTS = frozenset(
    {"base_layer", "lora_A", "lora_B", "lora_dropout", "lora_embedding_A", "lora_embedding_B"}
)
_LISTED = 5


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class SafetensorsHeader:
    tensors: dict[str, TensorInfo]
    #: The `__metadata__` entry (text to text), empty when absent.
    metadata: dict[str, str]


@dataclass(frozen=True)
class LoraModule:
    rank: int
    in_features: int
    out_features: int


@dataclass(frozen=True)
class LoraCheck:
    """What a LoRA file targets in the model."""

    #: Model layer name -> the LoRA pair on it, for the layers the model has.
    modules: dict[str, LoraModule]
    #: Layers the file names that the model lacks (empty unless checked with strict=False).
    missing: tuple[str, ...]
    #: The most common rank of the file's pairs.
    rank: int


def model_layers(model: Any) -> dict[str, tuple[int, int]]:
    """The layers of `model` (a torch module) a LoRA can target: each module with integer `in_features` and
    `out_features`, named as in `named_modules()`; peft's own parts of a layer that holds adapters already
    (`base_layer`, `lora_A.<name>`, ...) are skipped, the layer itself kept."""
    layers = {}
    for name, module in model.named_modules():
        if _PEFT_PARTS.intersection(name.split(".")):
            continue
        in_features, out_features = (
            getattr(module, "in_features", None),
            getattr(module, "out_features", None),
        )
        if isinstance(in_features, int) and isinstance(out_features, int):
            layers[name] = (in_features, out_features)
    return layers


def check_lora_file(
    path: Path, layers: ModelLayers | Set[str], *, field: str, shown: str, strict: bool = True
) -> LoraCheck:
    """Check that `path` is a whole safetensors LoRA whose pairs fit `layers`; every refusal is an
    InvalidInput naming `field` and the file as `shown` (what the request named, not a server path)."""
    header = read_header(path, field=field, shown=shown)
    pairs = lora_pairs(header, field=field, shown=shown)
    return match_layers(pairs, layers, field=field, shown=shown, strict=strict)


def read_header(path: Path, *, field: str, shown: str) -> SafetensorsHeader:
    """The header of a whole safetensors file: every tensor's byte range checked against the file's size,
    no tensor data read."""

    def refuse(reason: str) -> InvalidInput:
        return InvalidInput(f"{field}: {shown} is not a safetensors file: {reason}", field=field)

    with path.open("rb") as handle:
        size = path.stat().st_size
        start = handle.read(8)
        if len(start) < 8:
            raise refuse(f"it has only {size} bytes")
        (length,) = struct.unpack("<Q", start)
        if length > MAX_HEADER_BYTES:
            raise refuse(f"its header would be {length} bytes (the limit is {MAX_HEADER_BYTES})")
        if 8 + length > size:
            raise refuse(f"it is truncated: its header needs {length} bytes, the file has {size - 8} after 8")
        raw = handle.read(length)
    try:
        parsed = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise refuse(f"its header is not JSON ({exc})") from None
    if not isinstance(parsed, dict):
        raise refuse("its header is not a JSON object")
    metadata = parsed.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise refuse("its __metadata__ is not a map of text to text")
    tensors, ranges = {}, []
    for name, entry in parsed.items():
        info, begin, end = _tensor_entry(name, entry, refuse)
        tensors[name] = info
        ranges.append((begin, end, name))
    data_bytes = size - 8 - length
    position = 0
    for begin, end, name in sorted(ranges):
        if begin != position:
            raise refuse(f"tensor {name} starts at byte {begin} of its data, not at {position}")
        position = end
    if position != data_bytes:
        state = "truncated" if position > data_bytes else "followed by stray bytes"
        raise refuse(f"it is {state}: its tensors need {position} bytes of data, the file has {data_bytes}")
    return SafetensorsHeader(tensors=tensors, metadata=metadata)


def _tensor_entry(name: str, entry: Any, refuse: Any) -> tuple[TensorInfo, int, int]:
    if not isinstance(entry, dict):
        raise refuse(f"the entry of tensor {name} is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
        raise refuse(f"tensor {name} has an unsupported dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise refuse(f"tensor {name} has an invalid shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise refuse(f"tensor {name} has invalid data offsets {offsets!r}")
    begin, end = offsets
    if end - begin != math.prod(shape) * DTYPE_BYTES[dtype]:
        raise refuse(f"tensor {name} has {end - begin} bytes for a {dtype} tensor of shape {shape}")
    return TensorInfo(dtype=dtype, shape=tuple(shape)), begin, end


@dataclass(frozen=True)
class _Pair:
    down: TensorInfo | None = None
    up: TensorInfo | None = None


def lora_pairs(header: SafetensorsHeader, *, field: str, shown: str) -> dict[str, LoraModule]:
    """Module name as the file spells it (prefixes stripped; kohya `lora_unet_` names keep their
    underscores) -> its LoRA pair, every key accounted for."""

    def refuse(reason: str, hint: str | None = None) -> InvalidInput:
        return InvalidInput(
            f"{field}: {shown} is not a LoRA reangle can load: {reason}", field=field, hint=hint
        )

    if not header.tensors:
        raise refuse("it holds no tensors")
    if any(marker in key for key in header.tensors for marker in _DORA):
        raise refuse("it is a DoRA; only plain LoRAs are supported")
    pairs: dict[str, _Pair] = {}
    unexpected = []
    for key, info in header.tensors.items():
        bare = _strip_prefix(key)
        match = _PART.fullmatch(bare)
        if bare.endswith(".alpha") and info.shape in ((), (1,)):
            continue  # kohya's scale: any value is fine
        if match is None or (match["kind"] == "bias" and match["part"] not in ("lora_B", "lora_up")):
            unexpected.append(key)
            continue
        module, is_down = match["module"], match["part"] in ("lora_A", "lora_down")
        if match["kind"] == "bias":
            continue  # lora_B's bias: its shape is checked by the loader
        if info.dtype not in FLOAT_DTYPES:
            raise refuse(f"tensor {key} is {info.dtype}, not a floating-point type")
        old = pairs.get(module, _Pair())
        pairs[module] = _Pair(down=info, up=old.up) if is_down else _Pair(down=old.down, up=info)
    if not pairs:
        raise refuse(
            f"none of its {len(header.tensors)} tensors is a lora_A/lora_B or lora_down/lora_up weight "
            f"(first: {_listed(sorted(header.tensors))})",
            hint="is it a full model or another kind of adapter rather than a LoRA?",
        )
    if unexpected:
        raise refuse(f"it has keys that are not LoRA weights: {_listed(sorted(unexpected))}")
    modules = {}
    for module, pair in sorted(pairs.items()):
        if pair.down is None or pair.up is None:
            down, up = "a down (lora_A, lora_down)", "an up (lora_B, lora_up)"
            has, lacks = (up, down) if pair.down is None else (down, up)
            raise refuse(f"{module} has {has} weight but not {lacks} weight")
        a, b = pair.down.shape, pair.up.shape
        if len(a) != 2 or len(b) != 2 or a[0] != b[1] or a[0] == 0:
            raise refuse(f"{module}: down {list(a)} and up {list(b)} are not a rank-r pair of matrices")
        modules[module] = LoraModule(rank=a[0], in_features=a[1], out_features=b[0])
    return modules


def _strip_prefix(key: str) -> str:
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            return key.removeprefix(prefix)
    return key


def match_layers(
    pairs: Mapping[str, LoraModule],
    layers: ModelLayers | Set[str],
    *,
    field: str,
    shown: str,
    strict: bool = True,
) -> LoraCheck:
    """Map the file's modules onto the model's `layers` (kohya `lora_unet_a_b_c` onto `a.b.c`) and check
    their shapes where `layers` gives them."""
    shapes: ModelLayers = layers if isinstance(layers, Mapping) else dict.fromkeys(layers)
    underscored = {name.replace(".", "_"): name for name in shapes}
    matched, missing, mismatched = {}, [], []
    for module, pair in pairs.items():
        name = (
            underscored.get(module.removeprefix(_KOHYA_PREFIX))
            if module.startswith(_KOHYA_PREFIX)
            else module
        )
        if name is None or name not in shapes:
            missing.append(module)
            continue
        shape = shapes[name]
        if shape is not None and shape != (pair.in_features, pair.out_features):
            mismatched.append(
                f"{name} (file {pair.in_features}->{pair.out_features}, model {shape[0]}->{shape[1]})"
            )
        matched[name] = pair
    hint = "is it a LoRA for this model (Qwen-Image-Edit / Qwen-Image)?"
    if not matched:
        raise InvalidInput(
            f"{field}: {shown} matches none of the model's layers (it names {_listed(sorted(missing))})",
            field=field,
            hint=hint,
        )
    if mismatched:
        raise InvalidInput(
            f"{field}: {shown} does not fit the model: shapes differ at {_listed(sorted(mismatched))}",
            field=field,
            hint=hint,
        )
    if missing and strict:
        raise InvalidInput(
            f"{field}: {shown} names {len(missing)} layers the model does not have: "
            f"{_listed(sorted(missing))}",
            field=field,
            hint=hint,
        )
    ranks = [pair.rank for pair in matched.values()]
    return LoraCheck(modules=matched, missing=tuple(sorted(missing)), rank=max(set(ranks), key=ranks.count))


def _listed(names: list[str]) -> str:
    more = len(names) - _LISTED
    return ", ".join(names[:_LISTED]) + (f" and {more} more" if more > 0 else "")
