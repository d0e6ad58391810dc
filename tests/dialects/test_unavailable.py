"""A database that cannot be reached (Unavailable) answers 503 with Retry-After in every dialect's own error
shape, and the providers' clients are not told to give up."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from reangle.api.errors import status_for
from reangle.dialects import openai_images, runpod, scenario, segmind
from reangle.errors import Unavailable

DOWN = Unavailable("the database at db:5432 cannot be reached (connection refused)", retry_after_s=4)
MESSAGE = "the database at db:5432 cannot be reached (connection refused) (retry in 4 s)"


def post_request() -> Request:
    return Request({"type": "http", "method": "POST", "path": "/", "headers": [], "query_string": b""})


def rendered(render: Any) -> tuple[int, Any, dict[str, str]]:
    response = render(post_request(), DOWN, status_for(DOWN))
    return response.status_code, json.loads(bytes(response.body)), dict(response.headers)


def test_native_status_is_503() -> None:
    assert status_for(DOWN) == 503


def test_openai() -> None:
    status, body, headers = rendered(openai_images.render_error)
    assert (status, headers["retry-after"]) == (503, "4")
    assert "x-should-retry" not in headers
    assert body == {
        "error": {"message": MESSAGE, "type": "server_error", "param": None, "code": "unavailable"}
    }


def test_scenario() -> None:
    status, body, headers = rendered(scenario.render_error)
    assert (status, headers["retry-after"]) == (503, "4")
    assert "x-should-retry" not in headers
    assert body == {"error": DOWN.message, "code": "unavailable", "hint": "retry in 4 s"}


def test_segmind() -> None:
    status, body, headers = rendered(segmind.render_error)
    assert (status, headers["retry-after"], body) == (503, "4", {"error": f"{DOWN.message} (retry in 4 s)"})


def test_runpod() -> None:
    status, body, headers = rendered(runpod.render_error)
    assert (status, headers["retry-after"], body) == (503, "4", {"error": MESSAGE})
