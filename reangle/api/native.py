"""The native API under /v1: assets, jobs (with SSE events), batches, models, poses; health, metrics."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from reangle.api.caller import AUTHORIZATION_DOC, CallerDep, KeyFirstRoute, Owner, caller_of
from reangle.api.deps import State
from reangle.api.download import DownloadResponse
from reangle.api.errors import json_body
from reangle.api.forms import parse_form
from reangle.api.job_wait import wait_unless_gone
from reangle.api.openapi_errors import NativeError, error_responses
from reangle.api.render import Links, asset_json, iso, job_json, output_records
from reangle.api.state import AppState
from reangle.api.stream_slots import SlotStreamingResponse
from reangle.api.webhooks import MAX_URL_CHARS, webhook_target
from reangle.compose import storage_summary
from reangle.core.assets import upload_name
from reangle.core.camera import all_poses
from reangle.core.inputs import INLINE_IMAGE, decoded_inline, resolve_image
from reangle.core.jobs import JobEvent, JobKind, JobStatus, TimeLimits
from reangle.core.json_values import json_kind
from reangle.core.models import MODELS, not_true_or_false
from reangle.core.service import SubmitRequest, model_spec
from reangle.errors import AssetGone, Forbidden, InvalidInput, NotFound
from reangle.runtime.heartbeat import LISTED_FOR_S

MAX_WAIT_S = 300
SSE_PING_S = 15.0

router = APIRouter(responses=error_responses(NativeError))
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def submission_route(
    path: str, responses: dict[int | str, dict[str, Any]] | None = None
) -> Callable[[Endpoint], Endpoint]:
    """`POST path` answering 202, its key checked before its body is read (see KeyFirstRoute)."""

    def add(endpoint: Endpoint) -> Endpoint:
        router.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            status_code=202,
            tags=["jobs"],
            route_class_override=KeyFirstRoute,
            responses=responses,
        )
        return endpoint

    return add


#: The bodies POST /v1/assets reads itself (it parses them as they arrive, capped).
ASSET_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "data": {"type": "string", "description": "base64 or a data URL"},
                        "url": {"type": "string", "description": "an http(s) URL (or a data URL)"},
                        "name": {"type": "string", "maxLength": 255},
                    },
                    "additionalProperties": False,
                    "description": "data or url, not both",
                }
            },
        },
    }
}
EVENTS_DOC: dict[int | str, dict[str, Any]] = {
    200: {"description": "Server-Sent Events until the job ends", "content": {"text/event-stream": {}}}
}
FILE_DOC: dict[int | str, dict[str, Any]] = {
    200: {"description": "the asset's bytes", "content": {"image/*": {}}},
    206: {"description": "the bytes a `Range: bytes=...` header asked for", "content": {"image/*": {}}},
    302: {"description": "with an object store: a fresh presigned link of the store"},
    416: {"description": "a range past the end (Content-Range: bytes */size)"},
}


WebhookEvent = Literal["completed", "progress"]
N = TypeVar("N")
#: A number of the request envelope: true or false is refused, not read as 1 or 0.
Number = Annotated[N, BeforeValidator(not_true_or_false)]
#: The longest time limit a job may be given: a week, as RunPod allows.
MAX_TIME_LIMIT_S = 7 * 24 * 3600


class TimeLimitsIn(BaseModel):
    """How long the job may take (see TimeLimits): `run_s` each run of it, `total_s` its whole life from
    submission, queue included. A job past either ends failed with the code `timed_out`."""

    model_config = ConfigDict(extra="forbid")

    run_s: Number[float | None] = Field(default=None, gt=0, le=MAX_TIME_LIMIT_S, allow_inf_nan=False)
    total_s: Number[float | None] = Field(default=None, gt=0, le=MAX_TIME_LIMIT_S, allow_inf_nan=False)

    def limits(self) -> TimeLimits | None:
        return TimeLimits(run_s=self.run_s, total_s=self.total_s) if self.run_s or self.total_s else None


#: Longer than any model id: a longer one is refused without being echoed.
MAX_MODEL_CHARS = 200


class JobSubmission(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(max_length=MAX_MODEL_CHARS)
    input: dict[str, Any]
    kind: JobKind = JobKind.EDIT
    priority: Number[int] = Field(default=0, ge=-100, le=100)
    #: POSTed to (signed, Standard Webhooks) when the job reaches what `webhook_events` asks for
    webhook_url: str | None = Field(default=None, max_length=MAX_URL_CHARS)
    #: "completed" (the default: succeeded, failed, canceled) and/or "progress" (status changes, progress)
    webhook_events: list[WebhookEvent] | None = Field(default=None, min_length=1)
    time_limits: TimeLimitsIn | None = None


class BatchItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: dict[str, Any]


class BatchSubmission(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(max_length=MAX_MODEL_CHARS)
    items: list[BatchItem]
    #: the webhook of every job of the batch (each job's events are delivered on their own)
    webhook_url: str | None = Field(default=None, max_length=MAX_URL_CHARS)
    webhook_events: list[WebhookEvent] | None = Field(default=None, min_length=1)
    #: the time limits of every job of the batch
    time_limits: TimeLimitsIn | None = None


# the status read -------------------------------------------------------------------------------------
# First: FastAPI tries routes in order, and clients poll this one more than any other.


@router.get("/v1/jobs/{job_id}", tags=["jobs"], openapi_extra=AUTHORIZATION_DOC)
async def get_job(job_id: str, request: Request) -> dict[str, Any]:
    # The route clients poll reads its caller itself: FastAPI's dependency solving took a sixth of its time.
    caller = caller_of(request, request.headers.get("authorization"))
    job, outputs = caller.app.service.get_with_outputs(caller.owner, job_id)
    return job_json(job, caller.links, {record.id: record for record in outputs})


# assets ----------------------------------------------------------------------------------------------


@router.post("/v1/assets", status_code=201, tags=["assets"], openapi_extra=ASSET_BODY_DOC)
async def upload_asset(request: Request, caller: CallerDep) -> dict[str, Any]:
    """Upload an image: multipart field `file`, or JSON `{"data": base64 or data URL}` or `{"url": ...}`. The
    asset keeps the file's name (multipart), or JSON's `name`."""
    app, who = caller.app, caller.owner  # the body's size is capped as it arrives: BodyLimit, upload_limits
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("multipart/form-data"):
        form = await parse_form(request, max_files=1, max_fields=10)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise InvalidInput("send the image in the multipart field `file`", field="file")
        name = _file_name(upload.filename)
        record = await app.service.assets.ingest_async(who, await upload.read(), field="file", name=name)
    elif content_type.startswith("application/json"):
        body = await _json_body(request)
        field, ref = _asset_source(body)
        name = _json_name(body)
        if field == "url":
            record = await resolve_image(
                ref, who, app.service.assets, app.service.fetch, field="url", name=name
            )
        else:
            data = await decoded_inline(ref, field="data", expected=INLINE_IMAGE)
            record = await app.service.assets.ingest_async(who, data, field="data", name=name)
    else:
        raise InvalidInput(
            f"unsupported content type {content_type or 'none'!r}; send multipart/form-data or JSON",
            field="content-type",
        )
    return asset_json(record, caller.links)


def _file_name(filename: str | None) -> str | None:
    """The name a multipart file was sent with, without the folders some clients send before it."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    return upload_name(name, field="file", label="the file's name") if name else None


def _json_name(body: dict[str, Any]) -> str | None:
    name = body.get("name")
    if name is None:
        return None
    if not isinstance(name, str):
        raise InvalidInput(f"name must be a text (the file's name), not {json_kind(name)}", field="name")
    return upload_name(name, field="name") if name else None


ASSET_JSON_FORMS = 'send {"data": "<base64 or data URL>"} or {"url": "https://..."}'


ASSET_JSON_FIELDS = ("data", "url", "name")


def _asset_source(body: dict[str, Any]) -> tuple[Literal["url", "data"], str]:
    """The one image source a JSON upload names: ("url", what an input image may be: an http(s) URL, a data
    URL or an asset id) or ("data", base64 or a data URL). A null counts as absent; a key other than those
    and `name` is refused (a misspelt `name` would be lost without a word)."""
    unknown = [key for key in body if key not in ASSET_JSON_FIELDS]
    if unknown:
        raise InvalidInput(
            f"body: unknown field {unknown[0]!r}; an upload takes data or url, and name", field=unknown[0]
        )
    given = {name: body[name] for name in ("url", "data") if body.get(name) is not None}
    if len(given) != 1:
        problem = "give either url or data, not both" if given else ASSET_JSON_FORMS
        raise InvalidInput(f"body: {problem}", field="data" if not given else "url", hint=ASSET_JSON_FORMS)
    field: Literal["url", "data"] = "url" if "url" in given else "data"
    value = given[field]
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a text; {ASSET_JSON_FORMS}", field=field)
    scheme, separator, _ = value.partition("://")
    if field == "url" and separator and scheme.lower() not in ("http", "https"):
        raise InvalidInput(
            f"url: only http and https URLs are fetched, not {scheme}://",
            field="url",
            hint='send image bytes as {"data": "<base64 or data URL>"}, or multipart field `file`',
        )
    return field, value


@router.get("/v1/assets/{asset_id}", tags=["assets"])
async def get_asset(asset_id: str, caller: CallerDep) -> dict[str, Any]:
    return asset_json(caller.app.service.assets.get(caller.owner, asset_id), caller.links)


#: A download is only ever an image of its stated type: never sniffed as another type, never a page. It may be
#: cached for an hour, never past its link's expiry.
DOWNLOAD_CACHE_S = 3600
DOWNLOAD_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
}


@router.get("/v1/files/{asset_id}", tags=["assets"], response_class=FileResponse, responses=FILE_DOC)
async def download_file(asset_id: str, app: State, expires: int = 0, sig: str = "") -> Response:
    """The bytes of an asset, by signed link (no auth header needed); with an object store, a redirect to a
    fresh presigned link of the store. `Range: bytes=...` gets those bytes (206)."""
    now = time.time()
    if not sig:
        raise Forbidden(
            "this link is not signed: a download link carries expires= and sig=",
            hint="use an asset's url as the API gives it",
        )
    app.signer.verify(asset_id, expires, sig, now)
    found = app.service.assets.file_for(asset_id)
    if found is not None:
        record, path = found
        try:
            stat_result = await asyncio.to_thread(os.stat, path)
        except FileNotFoundError:  # deleted since: swept, or lost
            raise _gone_or_expired(app, asset_id, now) from None
        cache_s = max(0, min(DOWNLOAD_CACHE_S, int(expires - now)))
        headers = DOWNLOAD_HEADERS | {"Cache-Control": f"private, max-age={cache_s}"}
        return DownloadResponse(path, media_type=record.mime_type, headers=headers, stat_result=stat_result)
    stored = app.store.get_asset(asset_id)  # bytes elsewhere: in an object store?
    if stored is not None and stored.expires_at > now:
        expires_at = min(stored.expires_at, now + app.settings.url_ttl_s)
        url = app.service.assets.blobs.public_url(
            stored.sha256, expires_at=expires_at, mime_type=stored.mime_type
        )
        if url is not None:
            return RedirectResponse(url, status_code=307)
    raise _gone_or_expired(app, asset_id, now)


def _gone_or_expired(app: AppState, asset_id: str, now: float) -> NotFound:
    """Why an asset's bytes cannot be sent: lost from storage while its record lives on (410 gone), or the
    asset expired or was deleted (404)."""
    stored = app.store.get_asset(asset_id)
    if stored is not None and stored.expires_at > now:
        return AssetGone(f"the stored file of asset {asset_id} is gone (lost from storage before it expired)")
    return NotFound(f"asset {asset_id} has expired or was deleted")


# Link checkers and uptime probes ask with HEAD: the same answer without its body (the server drops it).
router.add_api_route("/v1/files/{asset_id}", download_file, methods=["HEAD"], include_in_schema=False)

# jobs ------------------------------------------------------------------------------------------------


@submission_route("/v1/jobs", {200: {"description": "with `?wait=N`: the job, ended within N seconds"}})
async def submit_job(
    submission: JobSubmission,
    request: Request,
    caller: CallerDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S, allow_inf_nan=False)] = 0,
) -> Response:
    """Queue a job; `?wait=N` holds the answer up to N seconds for it to finish (200 if it did)."""
    app, who = caller.app, caller.owner
    webhook = await webhook_target(
        app, request, submission.webhook_url, submission.webhook_events, field="webhook_url"
    )
    job = await app.service.submit(
        who,
        SubmitRequest(
            model=submission.model,
            input=submission.input,
            kind=submission.kind,
            priority=submission.priority,
            idempotency_key=idempotency_key,
            webhook=webhook,
            limits=submission.time_limits.limits() if submission.time_limits else None,
        ),
    )
    if wait > 0:  # a client gone meanwhile is answered the job as queued (nobody reads it)
        job = await wait_unless_gone(request, app.service, who, job.id, wait) or job
    return JSONResponse(job_json(job, caller.links), status_code=200 if job.status.is_terminal else 202)


@router.get("/v1/jobs", tags=["jobs"])
async def list_jobs(
    caller: CallerDep,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
) -> dict[str, Any]:
    jobs, next_cursor = caller.app.service.list_jobs(caller.owner, status=status, limit=limit, cursor=cursor)
    records = output_records(caller.app.store, jobs)
    return {"data": [job_json(job, caller.links, records) for job in jobs], "next_cursor": next_cursor}


@router.post("/v1/jobs/{job_id}/cancel", tags=["jobs"])
async def cancel_job(job_id: str, caller: CallerDep) -> dict[str, Any]:
    """Cancel: a queued job at once; a processing job at its next denoising step (its output is dropped)."""
    return job_json(caller.app.service.cancel(caller.owner, job_id), caller.links)


@router.get("/v1/jobs/{job_id}/events", tags=["jobs"], response_class=StreamingResponse, responses=EVENTS_DOC)
async def job_events(job_id: str, caller: CallerDep) -> StreamingResponse:
    """Server-Sent Events, `status` (the job) and `progress` ({progress, step, steps}), until the job ends.
    429 `too_many_streams` when the key already holds REANGLE_MAX_STREAMS_PER_KEY of them."""
    app, who, make_links = caller.app, caller.owner, caller.links
    app.service.get(who, job_id)  # 404 before the stream starts
    give_back = app.streams.take(who)

    async def stream() -> AsyncIterator[str]:
        async with app.service.subscribe(who, job_id) as events:
            async for event in _with_pings(events):
                if event is None:
                    yield ": ping\n\n"
                else:
                    yield _sse(event, make_links)

    return SlotStreamingResponse(
        stream(),
        give_back=give_back,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _with_pings(events: AsyncIterator[JobEvent]) -> AsyncIterator[JobEvent | None]:
    iterator = aiter(events)
    pending = asyncio.ensure_future(anext(iterator))
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=SSE_PING_S)
            if not done:
                yield None
                continue
            try:
                event = pending.result()
            except StopAsyncIteration:
                return
            yield event
            pending = asyncio.ensure_future(anext(iterator))
    finally:
        pending.cancel()


def _sse(event: JobEvent, make_links: Links) -> str:
    data = job_json(event.job, make_links) if event.job is not None else event.progress
    return f"event: {event.kind}\ndata: {json.dumps(data)}\n\n"


# batches ---------------------------------------------------------------------------------------------


@submission_route("/v1/batches")
async def submit_batch(submission: BatchSubmission, request: Request, caller: CallerDep) -> dict[str, Any]:
    """N (images, prompt) inputs at once: N edit jobs under one batch id, each with its own result."""
    webhook = await webhook_target(
        caller.app, request, submission.webhook_url, submission.webhook_events, field="webhook_url"
    )
    batch_id, jobs = await caller.app.service.submit_batch(
        caller.owner,
        submission.model,
        [item.input for item in submission.items],
        webhook=webhook,
        limits=submission.time_limits.limits() if submission.time_limits else None,
    )
    return {"id": batch_id, "jobs": [job_json(job, caller.links) for job in jobs]}


@router.get("/v1/batches/{batch_id}", tags=["jobs"])
async def get_batch(batch_id: str, caller: CallerDep) -> dict[str, Any]:
    jobs = caller.app.service.batch(caller.owner, batch_id)
    return {"id": batch_id, "jobs": [job_json(job, caller.links) for job in jobs]}


# models, poses, health, metrics ----------------------------------------------------------------------


@router.get("/v1/models", tags=["models"])
async def list_models(who: Owner) -> dict[str, Any]:
    return {"data": [_model_json(model_id) for model_id in MODELS]}


@router.get("/v1/models/{model_id}", tags=["models"])
async def get_model(model_id: str, who: Owner) -> dict[str, Any]:
    if model_id not in MODELS:
        raise NotFound(f"no model {model_id}; see GET /v1/models")
    return _model_json(model_id)


def _model_json(model_id: str) -> dict[str, Any]:
    spec = model_spec(model_id)
    entry = spec.entry
    return {
        "id": spec.id,
        "name": entry.name,
        "description": spec.description,
        "task": entry.task,
        "engine": entry.engine,
        "base": entry.base,
        "loras": [lora.public() for lora in entry.loras],
        "available": spec.unavailable is None,
        "unavailable_reason": spec.unavailable,
        "kinds": [kind.value for kind in spec.inputs],
        "input_schema": spec.input_schema(JobKind.EDIT),
        "input_schemas": {kind.value: spec.input_schema(kind) for kind in spec.inputs},
    }


@router.get("/v1/poses", tags=["models"])
async def list_poses(who: Owner) -> dict[str, Any]:
    return {"data": [pose.to_dict() for pose in all_poses()]}


@router.get("/healthz", tags=["ops"])
async def health(app: State, response: Response) -> dict[str, Any]:
    """This process (its role, engine, where state lives) and the workers heard from lately. 503 with
    `status` "failed" and the `failure` once the job runtime has failed (the server is stopping); 503 with
    `status` "degraded" and the `problem` while this process cannot run jobs: at start until the interrupted
    jobs of the last run are recovered, later while the store refuses its writes."""
    if app.failure is not None:
        response.status_code = 503
        return {"status": "failed", "failure": app.failure, "role": app.settings.role}
    if (problem := app.runtime.store_trouble()) is not None:
        response.status_code = 503
        return {"status": "degraded", "problem": problem, "role": app.settings.role}
    info = app.engine.info
    workers = app.service.store.list_workers(seen_since=time.time() - LISTED_FOR_S)
    return {
        "status": "ok",
        "role": app.settings.role,
        "auth": app.settings.auth,  # whether requests need a key (the studio asks it so)
        "storage": storage_summary(app.settings),
        "workers": [
            {
                "name": worker.name,
                "device": worker.device,
                "engine": worker.engine,
                "models": list(worker.models),
                "started_at": iso(worker.started_at),
                "last_heartbeat": iso(worker.seen_at),
                "job_id": worker.job_id,
            }
            for worker in workers
        ],
        "engine": info.name,
        "demo": info.demo,
        "device": info.device,
        "options": info.options,
        "queue_depth": app.service.queue_depth(),
    }


router.add_api_route("/healthz", health, methods=["HEAD"], include_in_schema=False)  # uptime probes


@router.get("/metrics", tags=["ops"], response_class=Response)
async def metrics(app: State) -> Response:
    return Response(app.metrics.render(), media_type="text/plain; version=0.0.4")


async def _json_body(request: Request) -> dict[str, Any]:
    body = json_body(await request.body(), not_json="body: the request body is not valid JSON")
    if not isinstance(body, dict):
        raise InvalidInput("body: the request body must be a JSON object", field="body")
    return body
