"""Text the database refuses (PostgreSQL's DataError) is the request's fault, in each dialect's error shape.

The submit checks refuse a NUL in any text a dialect request carries before it reaches the store, so no
dialect request is known to get one to PostgreSQL any more: these tests raise psycopg's own DataError
inside a dialect route, as psycopg raises it when a query is handed such text.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from psycopg import sql

from reangle.dialects import openai_images, runpod, scenario, segmind
from reangle.dialects.base import dialect_route

REFUSAL = "the request holds text the database cannot store, such as a NUL character"
HINT = "remove NUL (\\u0000) characters from the request's text"


def app_whose_route_hands_psycopg_a_nul(render: Any) -> FastAPI:
    router = APIRouter(route_class=dialect_route(render))

    @router.post("/refused")
    def refused() -> None:
        sql.Literal("snow\x00").as_string(None)  # psycopg adapts query text this way: DataError on a NUL

    @router.post("/broken")
    def broken() -> None:
        raise RuntimeError("a bug, not the request's fault")

    app = FastAPI()
    app.include_router(router)
    return app


@pytest.mark.parametrize(
    ("render", "body"),
    [
        (scenario.render_error, {"error": REFUSAL, "code": "invalid_input", "hint": HINT}),
        (segmind.render_error, None),
        (runpod.render_error, {"error": f"{REFUSAL} ({HINT})"}),
        (openai_images.render_error, None),
    ],
    ids=["scenario", "segmind", "runpod", "openai"],
)
def test_a_psycopg_data_error_in_a_dialect_route_is_a_400_in_the_dialects_shape(
    render: Any, body: dict[str, Any] | None, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(psycopg.DataError):  # what the route meets: psycopg's own refusal
        sql.Literal("snow\x00").as_string(None)
    with TestClient(app_whose_route_hands_psycopg_a_nul(render)) as client, caplog.at_level(logging.WARNING):
        response = client.post("/refused")
    assert response.status_code == 400, response.text
    assert "0x00" not in response.text  # the database's own words stay in the log
    assert REFUSAL in response.text
    if body is not None:
        assert response.json() == body
    assert "connection" not in response.headers  # the request was at fault: the connection stays usable
    assert [record.levelname for record in caplog.records] == ["WARNING"]


def test_other_errors_in_a_dialect_route_stay_a_500() -> None:
    with TestClient(app_whose_route_hands_psycopg_a_nul(scenario.render_error)) as client:
        response = client.post("/broken")
    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
    assert response.headers["connection"] == "close"
