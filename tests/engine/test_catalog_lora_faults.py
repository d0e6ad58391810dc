"""A catalog model's own LoRA that cannot be used when a job runs is the server's fault (`lora_load_error`),
never the request's input (`invalid_input`), and is named by its label, never its URL or path; two
references of one job to the same file are refused naming the later one. LoRA files are checked against a
small made-up layer map; a URL is served by a local HTTP server that answers 404."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from reangle.core.lora_refs import LoraRef
from reangle.engine.lora_sources import LoraSources, LoraSourcesConfig
from reangle.errors import InvalidInput, LoraLoadError
from reangle.store.url_fetch import FetchPolicy
from tests.conftest import serving
from tests.engine.lora_support import write_lora

#: The model's LoRA-able layers, and a LoRA's for a model that has none of them.
LAYERS = {"blocks.0.attn.to_q": (8, 8), "blocks.1.mlp": (8, 16)}
ALIEN_LAYERS = {"unet.down.0.proj": (8, 8)}


class _NotFound(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def missing_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    with serving(server, lambda: None):
        yield f"http://127.0.0.1:{server.server_address[1]}/private/house.safetensors?sig=s3cr3t"


@pytest.fixture
def sources(tmp_path: Path) -> LoraSources:
    policy = FetchPolicy(allow_private=True, timeout_s=10.0, max_bytes=64 * 1024)
    config = LoraSourcesConfig(
        cache_dir=tmp_path / "cache",
        max_cache_bytes=1024 * 1024,
        fetch=policy,
        allowed_dir=tmp_path / "loras",
    )
    return LoraSources(config)


def catalog_ref(kind: str, value: str, index: int = 0) -> LoraRef:
    """A LoRA as the catalog parser makes it for model `shop`."""
    field = f"catalog.shop.loras.{index}.{kind}"
    return LoraRef(kind=kind, value=value, field=field, label=f"loras[{index}] of shop", from_catalog=True)  # type: ignore[arg-type]


def resolve_all(sources: LoraSources, refs: list[LoraRef]) -> None:
    async def run() -> None:
        async with sources.resolved(refs, LAYERS):
            pass

    asyncio.run(run())


def test_a_catalog_lora_that_is_no_lora_for_the_model_is_the_server_s_fault(
    tmp_path: Path, sources: LoraSources
) -> None:
    write_lora(tmp_path / "loras" / "site" / "alien.safetensors", ALIEN_LAYERS)
    with pytest.raises(LoraLoadError) as caught:
        resolve_all(sources, [catalog_ref("path", "site/alien.safetensors")])
    assert caught.value.code == "lora_load_error"
    assert caught.value.message.startswith("catalog.shop.loras.0.path: the model's LoRA 'loras[0] of shop'")
    assert "alien" not in caught.value.message
    assert str(tmp_path) not in caught.value.message
    assert "operator" in (caught.value.hint or "")
    # the same file given by a request stays the request's input
    with pytest.raises(InvalidInput):
        resolve_all(
            sources, [LoraRef(kind="path", value="site/alien.safetensors", field="input.loras.0.path")]
        )


def test_a_catalog_lora_url_that_answers_404_is_the_server_s_fault(
    sources: LoraSources, missing_url: str
) -> None:
    with pytest.raises(LoraLoadError) as caught:
        resolve_all(sources, [catalog_ref("url", missing_url)])
    assert caught.value.message == (
        "catalog.shop.loras.0.url: the model's LoRA 'loras[0] of shop' could not be fetched (unreachable)"
    )
    for secret in ("127.0.0.1", "/private/", "s3cr3t"):
        assert secret not in caught.value.message


def test_two_catalog_loras_that_are_one_file_are_the_server_s_fault(
    tmp_path: Path, sources: LoraSources
) -> None:
    first = write_lora(tmp_path / "loras" / "style.safetensors", LAYERS)
    shutil.copy(first, tmp_path / "loras" / "style-copy.safetensors")
    refs = [catalog_ref("path", "style.safetensors"), catalog_ref("path", "style-copy.safetensors", index=1)]
    with pytest.raises(LoraLoadError) as caught:
        resolve_all(sources, refs)
    assert caught.value.message == (
        "catalog.shop.loras.1.path: the model's LoRA 'loras[1] of shop' is the same file as the model's LoRA "
        "'loras[0] of shop'; give it once"
    )


def test_a_request_lora_that_is_the_model_s_own_file_is_refused_naming_its_field(
    tmp_path: Path, sources: LoraSources
) -> None:
    write_lora(tmp_path / "loras" / "style.safetensors", LAYERS)
    shutil.copy(tmp_path / "loras" / "style.safetensors", tmp_path / "loras" / "mine.safetensors")
    refs = [
        catalog_ref("path", "style.safetensors"),
        LoraRef(kind="path", value="mine.safetensors", field="input.loras.0.path"),
    ]
    with pytest.raises(InvalidInput) as caught:
        resolve_all(sources, refs)
    assert caught.value.code == "invalid_input"
    assert caught.value.field == "input.loras.0.path"
    assert caught.value.message == (
        "input.loras.0.path: the LoRA path 'mine.safetensors' is the same file as the model's LoRA "
        "'loras[0] of shop'; give it once"
    )
