"""A wait held for a client (`?wait=`, OpenAI's synchronous calls) ends when the job does, when its time is
up, or as soon as the client goes away: an abandoned `?wait=300` held its request and memory until then."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request

from reangle.api.job_wait import wait_unless_gone
from reangle.core.jobs import Job


class FakeService:
    """Stands in for JobService.wait (the real one is tested with the server): the job after `ends_in_s`."""

    def __init__(self, ends_in_s: float, job: Any = "the job") -> None:
        self.ends_in_s, self.job = ends_in_s, job

    async def wait(self, owner: str, job_id: str, timeout: float) -> Job:
        await asyncio.sleep(min(self.ends_in_s, timeout))
        result: Job = self.job
        return result


def client_request(gone_in_s: float) -> Request:
    """A request whose body has been read and whose client disconnects after `gone_in_s`."""

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(gone_in_s)
        return {"type": "http.disconnect"}

    return Request({"type": "http", "method": "POST", "path": "/v1/jobs", "headers": []}, receive)


def waited(gone_in_s: float, ends_in_s: float) -> tuple[object, float]:
    async def main() -> tuple[object, float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        service: Any = FakeService(ends_in_s)
        job = await wait_unless_gone(client_request(gone_in_s), service, "owner", "job_1", 300)
        return job, loop.time() - started

    return asyncio.run(main())


def test_the_wait_ends_once_the_client_is_gone() -> None:
    job, took = waited(gone_in_s=0.05, ends_in_s=60)
    assert job is None
    assert took < 30


def test_the_wait_ends_with_the_job_while_the_client_is_there() -> None:
    job, took = waited(gone_in_s=60, ends_in_s=0.05)
    assert job == "the job"
    assert took < 30
