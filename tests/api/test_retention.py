"""The retention sweep: finished jobs and their files go after their time; inputs of unfinished jobs stay."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx

from tests.api.conftest import (
    KEY_A,
    ServerFactory,
    ServerProcess,
    assert_error,
    download,
    edit_input,
    get_job,
    png,
    poll,
    running,
    slow_input,
    submit,
    succeeded,
    upload,
)


def blob(server: ServerProcess, data: bytes) -> Path:
    """Where the server keeps these bytes (content-addressed by SHA-256)."""
    digest = hashlib.sha256(data).hexdigest()
    return server.data_dir / "assets" / digest[:2] / digest


def files(server: ServerProcess) -> list[Path]:
    return [path for path in (server.data_dir / "assets").rglob("*") if path.is_file()]


def gone(api: httpx.Client, job_id: str) -> bool | None:
    return True if api.get(f"/v1/jobs/{job_id}").status_code == 404 else None


def test_finished_jobs_and_their_files_are_swept_but_unfinished_jobs_keep_their_inputs(
    serve: ServerFactory,
) -> None:
    server = serve(result_ttl_s=3, upload_ttl_s=1, sweep_interval_s=0.2, fake_step_seconds=0.05)
    with server.client(KEY_A) as api:
        done_input, long_input, waiting_input = (png(color=(i * 60, 90, 90)) for i in (1, 2, 3))
        done = succeeded(api, submit(api, edit_input(upload(api, done_input)["id"]))["id"])
        output = download(done["output"]["assets"][0]["url"])
        assert output.status_code == 200
        swept = [blob(server, done_input), blob(server, output.content)]
        assert all(path.is_file() for path in swept)

        long_asset = upload(api, long_input)
        long = submit(api, slow_input(long_asset["id"]))  # 100 steps: 5 s, past every TTL
        waiting_asset = upload(api, waiting_input)
        waiting = submit(api, edit_input(waiting_asset["id"]))  # queued behind it all that time

        poll(lambda: gone(api, done["id"]), timeout=10, what="the finished job to be swept")
        poll(lambda: True if not any(p.exists() for p in swept) else None, timeout=10, what="its files to go")
        assert api.get(f"/v1/assets/{done['output']['assets'][0]['id']}").status_code == 404
        # a link never outlives its asset
        assert_error(download(done["output"]["assets"][0]["url"]), 403, "forbidden", "expired")

        # by now both inputs are older than every TTL, and sweeps have run since
        assert running(get_job(api, long["id"]))
        assert get_job(api, waiting["id"])["status"] == "queued"
        for asset, data in ((long_asset, long_input), (waiting_asset, waiting_input)):
            assert api.get(f"/v1/assets/{asset['id']}").status_code == 200
            assert blob(server, data).is_file()

        assert succeeded(api, long["id"])["attempt"] == 1
        assert succeeded(api, waiting["id"])["attempt"] == 1
        poll(lambda: gone(api, waiting["id"]), timeout=10, what="the last job to be swept")
        poll(lambda: True if not files(server) else None, timeout=10, what="every file to go")
