"""A native submission's model name is capped: a long one is refused in a few words, not echoed back."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.conftest import assert_error

TOO_LONG = "m" * 201


@pytest.mark.parametrize(
    ("path", "body"),
    [("/v1/jobs", {"model": TOO_LONG, "input": {}}), ("/v1/batches", {"model": TOO_LONG, "items": []})],
)
def test_a_model_name_past_200_characters_is_refused_without_echoing_it(
    api: httpx.Client, path: str, body: dict[str, Any]
) -> None:
    response = api.post(path, json=body)
    error = assert_error(response, 422, "invalid_input", "model", "200 characters")
    assert "mmm" not in error["message"]
