"""The error shapes /openapi.json documents: each route family's own, as its errors are answered. A router's
"4XX" response also keeps FastAPI from documenting its own `HTTPValidationError`, which no route of reangle
answers with."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class NativeErrorBody(BaseModel):
    code: str
    message: str
    hint: str | None = None


class NativeError(BaseModel):
    """The native API's errors: 422 bad input (the message names the field), 401, 404 and the others."""

    error: NativeErrorBody


class ScenarioError(BaseModel):
    """Scenario's errors: every bad input is a 400."""

    error: str
    code: str
    hint: str | None = None


class MessageError(BaseModel):
    """Segmind's and RunPod's errors: the message, and its hint in parentheses, as one text; bad input 400."""

    error: str


class OpenAIErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    """OpenAI's errors: bad input 400 `invalid_request_error`, with the form field in `param`."""

    error: OpenAIErrorBody


def error_responses(shape: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """A router's `responses`: its client and server errors in `shape`."""
    return {
        "4XX": {"model": shape, "description": "the request was refused; the message says why"},
        "5XX": {
            "model": shape,
            "description": "the server could not answer (Retry-After when it is temporary)",
        },
    }
