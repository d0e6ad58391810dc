"""A model the settings cannot run is still listed, with what to set."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from pydantic import SecretStr

from reangle.catalog import availability, load_catalog
from reangle.catalog.model import ModelEntry, ModelLora
from reangle.core.lora_refs import LoraRef
from reangle.settings import Settings


def shipped(model_id: str) -> ModelEntry:
    entry = load_catalog().get(model_id)
    assert entry is not None
    return entry


def with_lora(kind: str, value: str) -> ModelEntry:
    ref = LoraRef(kind=kind, value=value, field="catalog.styled.loras.0." + kind)  # type: ignore[arg-type]
    return replace(shipped("qwen-image-edit-2511"), name="Styled", loras=(ModelLora(ref=ref),))


def test_the_local_models_need_nothing() -> None:
    for model_id in ("qwen-edit-multiangle-2511", "qwen-image-edit-2511", "qwen-image-2512"):
        assert availability(shipped(model_id), {}) is None


@pytest.mark.parametrize("key", [None, "", "  ", SecretStr("")])
def test_wan_needs_the_dashscope_key(key: object) -> None:
    assert availability(shipped("wan-2.7-image"), {"dashscope_api_key": key}) == (
        "set REANGLE_DASHSCOPE_API_KEY to run Wan 2.7 Image through Alibaba's DashScope API"
    )


@pytest.mark.parametrize("key", ["sk-123", SecretStr("sk-123")])
def test_wan_runs_with_the_key(key: object) -> None:
    assert availability(shipped("wan-2.7-image"), {"dashscope_api_key": key}) is None


def test_the_real_settings_can_be_given_as_they_dump() -> None:
    wan = shipped("wan-2.7-image")
    assert availability(wan, Settings().model_dump()) is not None
    assert availability(wan, Settings(dashscope_api_key="sk-1").model_dump()) is None


def test_every_missing_setting_is_named() -> None:
    entry = replace(shipped("wan-2.7-image"), requires=("dashscope_api_key", "lora_dir"))
    assert availability(entry, {}) == (
        "set REANGLE_DASHSCOPE_API_KEY and REANGLE_LORA_DIR to run Wan 2.7 Image "
        "through Alibaba's DashScope API"
    )


@pytest.mark.parametrize(
    ("kind", "value", "settings", "reason"),
    [
        ("url", "https://example.com/a.safetensors", {}, None),
        ("path", "styles/a.safetensors", {"lora_dir": "/loras"}, None),
        (
            "path",
            "styles/a.safetensors",
            {"lora_dir": None},
            "set REANGLE_LORA_DIR to the folder of its LoRAs to run Styled",  # the path is not shown
        ),
        ("id", "my-style", {"loras": {"my-style": "/loras/a.safetensors"}}, None),
        ("id", "my-style", {"loras": {}}, "register its LoRA id 'my-style' in REANGLE_LORAS to run Styled"),
        ("id", "my-style", {}, "register its LoRA id 'my-style' in REANGLE_LORAS to run Styled"),
    ],
)
def test_a_models_own_loras_need_their_settings(
    kind: str, value: str, settings: dict[str, Any], reason: str | None
) -> None:
    assert availability(with_lora(kind, value), settings) == reason


def test_text_to_image_is_off_when_its_model_setting_is_empty() -> None:
    qwen_image = shipped("qwen-image-2512")
    assert availability(qwen_image, Settings().model_dump()) is None
    assert availability(qwen_image, {}) is None  # absent: the setting's default, which runs it
    assert availability(qwen_image, Settings(text_to_image_model="").model_dump()) == (
        "REANGLE_TEXT_TO_IMAGE_MODEL is empty, which turns Qwen Image 2512 off on this server"
    )
