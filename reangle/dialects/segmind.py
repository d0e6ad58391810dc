"""The Segmind dialect: `segmind` (1.3.0) clients pointed at `http://HOST/segmind/v1`.

    POST /segmind/v1/{slug}                      sync: waits, answers the image bytes (or {"image": base64})
    POST /segmind/v2/{slug}                      async: {request_id, status, status_url, response_url}
    GET  /segmind/v2/requests/{id}/status        {request_id, status, metrics} (+ error; FAILED is HTTP 422)
    GET  /segmind/v2/requests/{id}               {request_id, status, error, metrics, output}

One slug, `qwen-image-edit-plus-multiple-angle`: the camera move is written in the prompt, parsed by
`parse_camera_text` into a snapped pose; the rest of the prompt is the instruction. Auth is `x-api-key`;
errors are `{"error": "<message>"}`, naming Segmind's fields (`image_2`, `lora_3_url`) where the core names
its own (`input.images.1`, `input.loras.0.url`). Statuses: queued QUEUED, processing PROCESSING, succeeded
COMPLETED, failed and canceled FAILED (a canceled job's error is "canceled").

The core's `loras` list holds only the LoRA fields a request filled, so `loras.0` is `lora_2_url` or
`lora_3_url` depending on the request: the status and result URLs of a job with LoRAs carry
`?loras=lora_3_url` (the Segmind field of each native LoRA, in order), so that a job's error, reported on a
later poll, names the field the caller sent. Without it, `loras.0` is `lora_2_url` and `loras.1` `lora_3_url`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, Response

from reangle.api.deps import LinkMaker, State
from reangle.api.errors import json_body
from reangle.api.openapi_errors import MessageError, error_responses
from reangle.api.state import AppState
from reangle.core.camera import DEFAULT_POSE
from reangle.core.camera_text import parse_camera_text
from reangle.core.edit import ASPECT_RATIOS, MATCH_INPUT
from reangle.core.jobs import Job, JobStatus
from reangle.core.models import CAMERA_EDIT, INSTRUCTION_EDIT, MODELS, catalog_defaulted
from reangle.core.service import STOPPING, JobService, SubmitRequest
from reangle.dialects.base import add_fallback_routes, dialect_route, log_server_error
from reangle.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    QueueFull,
    ReangleError,
    Unauthorized,
    Unavailable,
)

log = logging.getLogger("reangle.dialects.segmind")

SLUG = "qwen-image-edit-plus-multiple-angle"
#: How long a v1 (sync) request waits for its job before answering 504 and canceling it.
SYNC_WAIT_S = 300.0
#: How often a waiting v1 request checks whether its client has gone away.
DISCONNECT_POLL_S = 0.25

DEFAULT_SEED = 87568756
MAX_SEED = 2_147_483_647
FORMATS = ("jpeg", "png", "webp")
MATCH_INPUT_IMAGE = "match_input_image"
SEGMIND_ASPECT_RATIOS = (*ASPECT_RATIOS, MATCH_INPUT_IMAGE)
IMAGE_FIELDS = ("image_1", "image_2", "image_3")
EXTRA_LORA_FIELDS = ("lora_2_url", "lora_3_url")
PARAMETERS = (
    "prompt",
    *IMAGE_FIELDS,
    "aspect_ratio",
    "lora",
    *EXTRA_LORA_FIELDS,
    "seed",
    "image_format",
    "quality",
    "base64",
)

STATUS_NAMES = {
    JobStatus.QUEUED: "QUEUED",
    JobStatus.PROCESSING: "PROCESSING",
    JobStatus.SUCCEEDED: "COMPLETED",
    JobStatus.FAILED: "FAILED",
    JobStatus.CANCELED: "FAILED",
}
CANCELED_ERROR = "canceled"


# errors ----------------------------------------------------------------------------------------------

_IMAGE_FIELD = re.compile(r"\binput\.images\.(\d+)")
#: A request LoRA's native path, with or without `input.` (`input.loras.1.url`, `loras.0.scale`): not inside
#: another path (a catalog model's own `catalog.<id>.loras.0.url`) or a URL (`https://h/loras.0.url`).
_LORA_FIELD = re.compile(r"(?<![^\s'\"(\[])(?:input\.)?loras\.(\d+)(?:\.\w+)?")
_INPUT_PREFIX = re.compile(r"\binput\.")


def segmind_text(message: str, lora_fields: Sequence[str] = EXTRA_LORA_FIELDS) -> str:
    """`message` with native field names written as Segmind's: `input.images.0` as `image_1`, and the LoRA
    at `loras.N` (any of its keys) as the Segmind field it came from, `lora_fields[N]`."""
    message = _IMAGE_FIELD.sub(lambda m: f"image_{int(m.group(1)) + 1}", message)
    message = _LORA_FIELD.sub(lambda m: _lora_field(m, lora_fields), message)
    return _INPUT_PREFIX.sub("", message)


def _lora_field(match: re.Match[str], lora_fields: Sequence[str]) -> str:
    index = int(match.group(1))
    return lora_fields[index] if index < len(lora_fields) else match.group(0)


def segmind_message(exc: ReangleError, lora_fields: Sequence[str] = EXTRA_LORA_FIELDS) -> str:
    """The error's message in Segmind's field names (`image_1`, not `input.images.0`)."""
    return segmind_text(exc.message, lora_fields)


def in_segmind_terms(exc: ReangleError, lora_fields: Sequence[str]) -> ReangleError:
    """The error naming the request's own Segmind fields, for errors raised before the renderer (which maps
    LoRAs by position) sees them; `exc` itself when it names none of the core's."""
    message = segmind_message(exc, lora_fields)
    if message == exc.message:
        return exc
    translated = exc.reworded(message)
    if isinstance(translated, InvalidInput) and translated.field:
        translated.field = segmind_text(translated.field, lora_fields)
    return translated


def render_error(request: Request, exc: ReangleError, status: int) -> Response:
    """`{"error": "<message> (<hint>)"}`: Segmind's shape has no place of its own for the hint; invalid
    parameters are 400 (reangle's 422), other codes as reangle's."""
    if status == 422:
        status = 400
    log_server_error(log, request, exc, status)
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, QueueFull | Unavailable) else None
    message = segmind_message(exc) + (f" ({segmind_text(exc.hint, EXTRA_LORA_FIELDS)})" if exc.hint else "")
    return JSONResponse({"error": message}, status_code=status, headers=headers)


router = APIRouter(
    route_class=dialect_route(render_error), responses=error_responses(MessageError), tags=["segmind"]
)


async def owner(app: State, x_api_key: Annotated[str | None, Header()] = None) -> str:
    try:
        return app.keys.owner(x_api_key)
    except Unauthorized:
        problem = "is not valid" if x_api_key else "is missing"
        raise Unauthorized(f"the API key {problem}; send it in the x-api-key header") from None


Owner = Annotated[str, Depends(owner)]


# requests --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SegmindRequest:
    """A Segmind request body translated: the native input, and how the caller wants the image back."""

    input: dict[str, Any]
    base64: bool
    #: The camera model; the instruction model (no angle LoRA) for a prompt that names no camera move.
    model: str = CAMERA_EDIT
    #: The Segmind field of each entry of `input["loras"]`, in order (`("lora_3_url",)`).
    lora_fields: tuple[str, ...] = ()


def slug_model(slug: str) -> str | None:
    """The catalog camera model an operator serves under `slug`; None for Segmind's own slug (whose prompts
    without a camera move run the instruction model); NotFound for any other."""
    if slug == SLUG:
        return None
    named = next((spec.id for spec in MODELS.values() if spec.entry.dialect_id("segmind") == slug), None)
    if named is None:
        served = [SLUG, *(spec.entry.dialect_id("segmind") or "" for spec in MODELS.values())]
        shown = ", ".join(dict.fromkeys(name for name in served if name))
        raise NotFound(f"model {slug!r} is not served here; this server runs {shown}")
    return named


def translate(body: Any, camera_model: str | None = None) -> SegmindRequest:
    """A Segmind request body as the input of the native camera-edit model (or InvalidInput); with
    `camera_model` (a catalog model's slug), that model runs every request, at the default pose when the
    prompt names no camera move. Segmind's own defaults (image_format, seed, quality, aspect_ratio, the
    front view's axes) are sent only for fields the model's catalog entry gives no default (see
    `catalog_defaulted`), and `num_outputs` is 1 over an entry's default: Segmind answers one image."""
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object", field="body")
    for name in body:
        if re.fullmatch(r"image_\d+", name) and name not in IMAGE_FIELDS:
            raise InvalidInput(f"at most 3 images (image_1, image_2, image_3); got {name}", field=name)
        if name not in PARAMETERS:
            raise InvalidInput(f"unknown parameter {name!r}; accepted: {', '.join(PARAMETERS)}", field=name)

    prompt = body.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise InvalidInput(f"prompt must be a string, got {prompt!r}", field="prompt")
    if not prompt or not prompt.strip():
        raise InvalidInput("prompt is required: describe the camera move, e.g. 'rotate 90 degrees right'")
    images = []
    for name in IMAGE_FIELDS:
        value = body.get(name)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise InvalidInput(f"{name} must be an http(s) URL, a data URL or base64 image data", field=name)
        images.append(value)
    if not images:
        raise InvalidInput("image_1 is required: an http(s) URL, a data URL or base64 image data")

    lora = body.get("lora")
    if lora not in (None, "multiple_angle"):
        raise InvalidInput(f"lora must be 'multiple_angle', got {lora!r}", field="lora")
    loras, lora_fields = [], []
    for name in EXTRA_LORA_FIELDS:
        url = body.get(name)
        if url in (None, ""):
            continue
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InvalidInput(f"{name} must be an http(s) URL of a .safetensors LoRA", field=name)
        loras.append({"url": url})
        lora_fields.append(name)

    aspect_ratio = _choice(body, "aspect_ratio", SEGMIND_ASPECT_RATIOS, MATCH_INPUT_IMAGE)
    image_format = _choice(body, "image_format", FORMATS, "webp")
    seed = _integer(body, "seed", -1, MAX_SEED, DEFAULT_SEED)
    quality = _integer(body, "quality", 1, 100, 95)
    want_base64 = body.get("base64", False)
    if not isinstance(want_base64, bool):
        raise InvalidInput(f"base64 must be true or false, got {want_base64!r}", field="base64")

    camera = parse_camera_text(prompt)
    no_move = camera.pose is None and camera_model is None  # the prompt as written, on the instruction model
    model = INSTRUCTION_EDIT if no_move else camera_model or CAMERA_EDIT
    defaulted = catalog_defaulted(model)
    common: dict[str, Any] = {"images": images}
    own = {  # native field: (Segmind field, value)
        "seed": ("seed", None if seed == -1 else seed),
        "aspect_ratio": ("aspect_ratio", MATCH_INPUT if aspect_ratio == MATCH_INPUT_IMAGE else aspect_ratio),
        "output_format": ("image_format", image_format),
        "quality": ("quality", quality),
    }
    for native_name, (name, value) in own.items():
        if body.get(name) is not None or native_name not in defaulted:  # else: the model's own default
            common[native_name] = value
    if "num_outputs" in defaulted:  # Segmind answers one image: one, whatever the model's default
        common["num_outputs"] = 1
    if loras:
        common["loras"] = loras
    lora_fields_sent = tuple(lora_fields)
    if no_move:
        return SegmindRequest(
            input={**common, "prompt": prompt}, base64=want_base64, model=model, lora_fields=lora_fields_sent
        )
    pose = camera.pose or DEFAULT_POSE
    native = {**common}
    if camera.instruction.strip() or "prompt" not in defaulted:
        native["prompt"] = camera.instruction
    axes = {"azimuth": pose.azimuth_deg, "elevation": pose.elevation_deg, "distance": pose.distance_factor}
    for axis, value in axes.items():
        if axis in camera.axes or axis not in defaulted:  # an axis the prompt left: the model's own default
            native[axis] = value
    return SegmindRequest(input=native, base64=want_base64, model=model, lora_fields=lora_fields_sent)


def _choice(body: dict[str, Any], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = body.get(name)
    if value is None:
        return default
    if value not in allowed:
        raise InvalidInput(f"{name} must be one of {', '.join(allowed)}; got {value!r}", field=name)
    return str(value)


def _integer(body: dict[str, Any], name: str, low: int, high: int, default: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"{name} must be an integer from {low} to {high}, got {value!r}", field=name)
    return value


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return {}
    return json_body(raw, not_json="the request body is not valid JSON")


# responses -------------------------------------------------------------------------------------------

#: Maps an output asset id to what `output` shows for it (a URL or base64); None once it has expired.
OutputRef = Callable[[str], str | None]


def request_urls(
    root: str, request_id: str, *, base64: bool, lora_fields: Sequence[str] = ()
) -> dict[str, str]:
    """Absolute status and result URLs under the v2 root (`http://H/segmind/v2`). What the caller asked for
    rides in their queries, so that no server state has to remember it: the result URL carries
    `?base64=true` for base64 output, and both carry `loras=` with the Segmind field of each LoRA."""
    loras = [f"loras={','.join(lora_fields)}"] if lora_fields else []
    status_query = "&".join(loras)
    response_query = "&".join([*(["base64=true"] if base64 else []), *loras])
    return {
        "status_url": f"{root}/requests/{request_id}/status" + (f"?{status_query}" if status_query else ""),
        "response_url": f"{root}/requests/{request_id}" + (f"?{response_query}" if response_query else ""),
    }


def lora_fields_from_query(value: str | None) -> tuple[str, ...]:
    """The `loras=` query of a status or result URL as Segmind fields; the positional default (`loras.0` is
    lora_2_url) when absent or not one this server wrote."""
    if not value:
        return EXTRA_LORA_FIELDS
    fields = tuple(part.strip() for part in value.split(","))
    if len(set(fields)) != len(fields) or not set(fields) <= set(EXTRA_LORA_FIELDS):
        return EXTRA_LORA_FIELDS
    return fields


def submit_json(job: Job, root: str, *, base64: bool, lora_fields: Sequence[str] = ()) -> dict[str, Any]:
    return {
        "request_id": job.id,
        "status": STATUS_NAMES[job.status],
        **request_urls(root, job.id, base64=base64, lora_fields=lora_fields),
    }


def metrics(job: Job) -> dict[str, float]:
    if job.started_at is None or job.finished_at is None:
        return {}
    return {"inference_time": round(max(0.0, job.finished_at - job.started_at), 3)}


def error_text(job: Job, lora_fields: Sequence[str] = EXTRA_LORA_FIELDS) -> str | None:
    """A failed job's error in Segmind's field names (`lora_fields`: the Segmind field of each LoRA)."""
    if job.status == JobStatus.CANCELED:
        return CANCELED_ERROR
    if job.status == JobStatus.FAILED:
        return segmind_text(job.error.message, lora_fields) if job.error else "the request failed"
    return None


def status_json(job: Job, lora_fields: Sequence[str] = EXTRA_LORA_FIELDS) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) of the status URL: 422 once FAILED, 200 otherwise."""
    body: dict[str, Any] = {"request_id": job.id, "status": STATUS_NAMES[job.status], "metrics": metrics(job)}
    error = error_text(job, lora_fields)
    if error is not None:
        body["error"] = error
    return (422 if error is not None else 200), body


def result_json(
    job: Job, output_ref: OutputRef, lora_fields: Sequence[str] = EXTRA_LORA_FIELDS
) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) of the result URL. `output`: the image's URL (or base64) when COMPLETED (a list
    only for a job of several images, which no Segmind request asks), null before it ends or if it failed."""
    error = error_text(job, lora_fields)
    output: Any = None
    if job.status == JobStatus.SUCCEEDED:
        refs = [output_ref(item.asset_id) for item in job.outputs]
        if not refs or None in refs:
            raise NotFound(f"the result of request {job.id} has expired")
        output = refs[0] if len(refs) == 1 else refs
    body = {
        "request_id": job.id,
        "status": STATUS_NAMES[job.status],
        "error": error,
        "metrics": metrics(job),
        "output": output,
    }
    return (422 if error is not None else 200), body


def _v2_root(links: LinkMaker) -> str:
    return f"{links.base_url}/segmind/v2"


def _job(app: AppState, who: str, request_id: str) -> Job:
    try:
        return app.service.get(who, request_id)
    except NotFound:
        raise NotFound(f"no request {request_id} (unknown, expired, or another key's)") from None


async def _submit(service: JobService, who: str, parsed: SegmindRequest) -> Job:
    try:
        return await service.submit(who, SubmitRequest(model=parsed.model, input=parsed.input))
    except ReangleError as exc:
        translated = in_segmind_terms(exc, parsed.lora_fields)
        if translated is exc:
            raise
        raise translated from None


async def _output_bytes(app: AppState, asset_id: str) -> tuple[bytes, str] | None:
    return await asyncio.to_thread(app.service.assets.read_bytes, asset_id)


async def _base64_refs(app: AppState, job: Job) -> dict[str, str | None]:
    refs: dict[str, str | None] = {}
    for item in job.outputs:
        found = await _output_bytes(app, item.asset_id)
        refs[item.asset_id] = base64.b64encode(found[0]).decode() if found else None
    return refs


# routes ----------------------------------------------------------------------------------------------


@router.post("/segmind/v1/{slug}", response_class=Response)
async def run_sync(slug: str, request: Request, app: State, who: Owner) -> Response:
    """Run and wait: the image bytes (Content-Type per the format made: image_format, or the catalog
    model's output_format), or `{"image": base64}`."""
    parsed = translate(await _json_body(request), slug_model(slug))
    job = await _submit(app.service, who, parsed)
    finished = await _wait_or_cancel(request, app, who, job)
    if finished is None:  # the client went away; nobody reads this
        return Response(status_code=499)
    if not finished.status.is_terminal:
        if app.service.stopping:
            raise Unavailable(STOPPING)
        return JSONResponse(
            {
                "error": f"the request did not finish within {SYNC_WAIT_S:g} s and was canceled; "
                "use the v2 async API (client.run / submit_async) for long jobs"
            },
            status_code=504,
        )
    if finished.status != JobStatus.SUCCEEDED:
        _, body = status_json(finished, parsed.lora_fields)
        return JSONResponse(body, status_code=422)
    found = await _output_bytes(app, finished.outputs[0].asset_id) if finished.outputs else None
    if found is None:
        raise ReangleError(f"the result of job {finished.id} is missing")
    data, mime = found
    if parsed.base64:
        return JSONResponse({"image": base64.b64encode(data).decode()})
    return Response(content=data, media_type=mime)


async def _wait_or_cancel(request: Request, app: AppState, who: str, job: Job) -> Job | None:
    """The job once terminal, or as it stands after SYNC_WAIT_S (then canceled); None, the job canceled,
    if the client disconnects first."""
    waiter = asyncio.ensure_future(app.service.wait(who, job.id, SYNC_WAIT_S))
    try:
        while True:
            done, _ = await asyncio.wait({waiter}, timeout=DISCONNECT_POLL_S)
            if done:
                break
            if await request.is_disconnected():
                _cancel_quietly(app, who, job.id)
                return None
    except asyncio.CancelledError:
        _cancel_quietly(app, who, job.id)
        raise
    finally:
        waiter.cancel()
    finished = waiter.result()
    if finished.status.is_terminal:
        return finished
    _cancel_quietly(app, who, job.id)
    latest = app.service.get(who, job.id)  # it may have finished just before the cancel
    return latest if latest.status == JobStatus.SUCCEEDED else finished


def _cancel_quietly(app: AppState, who: str, job_id: str) -> None:
    with contextlib.suppress(Conflict, NotFound):  # it finished meanwhile, or was swept
        app.service.cancel(who, job_id)


@router.post("/segmind/v2/{slug}")
async def submit_async(slug: str, request: Request, app: State, who: Owner, links: LinkMaker) -> JSONResponse:
    """Queue: `{request_id, status: QUEUED, status_url, response_url}`, both URLs absolute."""
    parsed = translate(await _json_body(request), slug_model(slug))
    job = await _submit(app.service, who, parsed)
    return JSONResponse(
        submit_json(job, _v2_root(links), base64=parsed.base64, lora_fields=parsed.lora_fields)
    )


@router.get("/segmind/v2/requests/{request_id}/status")
async def request_status(
    request_id: str, app: State, who: Owner, loras: Annotated[str | None, Query()] = None
) -> JSONResponse:
    code, body = status_json(_job(app, who, request_id), lora_fields_from_query(loras))
    return JSONResponse(body, status_code=code)


@router.get("/segmind/v2/requests/{request_id}")
async def request_result(
    request_id: str,
    app: State,
    who: Owner,
    links: LinkMaker,
    as_base64: Annotated[bool, Query(alias="base64")] = False,
    loras: Annotated[str | None, Query()] = None,
) -> JSONResponse:
    """The result body; `?base64=true` (set on the response_url when asked for) puts base64 in `output`."""
    job = _job(app, who, request_id)
    refs = await _base64_refs(app, job) if as_base64 and job.status == JobStatus.SUCCEEDED else None
    output_ref = refs.get if refs is not None else links.asset_url_by_id
    code, body = result_json(job, output_ref, lora_fields_from_query(loras))
    return JSONResponse(body, status_code=code)


add_fallback_routes(router, "/segmind", base_url="http://HOST/segmind/v1")
