"""A dialect's log line for a server error it answers: a synchronous call whose job the stopping server
canceled is expected (its client is told to retry), so INFO; a database or store away (503) is no line of
the dialect's (each answer is in the access log; the outage is logged where it is seen), as in the native
API; a real failure stays ERROR."""

from __future__ import annotations

import logging

import pytest
from starlette.requests import Request

from reangle.core.service import STOPPING
from reangle.dialects import openai_images, runpod, segmind
from reangle.dialects.openai_images import ServerFailure
from reangle.errors import ReangleError, Unavailable

#: Each synchronous dialect: its error renderer, its logger and a path of its synchronous calls.
DIALECTS = {
    "openai": (openai_images.render_error, "reangle.dialects.openai", "/openai/v1/images/edits"),
    "segmind": (segmind.render_error, "reangle.dialects.segmind", "/segmind/v1/qwen-edit-multiangle-2511"),
    "runpod": (runpod.render_error, "reangle.dialects.runpod", "/runpod/v2/e/runsync"),
}


def request(path: str) -> Request:
    return Request({"type": "http", "method": "POST", "path": path, "headers": [], "query_string": b""})


@pytest.mark.parametrize(
    ("error", "level"),
    [
        (Unavailable(STOPPING), "INFO"),
        (Unavailable("the job database cannot be used now: database is locked"), None),
        (ServerFailure(), "ERROR"),
    ],
    ids=["stopping", "database", "bug"],
)
@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_call_canceled_by_the_stopping_server_is_logged_at_info_real_failures_at_error(
    dialect: str, error: ReangleError, level: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    render, logger, path = DIALECTS[dialect]
    with caplog.at_level(logging.INFO, logger):
        response = render(request(path), error, 500 if isinstance(error, ServerFailure) else 503)
    assert response.status_code in (500, 503)
    logged = [(record.levelname, error.message in record.getMessage()) for record in caplog.records]
    assert logged == ([] if level is None else [(level, True)])
    if isinstance(error, Unavailable):
        assert response.headers["retry-after"] == "5"
