"""The OpenAI dialect's log line for an error it answers: a synchronous call whose job the stopping server
canceled is expected (its client is told to retry), so INFO; a real failure stays ERROR."""

from __future__ import annotations

import logging

import pytest
from starlette.requests import Request

from reangle.core.service import STOPPING
from reangle.dialects.openai_images import ServerFailure, render_error
from reangle.errors import ReangleError, Unavailable

PATH = "/openai/v1/images/edits"


def request() -> Request:
    return Request({"type": "http", "method": "POST", "path": PATH, "headers": [], "query_string": b""})


@pytest.mark.parametrize(
    ("error", "level"),
    [
        (Unavailable(STOPPING), "INFO"),
        (Unavailable("the job database cannot be used now: database is locked"), "ERROR"),
        (ServerFailure(), "ERROR"),
    ],
    ids=["stopping", "database", "bug"],
)
def test_a_call_canceled_by_the_stopping_server_is_logged_at_info_real_failures_at_error(
    error: ReangleError, level: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, "reangle.dialects.openai"):
        response = render_error(request(), error, 503)
    assert response.status_code in (500, 503)
    assert [(record.levelname, error.message in record.getMessage()) for record in caplog.records] == [
        (level, True)
    ]
    if isinstance(error, Unavailable):
        assert response.headers["retry-after"] == "5"
