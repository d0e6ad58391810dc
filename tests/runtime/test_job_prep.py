"""A job made ready for the engine: the rewriter sees only the user's words and the job's own images, the
model's prompt template wraps the result, the model's and the request's LoRAs become checked files, and
text-to-image jobs become generation requests. A real JobService on a temporary SQLite store."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from reangle.catalog import load_catalog
from reangle.core.edit import EditRequest, GenerateRequest, SizeLimits
from reangle.core.jobs import Job, JobStatus
from reangle.core.models import CAMERA_EDIT, INSTRUCTION_EDIT, TASK_INPUTS, TEXT_TO_IMAGE, install_catalog
from reangle.core.service import JobService, ServiceLimits, SubmitRequest, plan_request
from reangle.engine.base import StopCheck
from reangle.engine.fake import FakeEngine, qwen_image_layer_names
from reangle.engine.lora_sources import LoraSources, LoraSourcesConfig
from reangle.engine.rewriter import Rewrite, RewriteTask
from reangle.errors import InvalidInput
from reangle.runtime.job_prep import JobPreparer
from reangle.runtime.local import LocalRunner
from reangle.settings import Settings
from reangle.store.sqlite import SqliteStore
from reangle.store.url_fetch import FetchPolicy
from tests.conftest import image_bytes, job_service, make_image
from tests.engine.lora_support import write_lora

OWNER = "owner-1"
LIMITS = SizeLimits(min_side=16)


class FakeRecordingRewriter:
    """Rewrites to `<words> in detail` and remembers what it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[tuple[int, int]]]] = []
        self.tasks: list[RewriteTask] = []

    def rewrite(
        self,
        instruction: str,
        images: Sequence[Image.Image],
        *,
        task: RewriteTask = "edit",
        should_stop: StopCheck | None = None,
    ) -> Rewrite:
        self.calls.append((instruction, [image.size for image in images]))
        self.tasks.append(task)
        return Rewrite(original=instruction, prompt=f"{instruction} in detail", rewritten=True, seconds=0.01)


class FakeFailingRewriter:
    """A rewriter of another make that raises, its message holding a server path."""

    def rewrite(
        self,
        instruction: str,
        images: Sequence[Image.Image],
        *,
        task: RewriteTask = "edit",
        should_stop: StopCheck | None = None,
    ) -> Rewrite:
        raise RuntimeError("cannot read /srv/models/secret-rewriter/config.json")


@pytest.fixture
def service(tmp_path: Path, store: SqliteStore) -> JobService:
    return job_service(store, tmp_path, ServiceLimits(sizes=LIMITS))


@pytest.fixture
def lora_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "loras"
    write_lora(folder / "style.safetensors", {"transformer_blocks.0.attn.to_q": (16, 16)}, seed=1)
    write_lora(folder / "product.safetensors", {"transformer_blocks.1.attn.to_k": (16, 16)}, seed=2)
    return folder


@pytest.fixture
def loras(tmp_path: Path, lora_dir: Path) -> LoraSources:
    return LoraSources(LoraSourcesConfig(cache_dir=tmp_path / "lora-cache", allowed_dir=lora_dir))


@pytest.fixture
def operator_catalog(tmp_path: Path, lora_dir: Path) -> Iterator[None]:
    """A custom model on the instruction edit: a prompt template and a LoRA of its own."""
    path = tmp_path / "models.toml"
    path.write_text(
        """
[[model]]
id = "product-shot"
description = "product photos in the house style"
task = "instruction_edit"
engine = "qwen-edit"
base = "Qwen/Qwen-Image-Edit-2511"
prompt_template = "{prompt}, studio product photo"
loras = [{ path = "product.safetensors", scale = 0.7 }]
"""
    )
    install_catalog(load_catalog(path, inputs=TASK_INPUTS), {"lora_dir": str(lora_dir)})
    yield
    install_catalog(load_catalog(inputs=TASK_INPUTS), {})


async def submit(service: JobService, model: str, **fields: Any) -> Job:
    image = service.assets.ingest(OWNER, image_bytes(make_image(40, 24), "PNG"))
    data = {"width": 32, "height": 32, **fields}
    if model != TEXT_TO_IMAGE:
        data["images"] = [image.id]
    return await service.submit(OWNER, SubmitRequest(model=model, input=data))


def test_the_rewriter_sees_the_words_and_images_never_the_camera_phrase(service: JobService) -> None:
    rewriter = FakeRecordingRewriter()
    preparer = JobPreparer(service, rewriter=rewriter)

    async def scenario() -> None:
        job = await submit(service, CAMERA_EDIT, prompt="add snow", azimuth=90, rewrite_prompt=True)
        async with preparer.prepared(job) as prepared:
            assert rewriter.calls == [("add snow", [(40, 24)])]
            assert prepared.rewrite is not None
            assert prepared.rewrite.original == "add snow"
            (request,) = prepared.requests
            assert isinstance(request, EditRequest)
            plan = plan_request(request, [(40, 24)], limits=LIMITS, target_area=1024)
            assert plan.prompt == "<sks> right side view eye-level shot medium shot add snow in detail"
        generation = await submit(service, TEXT_TO_IMAGE, prompt="a lighthouse", rewrite_prompt=True)
        async with preparer.prepared(generation) as prepared:
            assert [request.prompt for request in prepared.requests] == ["a lighthouse in detail"]
        assert rewriter.tasks == ["edit", "generate"]  # a new picture is described, not edited

    asyncio.run(scenario())


def test_without_asking_nothing_is_rewritten_and_empty_words_are_skipped(service: JobService) -> None:
    rewriter = FakeRecordingRewriter()
    preparer = JobPreparer(service, rewriter=rewriter)

    async def scenario() -> None:
        plain = await submit(service, INSTRUCTION_EDIT, prompt="add snow")
        async with preparer.prepared(plain) as prepared:
            assert prepared.rewrite is None
            assert [request.prompt for request in prepared.requests] == ["add snow"]
        wordless = await submit(service, CAMERA_EDIT, azimuth=180, rewrite_prompt=True)
        async with preparer.prepared(wordless) as prepared:
            assert prepared.rewrite is not None
            assert (prepared.rewrite.rewritten, prepared.rewrite.reason) == (False, "skipped")
        assert rewriter.calls == []

    asyncio.run(scenario())


def test_a_server_without_a_rewriter_keeps_the_prompt_and_says_why(service: JobService) -> None:
    async def scenario() -> None:
        job = await submit(service, INSTRUCTION_EDIT, prompt="add snow", rewrite_prompt=True)
        async with JobPreparer(service).prepared(job) as prepared:
            assert prepared.rewrite is not None
            assert prepared.rewrite.prompt == "add snow"
            assert prepared.rewrite.reason == "skipped"
            assert "REANGLE_REWRITER_MODEL=off" in (prepared.rewrite.detail or "")

    asyncio.run(scenario())


def test_a_models_template_wraps_the_rewritten_words_and_its_lora_comes_first(
    service: JobService, loras: LoraSources, lora_dir: Path, operator_catalog: None
) -> None:
    preparer = JobPreparer(
        service, rewriter=FakeRecordingRewriter(), loras=loras, layers=lambda _t2i: qwen_image_layer_names()
    )

    async def scenario() -> None:
        job = await submit(
            service,
            "product-shot",
            prompt="a red mug",
            rewrite_prompt=True,
            loras=[{"path": "style.safetensors", "scale": 1.5}],
        )
        async with preparer.prepared(job) as prepared:
            (request,) = prepared.requests
            assert request.prompt == "a red mug in detail, studio product photo"
            assert [(use.weight, use.path) for use in request.extra_loras] == [
                (0.7, (lora_dir / "product.safetensors").resolve()),
                (1.5, (lora_dir / "style.safetensors").resolve()),
            ]
            assert [use.adapter for use in request.extra_loras] == [lora.adapter for lora in prepared.loras]
            assert all(use.adapter.startswith("lora_") for use in request.extra_loras)

    asyncio.run(scenario())


def test_a_rewrite_that_the_template_would_take_past_the_limit_falls_back_to_the_words(
    service: JobService, loras: LoraSources, operator_catalog: None
) -> None:
    preparer = JobPreparer(
        service, rewriter=FakeRecordingRewriter(), loras=loras, layers=lambda _t2i: qwen_image_layer_names()
    )
    words = "w" * 1975  # 1,997 characters in the template; the rewrite's 1,985 would become 2,007

    async def scenario() -> None:
        job = await submit(service, "product-shot", prompt=words, rewrite_prompt=True)
        async with preparer.prepared(job) as prepared:
            (request,) = prepared.requests
            assert request.prompt == f"{words}, studio product photo"
            rewrite = prepared.rewrite
            assert rewrite is not None
            assert (rewrite.rewritten, rewrite.reason, rewrite.prompt) == (False, "overlong", words)
            assert rewrite.detail == (
                "the rewritten prompt's 1,985 characters become 2,007 in model product-shot's prompt "
                "template, 7 more than the model's limit of 2,000"
            )
            assert rewrite.seconds == 0.01  # the rewriter's time was spent all the same
        with pytest.raises(InvalidInput, match=r"input\.prompt: 1,979 characters become 2,001") as caught:
            await submit(service, "product-shot", prompt="w" * 1979)
        assert caught.value.field == "input.prompt"

    asyncio.run(scenario())


def test_a_request_lora_outside_the_folder_or_unknown_is_refused_naming_its_field(
    service: JobService, loras: LoraSources, lora_dir: Path, tmp_path: Path
) -> None:
    """A link out of the folder shows only where the job runs (a path with `..` is refused at submit)."""
    preparer = JobPreparer(service, loras=loras, layers=lambda _t2i: qwen_image_layer_names())
    (tmp_path / "outside.safetensors").write_bytes(b"not the operator's to share")
    (lora_dir / "link.safetensors").symlink_to(tmp_path / "outside.safetensors")

    async def scenario() -> None:
        escaping = await submit(service, INSTRUCTION_EDIT, prompt="x", loras=[{"path": "link.safetensors"}])
        with pytest.raises(InvalidInput) as caught:
            async with preparer.prepared(escaping):
                pass
        assert caught.value.field == "input.loras.0.path"
        assert "'link.safetensors' is outside the folder of local LoRAs" in caught.value.message
        unknown = await submit(service, INSTRUCTION_EDIT, prompt="x", loras=[{"id": "nope"}])
        with pytest.raises(InvalidInput) as caught:
            async with preparer.prepared(unknown):
                pass
        assert "unknown LoRA id 'nope'" in caught.value.message

    asyncio.run(scenario())


def test_text_to_image_sets_share_one_seed_and_add_their_shots(service: JobService) -> None:
    async def scenario() -> None:
        job = await submit(service, TEXT_TO_IMAGE, prompt="a lighthouse.", image_set=True, num_outputs=3)
        async with JobPreparer(service).prepared(job) as prepared:
            assert prepared.generates
            assert prepared.images == []
            requests = prepared.requests
            assert all(isinstance(request, GenerateRequest) for request in requests)
            assert [request.prompt for request in requests] == [
                "a lighthouse. wide establishing shot",
                "a lighthouse. medium shot",
                "a lighthouse. close-up on the main subject",
            ]
            assert len({request.seed for request in requests}) == 1
            assert requests[0].seed is not None
        seeded = await submit(
            service,
            TEXT_TO_IMAGE,
            prompt="a lighthouse",
            image_set=True,
            set_prompts=["at dawn", "at night"],
            seed=9,
        )
        async with JobPreparer(service).prepared(seeded) as prepared:
            assert [(request.prompt, request.seed) for request in prepared.requests] == [
                ("a lighthouse. at dawn", 9),
                ("a lighthouse. at night", 9),
            ]

    asyncio.run(scenario())


def test_a_lora_host_that_does_not_answer_fails_its_job_and_the_queue_goes_on(
    tmp_path: Path, service: JobService
) -> None:
    with socket.socket() as probe:  # a port nothing listens on: the connection is refused
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/style.safetensors"
    fetch = FetchPolicy(allow_private=True, timeout_s=5)
    loras = LoraSources(LoraSourcesConfig(cache_dir=tmp_path / "lora-cache", fetch=fetch))
    preparer = JobPreparer(service, loras=loras, layers=lambda _t2i: qwen_image_layer_names())
    runner = LocalRunner(service, FakeEngine(Settings(fake_step_seconds=0)), preparer=preparer)

    async def scenario() -> None:
        stuck = await submit(service, INSTRUCTION_EDIT, prompt="x", loras=[{"url": url}])
        behind = await submit(service, INSTRUCTION_EDIT, prompt="y")
        task = asyncio.create_task(runner.run_forever(0.01))
        try:
            done = await service.wait(OWNER, behind.id, timeout=15)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert done.status == JobStatus.SUCCEEDED
        failed = service.get(OWNER, stuck.id)
        assert failed.status == JobStatus.FAILED
        assert failed.error is not None
        assert failed.error.code == "source_unavailable"
        assert "style.safetensors" in failed.error.message
        assert failed.attempt == 1  # failed at once, not handed back again and again

    asyncio.run(scenario())


def test_a_rewriter_that_raises_keeps_the_words_and_records_only_the_kind_of_error(
    service: JobService,
) -> None:
    async def scenario() -> None:
        job = await submit(service, INSTRUCTION_EDIT, prompt="add snow", rewrite_prompt=True)
        async with JobPreparer(service, rewriter=FakeFailingRewriter()).prepared(job) as prepared:
            assert [request.prompt for request in prepared.requests] == ["add snow"]
            assert prepared.rewrite is not None
            assert (prepared.rewrite.reason, prepared.rewrite.detail) == (
                "error",
                "rewriter failed: RuntimeError",
            )

    asyncio.run(scenario())
