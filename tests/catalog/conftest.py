"""Catalog files written from Python values, and small input classes shaped like reangle's own."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, field_validator

#: A valid operator entry: a product-photo LoRA on the instruction edit.
PRODUCT_PHOTO: dict[str, Any] = {
    "id": "product-photo",
    "description": "Qwen-Image-Edit-2511 + a product-photo LoRA: clean studio packshots",
    "task": "instruction_edit",
    "engine": "qwen-edit",
    "base": "Qwen/Qwen-Image-Edit-2511",
    "loras": [{"url": "https://example.com/loras/product-photo.safetensors", "scale": 0.8}],
}


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string for everything these tests write
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{key} = {toml_value(item)}" for key, item in value.items()) + " }"
    if isinstance(value, Sequence):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(value)


def toml_models(entries: Sequence[Mapping[str, object]]) -> str:
    tables = [
        "[[model]]\n" + "".join(f"{key} = {toml_value(value)}\n" for key, value in entry.items())
        for entry in entries
    ]
    return "\n".join(tables)


WriteCatalog = Callable[..., Path]


@pytest.fixture
def write_catalog(tmp_path: Path) -> WriteCatalog:
    """Write an operator file from entries (dicts) or from raw TOML text; returns its path."""

    def write(*entries: Mapping[str, object], text: str | None = None) -> Path:
        path = tmp_path / "models.toml"
        path.write_text(text if text is not None else toml_models(entries), encoding="utf-8")
        return path

    return write


class EditIn(BaseModel):
    """Edit 1-3 images by instruction."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    images: list[str] = Field(min_length=1, max_length=3)
    prompt: str = Field(min_length=1, max_length=200, description="what to change")
    num_outputs: int = Field(default=1, description="1..4")
    output_format: Literal["png", "jpeg", "webp"] = "png"


class CameraIn(BaseModel):
    """Re-photograph an image from a pose."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    images: list[str] = Field(min_length=1, max_length=3)
    prompt: str = ""
    zoom: float | None = Field(default=None, description="0..10")
    lora_scale: float = Field(default=1.0, ge=0, le=4, description="weight of the angles LoRA")
    num_outputs: int = 1

    @field_validator("num_outputs")
    @classmethod
    def _at_most_four(cls, value: int) -> int:
        if value > 4:
            raise ValueError("at most 4 outputs")
        return value


class OrbitIn(BaseModel):
    """One image from several poses."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str
    azimuths: list[float] = Field(default=[0, 90, 180, 270], min_length=1, max_length=16)
    lora_scale: float = Field(default=1.0, ge=0, le=4)


class TextIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = Field(min_length=1)
    size: str | None = None
    num_outputs: int = 1


class WanIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = Field(min_length=1)
    images: list[str] = Field(default_factory=list, max_length=9)
    thinking_mode: bool = True


INPUTS: dict[str, dict[str, type[BaseModel]]] = {
    "camera_edit": {"edit": CameraIn, "orbit": OrbitIn},
    "instruction_edit": {"edit": EditIn},
    "text_to_image": {"edit": TextIn},
    "image_edit_or_generate": {"edit": WanIn},
}
