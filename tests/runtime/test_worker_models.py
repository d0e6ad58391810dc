"""Which models' queues a scale-out worker (WorkerRuntime) takes jobs from: only those it can run, the models
its heartbeat lists. A model it would only fail (Wan without a DashScope key) is left on its queue, queued,
for a worker that can run it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from reangle.core.jobs import JobStatus
from reangle.core.models import CAMERA_EDIT, MODELS, WAN_IMAGE, install_catalog, shipped_catalog
from reangle.core.service import SubmitRequest
from reangle.runtime.local import LocalRunner
from reangle.runtime.worker import MAINTENANCE_QUEUE, WorkerRuntime
from reangle.settings import Settings
from reangle.store.pg_dispatch import job_queue
from reangle.store.sqlite import SqliteStore
from tests.conftest import job_service
from tests.runtime.test_local_runner import FakeRecordingEngine
from tests.runtime.test_worker_runtime import OWNER, WAIT_S, make_rig, run, working

KEY = "sk-test"
#: never reached: building a worker opens no connection
NO_DATABASE = "postgresql://db.invalid/reangle"


@pytest.fixture(autouse=True)
def keyless_catalog_after() -> Iterator[None]:
    yield
    install_catalog(shipped_catalog(), {})


def serve_catalog(*, dashscope_key: bool) -> None:
    install_catalog(shipped_catalog(), {"dashscope_api_key": KEY} if dashscope_key else {})


def worker_for(
    store: SqliteStore, tmp_path: Path, settings: Settings, models: list[str] | None
) -> WorkerRuntime:
    service = job_service(store, tmp_path)
    engine = FakeRecordingEngine()
    runner = LocalRunner(service, engine)
    return WorkerRuntime(NO_DATABASE, service, engine, settings, runner=runner, models=models)


@pytest.mark.parametrize("dashscope_key", [False, True])
def test_a_worker_listens_to_the_queues_of_the_models_its_heartbeat_lists(
    dashscope_key: bool, store: SqliteStore, tmp_path: Path, settings: Settings
) -> None:
    serve_catalog(dashscope_key=dashscope_key)
    worker = worker_for(store, tmp_path, settings, models=None)

    assert (WAN_IMAGE in worker.models) is dashscope_key
    assert worker.models == sorted(model for model in MODELS if model != WAN_IMAGE or dashscope_key)
    assert worker.heartbeat.status().models == tuple(worker.models)
    assert worker.queues == [job_queue(model) for model in worker.models] + [MAINTENANCE_QUEUE]


def test_a_worker_asked_for_a_model_it_cannot_run_leaves_its_queue(
    store: SqliteStore, tmp_path: Path, settings: Settings
) -> None:
    serve_catalog(dashscope_key=False)
    worker = worker_for(store, tmp_path, settings, models=[WAN_IMAGE, CAMERA_EDIT])

    assert worker.queues == [job_queue(CAMERA_EDIT), MAINTENANCE_QUEUE]


def test_a_wan_job_stays_queued_past_a_worker_without_a_dashscope_key(
    pg_url: str, tmp_path: Path, settings: Settings
) -> None:
    """The Wan job, queued first (by an API replica with the key), would be the keyless worker's first job if
    it listened to Wan's queue: it runs the job queued after, and leaves the Wan job queued."""
    serve_catalog(dashscope_key=True)
    rig = make_rig(pg_url, tmp_path, settings, step_seconds=0)
    try:

        async def scenario() -> None:
            wan = await rig.service.submit(
                OWNER, SubmitRequest(model=WAN_IMAGE, input={"prompt": "a red fox"})
            )
            serve_catalog(dashscope_key=False)
            rig.runtime = WorkerRuntime(
                pg_url,
                rig.service,
                rig.runtime.engine,
                settings,
                runner=LocalRunner(rig.service, rig.runtime.engine),
            )
            camera = await rig.submit(seed=1, num_inference_steps=1)
            async with working(rig):
                async with asyncio.timeout(WAIT_S):
                    await rig.until_status(camera.id, JobStatus.SUCCEEDED)

            left = rig.job(wan.id)
            assert (left.status, left.attempt, left.error) == (JobStatus.QUEUED, wan.attempt, None)
            assert [change.status for change in left.history] == [JobStatus.QUEUED]  # never claimed
            assert rig.runs()[wan.id] == "todo"

        run(scenario())
    finally:
        rig.assets.open_gate()
        rig.service.events.close()
        rig.store.close()
