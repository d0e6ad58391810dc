"""A request that names the same LoRA twice is refused at submit, naming the later field: the job would fail
loading one file twice. A real JobService on a temporary SQLite store."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from reangle.core.edit import SizeLimits
from reangle.core.lora_refs import LoraRef, LoraRules, check_each_once
from reangle.core.models import INSTRUCTION_EDIT
from reangle.core.service import JobService, ServiceLimits, SubmitRequest
from reangle.errors import InvalidInput
from reangle.store.sqlite import SqliteStore
from tests.conftest import image_bytes, job_service, make_image

OWNER = "owner-1"
URL = "https://example.com/loras/style.safetensors"


def embedded_service(tmp_path: Path, store: SqliteStore) -> JobService:
    rules = LoraRules.of({"house"}, paths_allowed=True)
    return job_service(store, tmp_path, ServiceLimits(sizes=SizeLimits(min_side=16), loras=rules))


def submit(service: JobService, loras: list[dict[str, Any]]) -> None:
    image = service.assets.ingest(OWNER, image_bytes(make_image(32, 32), "PNG"))
    data = {"images": [image.id], "prompt": "add snow", "width": 32, "height": 32, "loras": loras}
    asyncio.run(service.submit(OWNER, SubmitRequest(model=INSTRUCTION_EDIT, input=data)))


@pytest.mark.parametrize(
    ("loras", "field", "earlier"),
    [
        ([{"url": URL}, {"url": URL}], "input.loras.1.url", "input.loras.0.url"),
        # as the refs read it: trimmed; a strength of its own does not make it another LoRA
        (
            [{"id": "house"}, {"url": URL}, {"url": f" {URL} ", "scale": 0.5}],
            "input.loras.2.url",
            "input.loras.1.url",
        ),
        (
            [{"path": "a.safetensors"}, {"id": "house"}, {"path": "a.safetensors"}],
            "input.loras.2.path",
            "input.loras.0.path",
        ),
    ],
)
def test_the_same_lora_twice_is_refused_at_submit_naming_the_later_field(
    tmp_path: Path, store: SqliteStore, loras: list[dict[str, Any]], field: str, earlier: str
) -> None:
    service = embedded_service(tmp_path, store)
    with pytest.raises(InvalidInput) as caught:
        submit(service, loras)
    assert caught.value.field == field
    assert caught.value.message == f"{field}: the same LoRA as {earlier}; give each LoRA once"
    assert service.queue_depth() == 0


def test_different_loras_are_taken(tmp_path: Path, store: SqliteStore) -> None:
    service = embedded_service(tmp_path, store)
    other = URL.replace("style", "other")
    submit(service, [{"url": URL}, {"url": other}, {"path": "house.safetensors"}, {"id": "house"}])
    assert service.queue_depth() == 1


def test_check_each_once_reads_the_refs_as_given() -> None:
    first = LoraRef(kind="url", value=URL, field="lora_1_url")
    check_each_once([first, LoraRef(kind="path", value=URL, field="lora_2_path")])
    with pytest.raises(InvalidInput) as caught:
        check_each_once([first, LoraRef(kind="url", value=URL, scale=2.0, field="lora_2_url")])
    assert caught.value.message == "lora_2_url: the same LoRA as lora_1_url; give each LoRA once"


def test_an_api_replica_without_lora_rules_refuses_them_too(tmp_path: Path, store: SqliteStore) -> None:
    replica = job_service(store, tmp_path, ServiceLimits(sizes=SizeLimits(min_side=16)))
    with pytest.raises(InvalidInput, match=r"input\.loras\.1\.url: the same LoRA as input\.loras\.0\.url"):
        submit(replica, [{"url": URL}, {"url": URL}])


def test_a_lora_kind_the_server_refuses_is_said_before_a_repeat_of_it(
    tmp_path: Path, store: SqliteStore
) -> None:
    no_paths = job_service(
        store,
        tmp_path,
        ServiceLimits(sizes=SizeLimits(min_side=16), loras=LoraRules.of({}, paths_allowed=False)),
    )
    with pytest.raises(InvalidInput, match=r"input\.loras\.0\.path: local LoRA paths are not accepted"):
        submit(no_paths, [{"path": "a.safetensors"}, {"path": "a.safetensors"}])
