"""The RunPod serverless dialect under /runpod/v2/{endpoint_id}, for the `runpod` Python client.

Point the client here with `runpod.endpoint_url_base = "http://HOST/runpod/v2"` (read when an Endpoint is
built). Request and response shapes live in `runpod_schemas`; this module wires them onto JobService.

- Job ids: a single edit is its core job id (`job_...`); a batch (a `prompt` list, one per image) is its batch
  id (`batch_...`) and answers status/stream/cancel/retry as one job whose status aggregates its items.
- Retry keeps the id: reangle's terminal jobs never change, so `retry/{id}` queues a new core job for each
  unsucceeded item under the idempotency key `runpod-retry:<failed job id>`; every lookup of the id follows
  that chain to the newest attempt.
- Which model an endpoint id serves comes from the `runpod_endpoint_models` setting (default: the camera
  model). Each job remembers the endpoint it was sent to (`Job.source`): status, stream, cancel, retry,
  purge-queue and health see only that endpoint's jobs, never another endpoint's or another dialect's (a job
  stored before reangle recorded endpoints answers by its id on each, and is left out of health and purges).
- `webhook` (top level of /run and /runsync): POSTed once the job (or the whole batch) ends, with the same
  body as `/status`, signed as native webhooks are (docs/webhooks.md). A retried job does not call it again.
- `policy` (top level): `executionTimeout` (ms) bounds each run of the job and `ttl` (ms) its whole life from
  submission; a job past either is stopped at its next step and reported TIMED_OUT (`retry` runs it again
  under the same policy, counted afresh). `lowPriority` is accepted and changes nothing.
- Errors are `{"error": "..."}`; invalid input is 400, as RunPod answers it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import time
from collections import OrderedDict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse

from reangle.api.auth import bearer_token
from reangle.api.deps import State
from reangle.api.errors import json_body
from reangle.api.openapi_errors import MessageError, error_responses
from reangle.api.state import AppState
from reangle.api.webhooks import webhook_target
from reangle.core.jobs import SOURCE_UNRECORDED, Job, JobStatus
from reangle.core.models import CAMERA_EDIT, MODELS
from reangle.core.service import MAX_PAGE, SubmitRequest
from reangle.core.webhooks import RUNPOD
from reangle.dialects import runpod_schemas as rp
from reangle.dialects.base import add_fallback_routes, dialect_route, log_server_error
from reangle.errors import Conflict, InvalidInput, NotFound, QueueFull, ReangleError, Unavailable

log = logging.getLogger("reangle.dialects.runpod")

PREFIX = "/runpod/v2/{endpoint_id}"
MAX_ENDPOINT_ID_CHARS = 100
ENDPOINT_ID = re.compile(rf"[A-Za-z0-9._~-]{{1,{MAX_ENDPOINT_ID_CHARS}}}")
RETRY_KEY = "runpod-retry:"
#: /runsync waits this long by default; `?wait=` (ms) is clamped to RunPod's 1 s .. 300 s (a negative one is
#: refused).
SYNC_WAIT_MS, MIN_WAIT_MS, MAX_WAIT_MS = 90_000, 1_000, 300_000
#: How long /cancel waits for a running job to stop (the sync client gives up after 3 s).
CANCEL_WAIT_S = 2.0
MAX_CHAIN = 1000
#: RunPod ids whose completed output /stream has delivered; bounded, per process (the core has no stream
#: cursor). After a restart a finished job's output is streamed once more, never forever.
_STREAMED: OrderedDict[str, None] = OrderedDict()
_STREAMED_MAX = 10_000


def render_error(request: Request, exc: ReangleError, status: int) -> JSONResponse:
    if status == 422:
        status = 400
    log_server_error(log, request, exc, status)
    headers = {}
    if isinstance(exc, QueueFull | Unavailable):
        headers["Retry-After"] = str(exc.retry_after_s)
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse({"error": exc.with_hint()}, status_code=status, headers=headers)


router = APIRouter(
    route_class=dialect_route(render_error), responses=error_responses(MessageError), tags=["runpod"]
)


async def runpod_owner(app: State, authorization: Annotated[str | None, Header()] = None) -> str:
    """`Authorization: Bearer KEY` (the SDK) or a bare `Authorization: KEY` (RunPod's curl docs)."""
    return app.keys.owner(bearer_token(authorization))


Owner = Annotated[str, Depends(runpod_owner)]


def endpoint_model(app: AppState, endpoint_id: str) -> str:
    """The model an endpoint id serves: REANGLE_RUNPOD_ENDPOINT_MODELS, then the catalog's `runpod` ids, and
    the camera model for any other id (RunPod's clients need an id in the URL, whatever it is)."""
    configured = app.settings.runpod_endpoint_models.get(endpoint_id)
    if configured is not None:
        return configured
    named = (spec.id for spec in MODELS.values() if spec.entry.dialect_id("runpod") == endpoint_id)
    return next(named, CAMERA_EDIT)


def source_of(endpoint_id: str) -> str:
    """What a job sent to this endpoint keeps as its `source`."""
    return f"runpod:{endpoint_id}"


def checked_endpoint_id(endpoint_id: str) -> str:
    """An endpoint id a job may be submitted to (and keep in its `source`), and so the only kind every other
    route takes: letters, digits, `.`, `_`, `-` and `~` (RunPod's own ids are lower-case letters and digits),
    at most MAX_ENDPOINT_ID_CHARS of them."""
    if not ENDPOINT_ID.fullmatch(endpoint_id):
        shown = (
            endpoint_id
            if len(endpoint_id) <= 40
            else f"{endpoint_id[:40]}... ({len(endpoint_id):,} characters)"
        )
        raise InvalidInput(
            f"endpoint id {shown!r} is not one: use letters, digits, '.', '_', '-' or '~', at most "
            f"{MAX_ENDPOINT_ID_CHARS}",
            field="endpoint_id",
        )
    return endpoint_id


# routes --------------------------------------------------------------------------------------------------


@router.post(PREFIX + "/run")
async def run(endpoint_id: str, request: Request, app: State, who: Owner) -> dict[str, Any]:
    runpod_id, jobs = await _submit(app, who, endpoint_id, request)
    return {"id": runpod_id, "status": rp.runpod_status(jobs)}


#: `?ttl=` (ms): how long RunPod keeps a job's result; accepted and not used (reangle keeps results for
#: REANGLE_RESULT_TTL_S), but a value that is not a count of milliseconds is refused.
ResultTtl = Annotated[int | None, Query(ge=0)]


@router.post(PREFIX + "/runsync")
async def runsync(
    endpoint_id: str,
    request: Request,
    app: State,
    who: Owner,
    wait: Annotated[int, Query(ge=0)] = SYNC_WAIT_MS,
    ttl: ResultTtl = None,
) -> dict[str, Any]:
    """Wait up to `?wait=` ms (default 90 s) for the job; if it is not done, answer its status to poll."""
    runpod_id, jobs = await _submit(app, who, endpoint_id, request)
    deadline = time.monotonic() + min(max(wait, MIN_WAIT_MS), MAX_WAIT_MS) / 1000
    jobs = await _wait_all(app, who, jobs, deadline)
    return await _status_json(app, who, runpod_id, jobs)


@router.get(PREFIX + "/status/{job_id}")
async def status(
    endpoint_id: str, job_id: str, app: State, who: Owner, ttl: ResultTtl = None
) -> dict[str, Any]:
    """The job (also by POST)."""
    return await _status_json(app, who, job_id, _lookup(app, who, endpoint_id, job_id))


@router.get(PREFIX + "/stream/{job_id}")
async def stream(endpoint_id: str, job_id: str, app: State, who: Owner) -> JSONResponse:
    """Chunks not yet delivered: the output once, when the job completes; then always `"stream": []`."""
    jobs = _lookup(app, who, endpoint_id, job_id)
    body = rp.status_body(job_id, jobs)
    if body["status"] == rp.CANCELLED:  # the SDK's stream() would poll a cancelled job forever
        return JSONResponse({"error": f"job {job_id} was cancelled"}, status_code=410)
    chunks = []
    if body["status"] == rp.COMPLETED and job_id not in _STREAMED:
        _STREAMED[job_id] = None  # marked before the read, so two concurrent calls cannot both deliver it
        while len(_STREAMED) > _STREAMED_MAX:
            _STREAMED.popitem(last=False)
        try:
            chunks.append({"output": (await _status_json(app, who, job_id, jobs))["output"]})
        except NotFound:
            _STREAMED.pop(job_id, None)
            raise
    return JSONResponse({**body, "stream": chunks})


# POST as well, as the SDK's local test server takes them; each method its own operation in /openapi.json
router.add_api_route(PREFIX + "/status/{job_id}", status, methods=["POST"], name="status_post")
router.add_api_route(PREFIX + "/stream/{job_id}", stream, methods=["POST"], name="stream_post")


@router.post(PREFIX + "/cancel/{job_id}")
async def cancel(endpoint_id: str, job_id: str, app: State, who: Owner) -> dict[str, Any]:
    """Cancel every unfinished item, wait briefly for running ones to stop, and answer the status."""
    jobs = _lookup(app, who, endpoint_id, job_id)
    for job in jobs:
        if not job.status.is_terminal:
            _cancel_quietly(app, who, job)
    jobs = await _wait_all(app, who, jobs, time.monotonic() + CANCEL_WAIT_S)
    return {"id": job_id, "status": rp.runpod_status(jobs)}


@router.post(PREFIX + "/retry/{job_id}")
async def retry(endpoint_id: str, job_id: str, app: State, who: Owner) -> dict[str, Any]:
    """Queue a FAILED or TIMED_OUT job again under the same id: a new attempt of every unsucceeded item."""
    jobs = _lookup(app, who, endpoint_id, job_id)
    current = rp.runpod_status(jobs)
    if current not in rp.RETRYABLE:
        raise Conflict(f"job {job_id} is {current}; only FAILED or TIMED_OUT jobs can be retried")
    retried = []
    for job in jobs:
        if job.status != JobStatus.SUCCEEDED:
            request = SubmitRequest(
                model=job.model,
                input=job.input,
                kind=job.kind,
                priority=job.priority,
                idempotency_key=RETRY_KEY + job.id,
                source=job.source,
                limits=job.limits,
            )
            job = await app.service.submit(who, request)
        retried.append(job)
    return {"id": job_id, "status": rp.runpod_status(retried)}


@router.post(PREFIX + "/purge-queue")
async def purge_queue(endpoint_id: str, app: State, who: Owner) -> dict[str, Any]:
    """Cancel this key's queued jobs on this endpoint, counted as RunPod counts them (a batch is one job);
    running jobs go on, a batch with an item under way or done included."""
    checked_endpoint_id(endpoint_id)
    queued: dict[str, list[Job]] = {}
    for job in await _all_jobs(app, who, JobStatus.QUEUED):
        if job.source == source_of(endpoint_id):
            queued.setdefault(job.batch_id or job.id, []).append(job)
    removed = 0
    for runpod_id, items in queued.items():
        if runpod_id.startswith("batch_"):
            batch = await asyncio.to_thread(_lookup, app, who, endpoint_id, runpod_id)
            if any(item.status != JobStatus.QUEUED for item in batch):
                continue
        canceled = [_cancel_quietly(app, who, job).status == JobStatus.CANCELED for job in items]
        removed += any(canceled)
    return {"removed": removed, "status": "completed"}


@router.get(PREFIX + "/health")
async def health(endpoint_id: str, app: State, who: Owner) -> dict[str, Any]:
    """This key's job counts on this endpoint (each batch item counts, by its newest attempt), and the local
    worker."""
    checked_endpoint_id(endpoint_id)
    jobs, retries = await asyncio.to_thread(_newest_attempts_on, app, who, endpoint_id)
    running = app.service.counts().get(JobStatus.PROCESSING, 0) > 0
    return rp.health_body(jobs, running=running, retries=retries)


add_fallback_routes(router, "/runpod", base_url="http://HOST/runpod/v2 (runpod.endpoint_url_base)")


# helpers -------------------------------------------------------------------------------------------------


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        raise InvalidInput('the body is empty; send {"input": {...}}', field="body")
    return json_body(raw, not_json="the request body is not valid JSON")


async def _submit(app: AppState, who: str, endpoint_id: str, request: Request) -> tuple[str, list[Job]]:
    plan = rp.translate(await _json_body(request), endpoint_model(app, checked_endpoint_id(endpoint_id)))
    webhook = await webhook_target(app, request, plan.webhook, field="webhook", flavor=RUNPOD)
    source = source_of(endpoint_id)
    if not plan.batch:
        submit = SubmitRequest(
            model=plan.model, input=plan.inputs[0], webhook=webhook, source=source, limits=plan.limits
        )
        try:
            job = await app.service.submit(who, submit)
        except InvalidInput as exc:
            raise _as_sent(exc, plan) from None
        return job.id, [job]
    try:
        batch_id, jobs = await app.service.submit_batch(
            who, plan.model, plan.inputs, webhook=webhook, source=source, limits=plan.limits
        )
    except InvalidInput as exc:
        raise _as_sent(exc, plan) from None
    return batch_id, jobs


def _as_sent(exc: InvalidInput, plan: rp.Translated) -> InvalidInput:
    """An error about an image named as the client sent it: `input.image` when it sent one image so,
    `input.images.1` for a batch item, not `items.1.input.images.0`."""
    if plan.single_image:
        match = re.fullmatch(r"input\.images\.0(.*)", exc.field or "")
        if match is None:
            return exc
        field = f"input.image{match[1]}"
        return type(exc)(exc.message.replace(exc.field or "", field, 1), field=field, hint=exc.hint)
    match = re.fullmatch(r"items\.(\d+)\.input\.images\.0(.*)", exc.field or "")
    if match is None:
        return exc
    field = f"input.images.{match[1]}{match[2]}"
    message = re.sub(r"^items\.\d+: ", "", exc.message).replace(exc.field or "", field, 1)
    return type(exc)(message.replace(f"input.images.0{match[2]}", field, 1), field=field, hint=exc.hint)


def _lookup(app: AppState, who: str, endpoint_id: str, runpod_id: str) -> list[Job]:
    """The newest attempt of the job (or of each batch item) behind a RunPod id, on this endpoint."""
    checked_endpoint_id(endpoint_id)
    try:
        jobs = (
            app.service.batch(who, runpod_id)
            if runpod_id.startswith("batch_")
            else [app.service.get(who, runpod_id)]
        )
    except NotFound:
        raise NotFound(f"no job {runpod_id} (unknown, expired, or another key's)") from None
    # a job an older reangle stored has no endpoint: its id answers on each, as it did then
    if any(job.source not in (source_of(endpoint_id), SOURCE_UNRECORDED) for job in jobs):
        raise NotFound(f"no job {runpod_id} on endpoint {endpoint_id}")
    return [_newest_attempt(app, who, job) for job in jobs]


def _newest_attempt(app: AppState, who: str, job: Job) -> Job:
    for _ in range(MAX_CHAIN):
        found = app.service.job_by_idempotency_key(who, RETRY_KEY + job.id)
        if found is None:
            break
        job = found
    return job


def _newest_attempts_on(app: AppState, who: str, endpoint_id: str) -> tuple[list[Job], set[str]]:
    """The key's jobs on this endpoint, each by its newest attempt (a job /retry superseded is left out), and
    the ids of the attempts /retry queued. Only an unsucceeded job can have been retried, so only those are
    looked up."""
    jobs = [job for job in _read_all_jobs(app, who, None) if job.source == source_of(endpoint_id)]
    superseded, retries = set(), set()
    for job in jobs:
        if job.status in (JobStatus.FAILED, JobStatus.CANCELED):
            attempt = app.service.job_by_idempotency_key(who, RETRY_KEY + job.id)
            if attempt is not None:
                superseded.add(job.id)
                retries.add(attempt.id)
    return [job for job in jobs if job.id not in superseded], retries


async def _wait_all(app: AppState, who: str, jobs: list[Job], deadline: float) -> list[Job]:
    done = []
    for job in jobs:
        left = deadline - time.monotonic()
        if not job.status.is_terminal and left > 0:
            job = await app.service.wait(who, job.id, left)
        done.append(job)
    return done


async def _status_json(app: AppState, who: str, runpod_id: str, jobs: list[Job]) -> dict[str, Any]:
    images: dict[str, str] = {}
    if rp.runpod_status(jobs) == rp.COMPLETED:
        ids = rp.output_asset_ids(jobs)
        encoded = await asyncio.to_thread(_read_base64, app, who, ids, runpod_id)
        images = dict(zip(ids, encoded, strict=True))
    return rp.status_body(runpod_id, jobs, images.__getitem__)


def _read_base64(app: AppState, who: str, asset_ids: list[str], runpod_id: str) -> list[str]:
    out = []
    for asset_id in asset_ids:
        try:
            record = app.service.assets.get(who, asset_id)
            data = app.service.assets.blobs.read(record.sha256)
        except (NotFound, OSError):
            raise NotFound(f"the results of job {runpod_id} have expired") from None
        out.append(base64.b64encode(data).decode("ascii"))
    return out


def _cancel_quietly(app: AppState, who: str, job: Job) -> Job:
    """Cancel `job`; one that finished meanwhile stays as it ended."""
    try:
        return app.service.cancel(who, job.id)
    except (Conflict, NotFound):
        return job


async def _all_jobs(app: AppState, who: str, status: JobStatus | None) -> list[Job]:
    """Every job of the key (with `status`): read in a worker thread, as a key may have many thousands."""
    return await asyncio.to_thread(_read_all_jobs, app, who, status)


def _read_all_jobs(app: AppState, who: str, status: JobStatus | None) -> list[Job]:
    jobs: list[Job] = []
    cursor: str | None = None
    while True:
        page, cursor = app.service.list_jobs(who, status=status, limit=MAX_PAGE, cursor=cursor)
        jobs += page
        if cursor is None:
            return jobs
