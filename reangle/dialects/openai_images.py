"""The OpenAI Images dialect: the `openai` Python client (3.x) pointed at `http://HOST/openai/v1`.

    POST /openai/v1/images/edits        multipart; waits for the job, answers {"created", "data": [...], ...}
    POST /openai/v1/images/generations  JSON; text-to-image (qwen-image-2512 by default), answered alike
    GET  /openai/v1/models[/{id}]       the served models, as OpenAI model objects
    *    /openai/v1/...                 any other path or method (OPTIONS, HEAD): 404 in OpenAI's error shape

The request fields, their mapping to the native input, the response and the error bodies are pure
translations in `openai_schemas` (documented there); this module wires them onto JobService.

Errors: {"error": {"message", "type", "param", "code"}} (see `openai_schemas`); queue full 429 carries
Retry-After; no result in time 504 server_error, code "timeout" (the job is canceled). Every error except 429
carries `x-should-retry: false`, so the SDK's automatic retries never run a job twice; `x-request-id` names
the job (unless the caller sent its own X-Request-Id). The wait is bounded by MAX_WAIT_S and by the client's
own `x-stainless-read-timeout`; a client that disconnects gets its job canceled. An `Idempotency-Key` header
is honoured as in the native API. Both image routes share all of this (`_answer`); they differ only in how
they read and translate the request. A body that is not JSON (generations) or not a form (edits) is a 400,
never a 500.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect

from reangle.api.auth import bearer_token
from reangle.api.deps import LinkMaker, State
from reangle.api.errors import too_many_digits
from reangle.api.forms import parse_form
from reangle.api.job_wait import wait_unless_gone
from reangle.api.openapi_errors import OpenAIError, error_responses
from reangle.api.request_id import failure_hint, log_failure
from reangle.core.edit import MAX_INPUT_IMAGES
from reangle.core.inputs import refuse_bad_text_in_body
from reangle.core.jobs import Job, JobStatus
from reangle.core.json_values import json_kind
from reangle.core.service import STOPPING, SubmitRequest
from reangle.dialects.base import ANY_METHOD, dialect_route, log_server_error
from reangle.dialects.openai_schemas import (
    IMAGE_FIELDS,
    EditCall,
    check_known,
    error_body,
    error_payload,
    job_error_payload,
    model_object,
    openai_ids,
    render_edit,
    translate,
    translate_generation,
)
from reangle.errors import Conflict, InvalidInput, NotFound, QueueFull, ReangleError, Unavailable

log = logging.getLogger("reangle.dialects.openai")

PREFIX = "/openai/v1"
#: The longest a request waits for its job (the SDK's own default timeout is 600 s).
MAX_WAIT_S = 570.0


# errors ----------------------------------------------------------------------------------------------


class ServerFailure(ReangleError):
    """The server failed; see its log."""

    code = "internal_error"


def json_error(status: int, body: dict[str, Any], *, job_id: str | None = None) -> JSONResponse:
    headers = {} if status in (429, 503) else {"x-should-retry": "false"}  # 503: the database is back soon
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if job_id:
        headers["x-request-id"] = job_id
    return JSONResponse(body, status_code=status, headers=headers)


def render_error(request: Request, exc: ReangleError, _status: int) -> Response:
    status, body = error_payload(exc)
    log_server_error(log, request, exc, status)
    response = json_error(status, body, job_id=getattr(request.state, "openai_job_id", None))
    if isinstance(exc, QueueFull | Unavailable):
        response.headers["Retry-After"] = str(exc.retry_after_s)
    return response


router = APIRouter(
    route_class=dialect_route(render_error), responses=error_responses(OpenAIError), tags=["openai"]
)


# routes ----------------------------------------------------------------------------------------------


@router.post(f"{PREFIX}/images/edits", response_model=None)
async def create_edit(request: Request, app: State, links: LinkMaker) -> Response:
    """Edit 1-3 images and answer when the job has finished (see the module docstrings)."""
    owner = app.keys.owner(bearer_token(request.headers.get("authorization")))
    with _unexpected_errors_as_server_failure(request):
        fields, images = await read_form(request)
        # Uploads go to the core as base64, which ingests them at submit: with an Idempotency-Key, a retry
        # that uploads the same bytes again is then the same request (asset ids would differ each time).
        refs = [item if isinstance(item, str) else base64.b64encode(item).decode("ascii") for item in images]
        return await _answer(request, app, links, owner, translate(fields, refs))


@router.post(f"{PREFIX}/images/generations", response_model=None)
async def create_generation(request: Request, app: State, links: LinkMaker) -> Response:
    """Generate images from a prompt and answer when the job has finished (see the module docstrings)."""
    owner = app.keys.owner(bearer_token(request.headers.get("authorization")))
    with _unexpected_errors_as_server_failure(request):
        return await _answer(request, app, links, owner, translate_generation(await read_json(request)))


@router.get(f"{PREFIX}/models")
async def list_models(request: Request, app: State) -> dict[str, Any]:
    app.keys.owner(bearer_token(request.headers.get("authorization")))
    return {"object": "list", "data": [model_object(model_id) for model_id in openai_ids()]}


@router.get(f"{PREFIX}/models/{{model_id}}")
async def get_model(model_id: str, request: Request, app: State) -> dict[str, Any]:
    app.keys.owner(bearer_token(request.headers.get("authorization")))
    if model_id not in openai_ids():
        raise NotFound(f"The model {model_id!r} does not exist")
    return model_object(model_id)


# HEAD mirrors GET (before the catch-all below takes every other method); not a separate operation
router.add_api_route(f"{PREFIX}/models", list_models, methods=["HEAD"], include_in_schema=False)
router.add_api_route(f"{PREFIX}/models/{{model_id}}", get_model, methods=["HEAD"], include_in_schema=False)


# every method, OPTIONS and HEAD included: otherwise the app's router answers them, in the native shape
@router.api_route(f"{PREFIX}/{{path:path}}", methods=ANY_METHOD, include_in_schema=False)
async def unknown_url(path: str, request: Request) -> Response:
    raise NotFound(
        f"Unknown request URL: {request.method} {PREFIX}/{path}. "
        f"This server serves POST {PREFIX}/images/edits and POST {PREFIX}/images/generations."
    )


# helpers ---------------------------------------------------------------------------------------------


async def _answer(request: Request, app: State, links: LinkMaker, owner: str, call: EditCall) -> Response:
    """Submit the job, wait for it, and answer with its images or its error (shared by both image routes)."""
    submit = SubmitRequest(
        model=call.model, input=call.input, idempotency_key=request.headers.get("idempotency-key")
    )
    try:
        job = await app.service.submit(owner, submit)
    except InvalidInput as exc:
        raise call.as_sent(exc) from None
    request.state.openai_job_id = job.id
    finished = await wait_unless_gone(request, app.service, owner, job.id, wait_budget(request.headers))
    if finished is None:  # the client went away: nobody will collect the result
        _cancel_quietly(app, owner, job.id)
        return Response(status_code=499)
    timed_out = not finished.status.is_terminal
    if timed_out:  # cancel it, unless it has just finished after all
        finished = _cancel_quietly(app, owner, job.id)
    if timed_out and finished.status not in (JobStatus.SUCCEEDED, JobStatus.FAILED):
        if app.service.stopping:
            raise Unavailable(STOPPING)
        message = f"job {job.id} did not finish in time and was canceled; retry with a longer timeout"
        return json_error(504, error_body(message, "server_error", None, "timeout"), job_id=job.id)
    if finished.status != JobStatus.SUCCEEDED:
        status, body = job_error_payload(finished)
        return json_error(status, body, job_id=job.id)
    body = render_edit(
        finished,
        call.response_format,
        read=lambda asset_id: _read_asset(app, asset_id),
        url_for=links.asset_url_by_id,
    )
    return JSONResponse(body, headers={"x-request-id": job.id})


@contextlib.contextmanager
def _unexpected_errors_as_server_failure(request: Request) -> Iterator[None]:
    """Errors of the error tree pass as they are; anything else is logged and answered as ServerFailure."""
    try:
        yield
    except (ReangleError, ClientDisconnect):
        raise
    except Exception as exc:
        log_failure(request)
        raise ServerFailure(hint=failure_hint(request)) from exc


async def read_form(request: Request) -> tuple[dict[str, str], list[bytes | str]]:
    """The form's text fields and its images in order, as bytes or reference strings; a text field given
    twice with different values is refused (which one was meant?). Its size is capped while it streams in
    (`BodyLimit`, `upload_limits` in api/app.py)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        raise InvalidInput(f"send multipart/form-data, not {content_type or 'no content type'!r}", field=None)
    form = await parse_form(request, max_files=MAX_INPUT_IMAGES + 4, max_fields=100)
    try:
        fields: dict[str, str] = {}
        images: list[bytes | str] = []
        for name, value in form.multi_items():
            if name in IMAGE_FIELDS:
                image = await value.read() if isinstance(value, UploadFile) else value
                if not image:
                    raise InvalidInput(f"{name} is empty: send an image file", field=name)
                images.append(image)
            else:
                check_known(name)  # the messages below name the field: only once it is one of ours
                if isinstance(value, UploadFile):
                    raise InvalidInput(f"{name} must be a text field, not a file", field=name)
                if fields.setdefault(name, value) != value:
                    raise InvalidInput(
                        f"{name} is given twice, as {fields[name]!r} and {value!r}; send it once", field=name
                    )
        return fields, images
    finally:
        await form.close()


async def read_json(request: Request) -> dict[str, Any]:
    """The request's JSON object (its size is capped while it streams in, as for every body)."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        raise InvalidInput(f"send application/json, not {content_type.split(';')[0]!r}", field=None)
    raw = await request.body()
    if not raw.strip():
        raise InvalidInput("the body is empty: send a JSON object with at least a prompt", field=None)
    try:
        body = json.loads(raw)
    except ValueError as exc:  # UnicodeDecodeError is one
        if too_many_digits(exc):  # Python's own message gives advice to programmers
            raise InvalidInput(
                f"a number in the body has more than {sys.get_int_max_str_digits():,} digits", field=None
            ) from None
        raise InvalidInput(f"the body is not valid JSON: {exc}", field=None) from None
    except RecursionError:
        raise InvalidInput(
            "the body nests arrays or objects too deeply to be read",
            field=None,
            hint="send JSON nested at most a few hundred levels deep",
        ) from None
    if not isinstance(body, dict):
        raise InvalidInput(f"the body must be a JSON object, not {json_kind(body)}", field=None)
    refuse_bad_text_in_body(body)
    return body


def wait_budget(headers: Mapping[str, str]) -> float:
    """Seconds to wait for the job: MAX_WAIT_S, and less than the client's own read timeout by a tenth of it
    (at least 0.5 s, at most 5 s), time for the 504 to reach a client on a slow link or a busy machine."""
    try:
        client = float(headers.get("x-stainless-read-timeout", "nan"))
    except ValueError:
        client = math.nan
    if not math.isfinite(client) or client <= 0:
        return MAX_WAIT_S
    return max(0.1, min(MAX_WAIT_S, client - min(5.0, max(0.5, client * 0.1))))


def _cancel_quietly(app: State, owner: str, job_id: str) -> Job:
    """Cancel if still running; the job as it stands (it may have finished in the meantime)."""
    with contextlib.suppress(Conflict, NotFound):
        return app.service.cancel(owner, job_id)
    return app.service.get(owner, job_id)


def _read_asset(app: State, asset_id: str) -> bytes:
    found = app.service.assets.read_bytes(asset_id)
    if found is None:
        raise NotFound(f"the result {asset_id} has expired")
    return found[0]
