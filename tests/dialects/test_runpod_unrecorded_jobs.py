"""RunPod: a job an older reangle stored, before jobs recorded the endpoint they were sent to (the upgrade
marks them SOURCE_UNRECORDED), still answers by its id on an endpoint, as it did then; health and purges,
which reach jobs by endpoint, leave it out."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from fastapi.testclient import TestClient

from reangle.api.app import create_app
from reangle.compose import SQLITE_FILE
from reangle.core.jobs import SOURCE_UNRECORDED
from reangle.settings import Settings
from tests.dialects.conftest import png_base64


def test_a_job_stored_before_endpoints_were_recorded_answers_on_its_endpoint(tmp_path: Path) -> None:
    settings = Settings(engine="fake", data_dir=tmp_path, auth="off", cache_dir=tmp_path)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as http:
        sent = http.post("/runpod/v2/ep-a/run", json={"input": {"image": png_base64(), "azimuth": 90}})
        assert sent.status_code == 200, sent.text
        job_id = sent.json()["id"]
        deadline = time.monotonic() + 30
        while (status := http.get(f"/runpod/v2/ep-a/status/{job_id}").json())["status"] != "COMPLETED":
            assert time.monotonic() < deadline, status
            time.sleep(0.05)
        assert http.get(f"/runpod/v2/ep-b/status/{job_id}").status_code == 404  # recorded: another's
        assert http.get("/runpod/v2/ep-a/health").json()["jobs"]["completed"] == 1

        with sqlite3.connect(tmp_path / SQLITE_FILE) as db:  # as the upgrade leaves an older job
            db.execute("UPDATE jobs SET source = ?", (SOURCE_UNRECORDED,))

        for endpoint in ("ep-a", "ep-b"):
            answer = http.get(f"/runpod/v2/{endpoint}/status/{job_id}")
            assert answer.status_code == 200, answer.text
            assert (answer.json()["id"], answer.json()["status"]) == (job_id, "COMPLETED")
            assert http.get(f"/runpod/v2/{endpoint}/health").json()["jobs"]["completed"] == 0
