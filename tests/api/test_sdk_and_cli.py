"""The Python SDK and the CLI client against a real server over HTTP (their unit tests use a fake server)."""

from __future__ import annotations

import asyncio
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import reangle
from reangle.client import BadRequestError, JobFailed, NotFoundError, ProgressEvent
from tests.api.conftest import ServerProcess, png


@pytest.fixture
def key(shared_server: ServerProcess) -> str:
    return shared_server.new_key("sdk")


def test_sdk_edit_with_progress_then_download(shared_server: ServerProcess, key: str) -> None:
    seen: list[float] = []

    def progress(event: object) -> None:
        if isinstance(event, ProgressEvent):
            seen.append(event.progress)

    with reangle.Client(shared_server.url, key) as client:
        job = client.edit(png(), horizontal_angle=90, width=64, height=48, seed=3, on_progress=progress)
        assert job.status == "succeeded"
        assert seen == sorted(seen)
        assert seen[-1] == 1.0
        (output,) = job.assets
        picture = Image.open(io.BytesIO(client.download(output)))
        assert picture.size == (64, 48)
        assert client.get(job.id).input["horizontal_angle"] == 90


def test_sdk_orbit_and_typed_errors(shared_server: ServerProcess, key: str, tmp_path: Path) -> None:
    photo = tmp_path / "holiday photo.png"
    photo.write_bytes(png())
    with reangle.Client(shared_server.url, key) as client:
        asset = client.upload(photo)
        assert client.get_asset(asset.id).name == asset.name == "holiday photo.png"
        orbit = client.orbit(asset.id, azimuths=[0, 180], width=64, height=48)
        assert sorted(a.role for a in orbit.assets) == ["contact_sheet", "turntable", "view", "view"]
        with pytest.raises(JobFailed) as failed:
            client.edit(asset.id, prompt="fake:fail please", width=64, height=48)
        assert "on purpose" in (failed.value.job.error.message if failed.value.job.error else "")
        with pytest.raises(BadRequestError) as bad:
            client.edit(asset.id, zoom=11)
        assert bad.value.status_code == 422
        assert "zoom" in bad.value.message
        with pytest.raises(NotFoundError):
            client.get("job_doesnotexist")


def test_async_sdk_edit(shared_server: ServerProcess, key: str) -> None:
    async def run() -> str:
        async with reangle.AsyncClient(shared_server.url, key) as client:
            job = await client.edit(png(), azimuth=180, width=64, height=48)
            return job.status

    assert asyncio.run(run()) == "succeeded"


def test_cli_client_edit_and_jobs(shared_server: ServerProcess, key: str, tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(png())
    env = {**os.environ, "REANGLE_SERVER": shared_server.url, "REANGLE_API_KEY": key}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "reangle", *args]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)

    out = tmp_path / "side.png"
    edited = cli(
        "edit",
        str(photo),
        "--server",
        shared_server.url,
        "--azimuth",
        "90",
        "--width",
        "64",
        "--height",
        "48",
        "-o",
        str(out),
    )
    assert edited.returncode == 0, edited.stderr
    assert Image.open(out).size == (64, 48)
    bar = re.split(r"[\r\n]", edited.stderr.strip())[-1]  # the progress bar's last state
    assert re.fullmatch(r"editing \(succeeded\): 100%\|█+\| \[\d+:\d+<\d+:\d+(, step (\d+)/\2)?\]", bar), bar
    listed = cli("jobs", "list", "--server", shared_server.url)
    assert listed.returncode == 0, listed.stderr
    assert "succeeded" in listed.stdout
    refused = cli(
        "edit", str(photo), "--server", shared_server.url, "--width", "8", "--height", "8", "-o", str(out)
    )
    assert refused.returncode == 2
    assert "width" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
