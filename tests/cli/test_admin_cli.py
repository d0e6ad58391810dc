"""`reangle admin jobs|show|cancel`: every key's jobs, read from the store itself; a cancel from this other
process stops the embedded server's job in hand."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from reangle.cli.main import main
from reangle.compose import build_service, open_job_store, open_runtime
from reangle.core.jobs import Job, JobError, JobKind, JobStatus, StatusChange
from reangle.core.models import CAMERA_EDIT, TEXT_TO_IMAGE
from reangle.core.ports import JobStore, NewJob
from reangle.core.service import SubmitRequest
from reangle.engine.fake import FakeEngine
from reangle.runtime.embedded import EmbeddedRuntime
from reangle.runtime.pg_bus import CHANNEL
from reangle.settings import Settings
from tests.conftest import error_lines, image_bytes, make_image

T0 = 1_700_000_000.0
ALICE, BOB = "key_aaaaaaaaaaaaaaaa", "key_bbbbbbbbbbbbbbbb"
TABLE_COLUMNS = ("ID", "KEY", "MODEL", "KIND", "STATUS", "ATTEMPT", "CREATED", "STARTED", "FINISHED", "ERROR")


def new_job(job_id: str, owner: str, model: str = CAMERA_EDIT, at: float = T0) -> Job:
    return Job(
        id=job_id,
        owner=owner,
        model=model,
        kind=JobKind.EDIT,
        input={"images": ["asset_in"], "horizontal_angle": 90, "seed": 7},
        created_at=at,
        history=(StatusChange(status=JobStatus.QUEUED, at=at),),
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    """The store of the data folder `tmp_path`, as a server there has it: jobs of two keys, newest last:
    alice's failed edit, bob's processing edit, alice's queued text-to-image."""
    opened = open_job_store(Settings(data_dir=tmp_path))
    opened.insert_jobs([NewJob(job=new_job("job_a1", ALICE, at=T0))])
    opened.insert_jobs([NewJob(job=new_job("job_b1", BOB, at=T0 + 1))])
    opened.insert_jobs([NewJob(job=new_job("job_a2", ALICE, model=TEXT_TO_IMAGE, at=T0 + 2))])
    assert opened.claim_next(T0 + 3, models=[CAMERA_EDIT]) is not None  # job_a1
    error = JobError(code="engine_error", message="the GPU ran out of memory", hint="use a smaller size")
    assert opened.finish("job_a1", 1, JobStatus.FAILED, T0 + 4, error=error) is not None
    assert opened.claim_next(T0 + 5, models=[CAMERA_EDIT]) is not None  # job_b1
    yield opened
    opened.close()


def admin(tmp_path: Path, *args: str) -> int:
    return main(["admin", *args, "--data-dir", str(tmp_path)])


def listed(tmp_path: Path, capsys: pytest.CaptureFixture[str], *filters: str) -> list[dict[str, Any]]:
    assert admin(tmp_path, "jobs", "--json", *filters) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_the_jobs_of_every_key_are_listed_newest_first_and_filtered(
    tmp_path: Path, store: JobStore, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = listed(tmp_path, capsys)
    assert [(job["id"], job["key_id"], job["status"]) for job in jobs] == [
        ("job_a2", ALICE, "queued"),
        ("job_b1", BOB, "processing"),
        ("job_a1", ALICE, "failed"),
    ]
    failed = jobs[2]
    assert (failed["model"], failed["kind"], failed["attempt"]) == (CAMERA_EDIT, "edit", 1)
    assert (failed["created_at"], failed["started_at"], failed["finished_at"]) == (
        "2023-11-14T22:13:20.000Z",
        "2023-11-14T22:13:23.000Z",
        "2023-11-14T22:13:24.000Z",
    )
    assert failed["error"]["code"] == "engine_error"

    assert [job["id"] for job in listed(tmp_path, capsys, "--key-id", ALICE)] == ["job_a2", "job_a1"]
    assert [job["id"] for job in listed(tmp_path, capsys, "--status", "processing")] == ["job_b1"]
    assert [job["id"] for job in listed(tmp_path, capsys, "--model", CAMERA_EDIT)] == ["job_b1", "job_a1"]
    assert [job["id"] for job in listed(tmp_path, capsys, "--key-id", ALICE, "--status", "queued")] == [
        "job_a2"
    ]
    assert [job["id"] for job in listed(tmp_path, capsys, "--limit", "2")] == ["job_a2", "job_b1"]
    assert listed(tmp_path, capsys, "--key-id", BOB, "--status", "failed") == []

    assert admin(tmp_path, "jobs") == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == list(TABLE_COLUMNS)
    started, finished = "2023-11-14T22:13:23Z", "2023-11-14T22:13:24Z"
    expected = [
        f"job_a2 {ALICE} {TEXT_TO_IMAGE} edit queued 1 2023-11-14T22:13:22Z - - -",
        f"job_b1 {BOB} {CAMERA_EDIT} edit processing 1 2023-11-14T22:13:21Z 2023-11-14T22:13:25Z - -",
        f"job_a1 {ALICE} {CAMERA_EDIT} edit failed 1 2023-11-14T22:13:20Z {started} {finished} engine_error",
    ]
    assert [row.split() for row in rows] == [line.split() for line in expected]


def test_an_empty_listing_says_so_on_stderr_and_a_bad_limit_is_one_line(
    tmp_path: Path, store: JobStore, capsys: pytest.CaptureFixture[str]
) -> None:
    assert admin(tmp_path, "jobs", "--status", "canceled") == 0
    captured = capsys.readouterr()
    assert (captured.out, error_lines(captured.err)) == ("", [f"reangle: no such jobs in {tmp_path}"])
    with pytest.raises(SystemExit) as exited:
        admin(tmp_path, "jobs", "--limit", "1001")
    assert exited.value.code == 2
    assert "--limit: 1001 is out of range: use 1 to 1000" in capsys.readouterr().err


def test_a_data_folder_without_a_database_is_one_line_and_stays_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mistyped = tmp_path / "mistyped"
    assert admin(mistyped, "jobs") == 2
    assert error_lines(capsys.readouterr().err) == [
        f"reangle: error: no reangle database in {mistyped} (check --data-dir or REANGLE_DATA_DIR: the "
        "folder the server uses)"
    ]
    assert not (mistyped / "reangle.sqlite3").exists()


def test_show_prints_one_job_in_full(
    tmp_path: Path, store: JobStore, capsys: pytest.CaptureFixture[str]
) -> None:
    assert admin(tmp_path, "show", "job_a1", "--json") == 0
    job = json.loads(capsys.readouterr().out)
    assert (job["id"], job["key_id"], job["status"]) == ("job_a1", ALICE, "failed")
    assert job["input"] == {"images": ["asset_in"], "horizontal_angle": 90, "seed": 7}
    assert job["error"] == {
        "code": "engine_error",
        "message": "the GPU ran out of memory",
        "hint": "use a smaller size",
    }
    assert [change["status"] for change in job["history"]] == ["queued", "processing", "failed"]

    assert admin(tmp_path, "show", "job_a1") == 0
    lines = capsys.readouterr().out.splitlines()
    assert "key_id: " + ALICE in lines
    assert 'input: {"images": ["asset_in"], "horizontal_angle": 90, "seed": 7}' in lines
    assert any(line.startswith("error: ") and "the GPU ran out of memory" in line for line in lines)

    assert admin(tmp_path, "show", "job_nope") == 2
    assert error_lines(capsys.readouterr().err) == [f"reangle: error: no job job_nope in {tmp_path}"]


def test_cancel_ends_any_keys_queued_job_and_flags_a_processing_one(
    tmp_path: Path, store: JobStore, capsys: pytest.CaptureFixture[str]
) -> None:
    assert admin(tmp_path, "cancel", "job_a2") == 0
    assert capsys.readouterr().out.strip() == f"job_a2 ({ALICE}) canceled"
    canceled = store.get_job("job_a2")
    assert canceled is not None
    assert canceled.status == JobStatus.CANCELED
    assert canceled.finished_at is not None
    assert admin(tmp_path, "cancel", "job_a2") == 0  # as the API: a canceled job stays canceled, no error
    assert capsys.readouterr().out.strip() == "job_a2 was already canceled"

    assert admin(tmp_path, "cancel", "job_b1") == 0
    assert "job_b1 (key_bbbbbbbbbbbbbbbb): cancel requested" in capsys.readouterr().out
    flagged = store.get_job("job_b1")
    assert flagged is not None
    assert (flagged.status, flagged.cancel_requested) == (JobStatus.PROCESSING, True)


def test_cancel_of_an_ended_or_unknown_job_is_one_line_and_changes_nothing(
    tmp_path: Path, store: JobStore, capsys: pytest.CaptureFixture[str]
) -> None:
    assert admin(tmp_path, "cancel", "job_a1") == 2
    assert error_lines(capsys.readouterr().err) == [
        "reangle: error: job job_a1 has already failed; only queued or processing jobs cancel"
    ]
    failed = store.get_job("job_a1")
    assert failed is not None
    assert failed.status == JobStatus.FAILED
    assert admin(tmp_path, "cancel", "job_nope") == 2
    assert error_lines(capsys.readouterr().err) == [f"reangle: error: no job job_nope in {tmp_path}"]


def test_on_postgresql_the_commands_read_the_shared_database_and_a_cancel_is_sent_to_its_worker(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REANGLE_DATABASE_URL", pg_url)
    pg_store = open_job_store(Settings(database_url=pg_url))
    listener = psycopg.connect(pg_url, autocommit=True)
    try:
        listener.execute(f"LISTEN {CHANNEL}")
        pg_store.insert_jobs([NewJob(job=new_job("job_a1", ALICE)), NewJob(job=new_job("job_b1", BOB))])
        assert pg_store.claim_next(T0 + 1) is not None  # job_a1: a worker runs it
        assert main(["admin", "jobs", "--json"]) == 0
        jobs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [(job["id"], job["key_id"], job["status"]) for job in jobs] == [
            ("job_b1", BOB, "queued"),
            ("job_a1", ALICE, "processing"),
        ]
        assert main(["admin", "cancel", "job_b1"]) == 0
        assert main(["admin", "cancel", "job_a1"]) == 0
        ended, flagged = pg_store.get_job("job_b1"), pg_store.get_job("job_a1")
        assert ended is not None
        assert ended.status == JobStatus.CANCELED
        assert flagged is not None
        assert (flagged.status, flagged.cancel_requested) == (JobStatus.PROCESSING, True)
        # what the API's cancel sends too: the end to the job's subscribers, the stop to its worker
        notices = [json.loads(notice.payload) for notice in listener.notifies(timeout=5, stop_after=2)]
        assert [(notice["job_id"], notice["kind"]) for notice in notices] == [
            ("job_b1", "status"),
            ("job_a1", "stop"),
        ]
    finally:
        listener.close()
        pg_store.close()


#: The embedded server's fake engine: 100 steps of 80 ms, 8 s had the job run to its end.
STEPS, STEP_S = 100, 0.08
#: How soon a cancel read by a heartbeat every 50 ms must have stopped it.
STOPPED_WITHIN_S = 3.0


def test_a_cancel_from_another_process_stops_the_embedded_servers_job_in_hand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    settings = Settings(engine="fake", data_dir=data, cache_dir=tmp_path / "cache", fake_step_seconds=STEP_S)
    engine = FakeEngine(settings)
    service = build_service(settings, engine)
    runtime = open_runtime(settings, service, engine)
    assert isinstance(runtime, EmbeddedRuntime)
    runtime.heartbeat.interval_s = 0.05

    async def job_rendering(job_id: str) -> None:
        while (job := service.store.get_job(job_id)) is None or job.progress == 0:
            await asyncio.sleep(0.02)

    async def scenario() -> Job:
        image = service.assets.ingest(ALICE, image_bytes(make_image(64, 64)))
        data_in = {"images": [image.id], "horizontal_angle": 90, "width": 64, "height": 64}
        request = SubmitRequest(model=CAMERA_EDIT, input=data_in | {"num_inference_steps": STEPS})
        job = await service.submit(ALICE, request)
        running = asyncio.create_task(runtime.run())
        try:
            await asyncio.wait_for(job_rendering(job.id), timeout=STEPS * STEP_S / 2)
            # the command opens the database on its own connection: nothing it does reaches this process's
            # event bus, only the store
            assert await asyncio.to_thread(main, ["admin", "cancel", job.id, "--data-dir", str(data)]) == 0
            canceled_at = time.monotonic()
            ended = await service.wait(ALICE, job.id, timeout=STEPS * STEP_S)
            assert ended.status == JobStatus.CANCELED
            assert time.monotonic() - canceled_at < STOPPED_WITHIN_S  # stopped, not run to its end
            assert ended.progress < 1
            return ended
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)

    try:
        asyncio.run(scenario())
    finally:
        service.store.close()
    assert "cancel requested" in capsys.readouterr().out
