"""A request's own LoRAs are checked at submit against what the server runs: a `path` needs a folder of local
LoRAs, an `id` must be registered. A real JobService on a temporary SQLite store; `LoraRef.shown` names a
LoRA as users may see it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from reangle.core.edit import SizeLimits
from reangle.core.lora_refs import LoraRef, LoraRules, without_query
from reangle.core.models import INSTRUCTION_EDIT
from reangle.core.service import JobService, ServiceLimits, SubmitRequest
from reangle.errors import InvalidInput
from reangle.store.sqlite import SqliteStore
from tests.conftest import image_bytes, job_service, make_image

OWNER = "owner-1"


def service_with(tmp_path: Path, store: SqliteStore, rules: LoraRules | None) -> JobService:
    return job_service(store, tmp_path, ServiceLimits(sizes=SizeLimits(min_side=16), loras=rules))


def submit(service: JobService, loras: list[dict[str, Any]]) -> None:
    image = service.assets.ingest(OWNER, image_bytes(make_image(32, 32), "PNG"))
    data = {"images": [image.id], "prompt": "add snow", "width": 32, "height": 32, "loras": loras}
    asyncio.run(service.submit(OWNER, SubmitRequest(model=INSTRUCTION_EDIT, input=data)))


def test_a_path_is_refused_at_submit_without_a_folder_of_local_loras(
    tmp_path: Path, store: SqliteStore
) -> None:
    service = service_with(tmp_path, store, LoraRules.of({"house"}, paths_allowed=False))
    refused = r"input\.loras\.1\.path: local LoRA paths are not accepted"
    with pytest.raises(InvalidInput, match=refused) as caught:
        submit(service, [{"id": "house"}, {"path": "style.safetensors"}])
    assert caught.value.field == "input.loras.1.path"
    assert service.queue_depth() == 0


@pytest.mark.parametrize(
    ("registered", "listed"),
    [
        ({"house", "brand"}, "the registered ids are brand, house"),
        (set(), "this server registers no LoRA ids"),
    ],
)
def test_an_unregistered_id_is_refused_at_submit_listing_the_known_ones(
    tmp_path: Path, store: SqliteStore, registered: set[str], listed: str
) -> None:
    service = service_with(tmp_path, store, LoraRules.of(registered, paths_allowed=True))
    with pytest.raises(InvalidInput, match=f"input.loras.0.id: unknown LoRA id 'nope'; {listed}") as caught:
        submit(service, [{"id": "nope"}])
    assert caught.value.field == "input.loras.0.id"
    assert service.queue_depth() == 0


def test_what_the_server_takes_is_queued(tmp_path: Path, store: SqliteStore) -> None:
    service = service_with(tmp_path, store, LoraRules.of({"house"}, paths_allowed=True))
    submit(
        service,
        [
            {"id": "house"},
            {"path": "style.safetensors"},
            {"path": "styles/../poster.safetensors"},  # stays in the folder
            {"url": "https://example.com/a.safetensors"},
        ],
    )
    assert service.queue_depth() == 1


@pytest.mark.parametrize("rules", [LoraRules.of(set(), paths_allowed=True), None])
@pytest.mark.parametrize(
    ("path", "said"),
    [
        ("../keys.safetensors", "is outside the folder of local LoRAs"),
        ("styles/../../keys.safetensors", "is outside the folder of local LoRAs"),
        ("/etc/passwd", "is outside the folder of local LoRAs"),
        ("notes.txt", "is not a .safetensors file"),
    ],
)
def test_a_path_that_says_by_itself_it_cannot_be_read_is_refused_at_submit(
    tmp_path: Path, store: SqliteStore, rules: LoraRules | None, path: str, said: str
) -> None:
    """Whatever the folder holds (so on a scale-out API replica too, which has no rules)."""
    service = service_with(tmp_path, store, rules)
    with pytest.raises(InvalidInput, match=f"input.loras.0.path {path!r} {said}") as caught:
        submit(service, [{"path": path}])
    assert caught.value.field == "input.loras.0.path"
    assert service.queue_depth() == 0


def test_without_rules_the_service_leaves_the_check_to_the_runner(tmp_path: Path, store: SqliteStore) -> None:
    """A scale-out API replica: the workers' settings decide when the job runs."""
    service = service_with(tmp_path, store, None)
    submit(service, [{"id": "nope"}, {"path": "style.safetensors"}])
    assert service.queue_depth() == 1


def test_private_loras_are_shown_by_id_or_label_and_a_url_without_its_query() -> None:
    signed = "https://user:pw@bucket.example.com/loras/a.safetensors?X-Amz-Signature=secret#frag"
    assert LoraRef(kind="url", value=signed, field="f").shown == (
        "the LoRA url 'https://bucket.example.com/loras/a.safetensors'"
    )
    catalog = LoraRef(kind="url", value=signed, field="f", label="House style")
    assert (catalog.private, catalog.shown) == (True, "the model's LoRA 'House style'")
    registered = LoraRef(kind="id", value="house", field="f")
    assert (registered.private, registered.shown) == (True, "the LoRA id 'house'")
    assert not LoraRef(kind="path", value="a.safetensors", field="f").private
    assert without_query("https://example.com/a.safetensors") == "https://example.com/a.safetensors"
