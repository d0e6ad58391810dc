"""JobService edges a caller reads: a request's LoRA URLs checked at submit (under the URL rules of fetching),
the queue-full message, and Wan 2.7's limits in the native API's field names. A real JobService on a
temporary SQLite store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from reangle.api.lora_urls import lora_url_check
from reangle.core.jobs import Job, JobStatus
from reangle.core.models import CAMERA_EDIT, WanImageInput
from reangle.core.service import JobService, ServiceLimits, SubmitRequest
from reangle.errors import InvalidInput, QueueFull, Unavailable
from reangle.store.sqlite import SqliteStore
from reangle.store.url_fetch import FetchPolicy
from tests.conftest import image_bytes, job_service, make_image

OWNER = "owner-1"


@pytest.fixture
def service(tmp_path: Path, store: SqliteStore) -> JobService:
    return job_service(store, tmp_path)


def camera_input(service: JobService, **fields: Any) -> dict[str, Any]:
    image = service.assets.ingest(OWNER, image_bytes(make_image(40, 24), "PNG"))
    return {"images": [image.id], "horizontal_angle": 90} | fields


def submit(service: JobService, data: dict[str, Any], model: str = CAMERA_EDIT) -> Job:
    return asyncio.run(service.submit(OWNER, SubmitRequest(model=model, input=data)))


# LoRA URLs at submit ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://example.com/a.safetensors", "only http and https URLs are fetched"),
        ("http://127.0.0.1:8080/a.safetensors", "127.0.0.1 is a loopback address"),
        ("http://LOCALHOST./a.safetensors", "a loopback address"),
        ("http://192.168.1.5/a.safetensors", "a private address"),
        ("http://[fe80::1]/a.safetensors", "a link-local address"),
    ],
)
def test_a_lora_url_fetching_would_refuse_is_refused_at_submit(
    service: JobService, url: str, words: str
) -> None:
    service.check_url = lora_url_check(FetchPolicy())
    with pytest.raises(InvalidInput) as refused:
        submit(service, camera_input(service, loras=[{"url": url}]))
    assert refused.value.field == "input.loras.0.url"
    assert refused.value.message.startswith("input.loras.0.url")
    assert words in refused.value.message
    assert service.queue_depth() == 0


def test_with_private_urls_allowed_only_the_scheme_and_host_are_checked(service: JobService) -> None:
    service.check_url = lora_url_check(FetchPolicy(allow_private=True))
    job = submit(service, camera_input(service, loras=[{"url": "http://127.0.0.1:9/a.safetensors"}]))
    assert job.status == JobStatus.QUEUED
    with pytest.raises(InvalidInput) as refused:
        submit(service, camera_input(service, loras=[{"url": "file:///etc/passwd"}]))
    assert refused.value.message.startswith("input.loras.0.url is a file: URL")


def test_a_lora_host_name_is_not_looked_up_at_submit(service: JobService) -> None:
    """`.invalid` never resolves (RFC 6761): the download, not the submit, finds that out."""
    service.check_url = lora_url_check(FetchPolicy())
    job = submit(service, camera_input(service, loras=[{"url": "https://loras.invalid/a.safetensors"}]))
    assert job.status == JobStatus.QUEUED


def test_without_a_url_check_lora_urls_are_left_to_the_runner(service: JobService) -> None:
    """A service built without one (a test rig, a tool) queues as it always did; the runner still checks."""
    job = submit(service, camera_input(service, loras=[{"url": "ftp://example.com/a.safetensors"}]))
    assert job.status == JobStatus.QUEUED


# the queue-full message ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_queue", "held"), [(1, "the queue holds 1 job;"), (2, "the queue holds 2 jobs;")]
)
def test_the_queue_full_message_counts_jobs_in_good_english(
    tmp_path: Path, store: SqliteStore, max_queue: int, held: str
) -> None:
    service = job_service(store, tmp_path, ServiceLimits(max_queue=max_queue))
    for _ in range(max_queue):
        submit(service, camera_input(service))
    with pytest.raises(QueueFull) as full:
        submit(service, camera_input(service))
    assert full.value.message == f"{held} its limit is {max_queue}"


@pytest.mark.parametrize(
    ("limits", "words"),
    [
        (ServiceLimits(max_queue=2), "the queue holds at most 2 queued jobs (REANGLE_MAX_QUEUE)"),
        (
            ServiceLimits(max_queue=10, max_queue_per_key=2),
            "one API key may have at most 2 queued jobs (REANGLE_MAX_QUEUE_PER_KEY)",
        ),
    ],
    ids=["queue", "per-key"],
)
def test_a_batch_larger_than_the_queue_may_ever_hold_is_invalid_not_a_queue_full_to_retry(
    tmp_path: Path, store: SqliteStore, limits: ServiceLimits, words: str
) -> None:
    service = job_service(store, tmp_path, limits)
    items = [camera_input(service) for _ in range(3)]
    with pytest.raises(InvalidInput) as refused:
        asyncio.run(service.submit_batch(OWNER, CAMERA_EDIT, items))
    assert refused.value.message == f"a batch of 3 items cannot be queued: {words}"
    assert refused.value.hint == "send it as batches of at most 2 items"
    assert store.list_jobs(OWNER, status=None, limit=10, before_seq=None) == ([], None)
    _, jobs = asyncio.run(service.submit_batch(OWNER, CAMERA_EDIT, items[:2]))  # one that fits is queued
    assert len(jobs) == 2


# Wan 2.7 in the native API ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"num_outputs": 9}, "num_outputs must be between 1 and 4 without image_set_mode (up to 12 with"),
        ({"num_outputs": 13, "image_set_mode": True}, "num_outputs must be between 1 and 12 in image set"),
    ],
)
def test_wan_limits_name_the_native_fields(fields: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError) as refused:
        WanImageInput.model_validate({"prompt": "a red fox"} | fields)
    [error] = refused.value.errors()
    assert words in error["msg"]
    assert "numOutputs" not in error["msg"]
    assert "imageSetMode" not in error["msg"]


# progress while the database is locked ---------------------------------------------------------------------


class FakeLockedProgressStore(SqliteStore):
    """A store whose progress writes find the database locked (as another process's lock makes them)."""

    progress_writes = 0

    def set_progress(
        self, job_id: str, attempt: int, progress: float, *, webhook_at: float | None = None
    ) -> bool:
        self.progress_writes += 1
        raise Unavailable("the job database cannot be used now: database is locked")


def test_progress_is_not_written_for_a_while_after_the_database_refused_it(tmp_path: Path) -> None:
    """Each try would hold the event loop for the busy timeout, at every step of the job."""
    store = FakeLockedProgressStore(tmp_path / "locked.sqlite3")
    service = job_service(store, tmp_path)
    now = [1000.0]
    service.clock = lambda: now[0]
    job = submit(service, camera_input(service))
    for step in range(1, 41):  # a step every 0.5 s, for 20 s; the last one too
        now[0] += 0.5
        with contextlib.suppress(Unavailable):
            service.report_progress(job, step, 40)
    assert store.progress_writes == 2  # at 0.5 s, and once the pause is over
    store.close()


# every ending is logged and counted ------------------------------------------------------------------------


def test_jobs_ended_by_a_cancel_or_at_start_up_are_logged_and_counted(
    tmp_path: Path, store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    service = job_service(store, tmp_path, ServiceLimits(max_attempts=1))
    finished: list[str] = []
    service.finished_hooks.append(lambda job: finished.append(f"{job.id} {job.status.value}"))
    out_of_attempts, cancel_asked, queued = (submit(service, camera_input(service)) for _ in range(3))
    store.claim_next(service.clock())
    store.claim_next(service.clock())
    store.cancel(cancel_asked.id, service.clock())  # a cancel the server stopped before it took effect
    with caplog.at_level(logging.INFO, "reangle.jobs"):
        service.cancel(OWNER, queued.id)
        requeued, ended = service.recover()  # as at the next start

    assert requeued == []
    assert [job.id for job in ended] == [out_of_attempts.id, cancel_asked.id]
    expected = [f"{queued.id} canceled", f"{out_of_attempts.id} failed", f"{cancel_asked.id} canceled"]
    assert finished == expected
    logged = [record.getMessage() for record in caplog.records]
    assert [line.split(":")[0].removeprefix("job ").rsplit(" after", 1)[0] for line in logged] == expected
