"""RunPod: an endpoint id no client sends (too long, a NUL, a space) is refused by every route that takes one,
as /run refuses it, not answered as an endpoint with no jobs."""

from __future__ import annotations

import httpx
import pytest

from tests.dialects.conftest import API_KEY, RunningServer

ROUTES = [
    ("GET", "/health"),
    ("POST", "/purge-queue"),
    ("GET", "/status/job_x"),
    ("POST", "/status/job_x"),
    ("GET", "/stream/job_x"),
    ("POST", "/stream/job_x"),
    ("POST", "/cancel/job_x"),
    ("POST", "/retry/job_x"),
]


@pytest.mark.parametrize(("method", "route"), ROUTES)
@pytest.mark.parametrize("endpoint_id", ["x" * 10_000, "%00", "a%20b"], ids=["long", "nul", "space"])
def test_an_endpoint_id_no_client_sends_is_refused_on_every_route(
    server: RunningServer, method: str, route: str, endpoint_id: str
) -> None:
    response = httpx.request(
        method,
        f"{server.url}/runpod/v2/{endpoint_id}{route}",
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=10,
    )
    assert response.status_code == 400, response.text
    message = response.json()["error"]
    assert message.startswith("endpoint id ")
    assert "use letters, digits" in message
    assert len(message) < 300  # a long id is shown cut
