"""References to LoRAs a request or a catalog entry adds on top of a model's own: `{"url"}`, `{"path"}` or
`{"id"}` with a strength. Only their shape here: `reangle.engine.lora_sources` turns them into checked
files."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from reangle.errors import InvalidInput

RefKind = Literal["url", "path", "id"]
KINDS: tuple[RefKind, ...] = ("url", "path", "id")
#: How many LoRAs one request may add on top of the model's own.
MAX_LORAS = 4
#: The largest LoRA strength accepted, either way (negative strengths undo "slider" LoRAs).
MAX_SCALE = 4.0


@dataclass(frozen=True, kw_only=True)
class LoraRef:
    """One LoRA a request asks for: where it is and at what strength."""

    kind: RefKind
    value: str
    scale: float = 1.0
    #: The request field of `value`, as errors name it (`loras.0.url`, or Segmind's `lora_2_url`).
    field: str


def parse_lora_refs(value: object, *, field: str = "loras", max_count: int = MAX_LORAS) -> list[LoraRef]:
    """The native `loras` field: a list of `{"url" | "path" | "id": text, "scale": number}` objects."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidInput(f"{field} must be a list of LoRA objects", field=field)
    if len(value) > max_count:
        raise InvalidInput(f"{field} has {len(value)} LoRAs; at most {max_count} are accepted", field=field)
    refs = []
    for index, item in enumerate(value):
        where = f"{field}.{index}"
        if not isinstance(item, dict):
            raise InvalidInput(f'{where} must be an object like {{"url": ..., "scale": 1.0}}', field=where)
        kinds = [kind for kind in KINDS if kind in item]
        extra = sorted(str(key) for key in item if key not in (*KINDS, "scale"))
        if extra:
            raise InvalidInput(f"{where} has unknown keys {extra}", field=f"{where}.{extra[0]}")
        if len(kinds) != 1:
            raise InvalidInput(f"{where} must have exactly one of url, path or id", field=where)
        kind = kinds[0]
        text = item[kind]
        if not isinstance(text, str) or not text.strip() or "\x00" in text:
            raise InvalidInput(f"{where}.{kind} must be a non-empty text", field=f"{where}.{kind}")
        scale = item.get("scale", 1.0)
        refs.append(
            LoraRef(
                kind=kind,
                value=text.strip(),
                scale=checked_scale(scale, f"{where}.scale"),
                field=f"{where}.{kind}",
            )
        )
    return refs


def checked_scale(scale: object, field: str) -> float:
    """A LoRA strength: a finite number within +-MAX_SCALE."""
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale):
        raise InvalidInput(f"{field} must be a number", field=field)
    if abs(scale) > MAX_SCALE:
        raise InvalidInput(
            f"{field} must be between {-MAX_SCALE:g} and {MAX_SCALE:g}, not {scale}", field=field
        )
    return float(scale)
