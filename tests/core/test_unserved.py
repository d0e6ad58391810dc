"""Queued jobs of a model the server no longer serves are failed at the embedded server's start, saying which
model; the jobs of the models it serves stay queued. A real JobService on a temporary SQLite store."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from reangle.catalog import load_catalog
from reangle.core.jobs import Job, JobStatus, WebhookTarget
from reangle.core.models import INSTRUCTION_EDIT, MODELS, TASK_INPUTS, install_catalog
from reangle.core.service import JobService, SubmitRequest
from reangle.store.sqlite import SqliteStore
from tests.conftest import image_bytes, job_service, make_image

OWNER = "owner-1"
RETIRED = "retired-style"


@pytest.fixture
def service(tmp_path: Path, store: SqliteStore) -> JobService:
    return job_service(store, tmp_path)


@pytest.fixture
def catalog_with_retired(tmp_path: Path) -> Iterator[None]:
    """The shipped models and an operator's model that the next start will no longer serve."""
    path = tmp_path / "models.toml"
    path.write_text(
        f"""
[[model]]
id = "{RETIRED}"
description = "a style the operator will retire"
task = "instruction_edit"
engine = "qwen-edit"
base = "Qwen/Qwen-Image-Edit-2511"
prompt_template = "{{prompt}}, in the old style"
"""
    )
    install_catalog(load_catalog(path, inputs=TASK_INPUTS), {})
    yield
    install_catalog(load_catalog(inputs=TASK_INPUTS), {})


def submit(service: JobService, model: str, webhook: WebhookTarget | None = None) -> Job:
    image = service.assets.ingest(OWNER, image_bytes(make_image(40, 24), "PNG"))
    data = {"images": [image.id], "prompt": "add snow"}
    return asyncio.run(service.submit(OWNER, SubmitRequest(model=model, input=data, webhook=webhook)))


def test_queued_jobs_of_a_model_no_longer_served_fail_naming_it(
    service: JobService, catalog_with_retired: None
) -> None:
    retired = [submit(service, RETIRED) for _ in range(2)]
    kept = submit(service, INSTRUCTION_EDIT)
    install_catalog(load_catalog(inputs=TASK_INPUTS), {})  # the next start: the operator's entry is gone
    assert RETIRED not in MODELS

    failed = service.fail_unserved(MODELS)

    assert sorted(job.id for job in failed) == sorted(job.id for job in retired)
    for job in retired:
        stored = service.get(OWNER, job.id)
        assert stored.status == JobStatus.FAILED
        assert stored.error is not None
        assert stored.error.code == "model_unavailable"
        assert f"model {RETIRED} is no longer served" in stored.error.message
        assert stored.outputs == ()
    assert service.get(OWNER, kept.id).status == JobStatus.QUEUED
    assert service.fail_unserved(MODELS) == []  # nothing left to fail


def test_a_job_no_longer_served_goes_from_queued_to_failed_announced_as_any_failure(
    service: JobService, store: SqliteStore, catalog_with_retired: None
) -> None:
    progress_hook = WebhookTarget(url="https://hooks.example.com/r", events=("progress",))
    job = submit(service, RETIRED, webhook=progress_hook)
    install_catalog(load_catalog(inputs=TASK_INPUTS), {})
    ended: list[Job] = []
    service.finished_hooks.append(ended.append)

    with service.events.subscribe(job.id) as events:
        [failed] = service.fail_unserved(MODELS)
        published = [events.get_nowait() for _ in range(events.qsize())]

    # it never ran: no processing in its history, no started_at, and no job.processing for its webhook
    assert [change.status for change in failed.history] == [JobStatus.QUEUED, JobStatus.FAILED]
    assert (failed.started_at, failed.finished_at) == (None, failed.history[-1].at)
    assert service.get(OWNER, job.id) == failed
    assert [delivery.type for delivery in store.webhook_deliveries(job.id)] == ["job.failed"]
    assert [(event.kind, event.job) for event in published] == [("status", failed)]
    assert ended == [failed]


def test_nothing_fails_while_every_queued_model_is_served(
    service: JobService, catalog_with_retired: None
) -> None:
    job = submit(service, RETIRED)
    assert service.fail_unserved(MODELS) == []
    assert service.get(OWNER, job.id).status == JobStatus.QUEUED


def test_a_job_that_ran_before_a_restart_is_not_said_to_have_never_run(
    service: JobService, catalog_with_retired: None
) -> None:
    ran = submit(service, RETIRED)
    waited = submit(service, RETIRED)
    claimed = asyncio.run(service.next_job(0.01, models=[RETIRED]))
    assert claimed is not None
    assert claimed.id == ran.id
    requeued, _ = service.recover()  # the restart: the job it ran goes back to the queue
    assert [job.id for job in requeued] == [ran.id]
    install_catalog(load_catalog(inputs=TASK_INPUTS), {})  # ...and its model is gone

    service.fail_unserved(MODELS)

    again, never = service.get(OWNER, ran.id), service.get(OWNER, waited.id)
    assert again.error is not None
    assert never.error is not None
    assert (again.error.code, never.error.code) == ("model_unavailable", "model_unavailable")
    assert "never ran" not in again.error.message
    assert "had started before a restart interrupted it" in again.error.message
    assert f"model {RETIRED} is no longer served" in again.error.message
    assert never.error.message.endswith("; the job never ran")
