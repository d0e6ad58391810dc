"""The Scenario dialect under /scenario/v1: scenario-sdk's `Scenario(base_url="http://HOST/scenario/v1")`.

Auth: `Basic base64(label:KEY)` (the client's api_secret is the reangle API key; its api_key is a free label)
or `Bearer KEY`. Errors: `{"error": message, "code": slug, "hint"?}`, invalid input as 400; a 5xx answer to a
POST carries `x-should-retry: false`, since the client retries every 5xx, job-creating POSTs included.
The translations themselves are pure functions in `scenario_schemas`.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, Response

from reangle.api.auth import OTHER_SCHEMES
from reangle.api.deps import LinkMaker, State
from reangle.api.errors import json_body
from reangle.api.openapi_errors import ScenarioError, error_responses
from reangle.api.render import Links
from reangle.api.state import AppState
from reangle.core.assets import upload_name
from reangle.core.images import MIME_TYPES, OutputFormat, encode_image
from reangle.core.inputs import INLINE_IMAGE, decoded_inline
from reangle.core.jobs import Job, JobKind
from reangle.core.json_values import json_kind
from reangle.core.ports import AssetKey, AssetRecord
from reangle.core.service import SubmitRequest, model_spec
from reangle.dialects import scenario_schemas as schemas
from reangle.dialects.base import add_fallback_routes, dialect_route
from reangle.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    QueueFull,
    ReangleError,
    TooLarge,
    Unauthorized,
    Unavailable,
)

PREFIX = "/scenario/v1"
FLAGS = {"true": True, "1": True, "": True, "false": False, "0": False}
#: `?dryRun=` also takes `api`, scenario-sdk's other value (`Literal["true", "api"]`: an API tier estimate).
DRY_RUN_FLAGS = {**FLAGS, "api": True}
DRY_RUN_HINT = "dryRun=api is a dry run too"
#: Scenario's answer to `?dryRun=`: an estimate, no job.
DRY_RUN_STATUS = 269
#: GET /assets/{id} looks for the job that made an asset among this many of the owner's latest successes.
#: How long a cancel of a running job waits for the run to stop before answering it as it stands.
CANCEL_WAIT_S = 10.0
AUTH_HINT = "send Basic auth with your reangle API key as the secret (api_secret=KEY), or Bearer KEY"
#: Scenario statuses reangle never reports; filtering on them finds nothing.
UNREPORTED_STATUSES = frozenset({"pending", "warming-up", "finalizing"})

log = logging.getLogger("reangle.dialects.scenario")


def render_error(request: Request, exc: ReangleError, status: int) -> Response:
    """A ReangleError as Scenario clients see errors; every invalid input is a 400 (BadRequestError)."""
    if isinstance(exc, InvalidInput):
        status = 400
    body = {"error": exc.message, "code": exc.code}
    if exc.hint:
        body["hint"] = exc.hint
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="reangle", Bearer realm="reangle"'
    if isinstance(exc, QueueFull | Unavailable):
        headers["Retry-After"] = str(exc.retry_after_s)
    if status >= 500 and request.method == "POST" and not isinstance(exc, Unavailable):
        headers["x-should-retry"] = "false"
    return JSONResponse(body, status_code=status, headers=headers)


router = APIRouter(
    route_class=dialect_route(render_error), responses=error_responses(ScenarioError), tags=["scenario"]
)


def credentials(authorization: str | None) -> tuple[str, str] | None:
    """(label, key) from `Basic base64(label:KEY)`, ("", key) from `Bearer KEY`; None when none is given."""
    if not authorization or not authorization.strip():
        return None
    scheme, _, given = authorization.strip().partition(" ")
    given = given.strip()
    if scheme.lower() == "bearer":
        return ("", given) if given else None
    if scheme.lower() in OTHER_SCHEMES - {"basic"}:
        raise Unauthorized(f"unsupported authorization scheme {scheme!r}", hint=AUTH_HINT)
    if scheme.lower() != "basic":  # not repeated: it may be a key sent bare
        raise Unauthorized("the Authorization header is neither Basic nor Bearer", hint=AUTH_HINT)
    try:
        decoded = base64.b64decode(given, validate=True).decode()
    except ValueError:  # not base64 (binascii.Error), not ASCII, or not UTF-8 once decoded
        raise Unauthorized("the Basic credentials are not base64 of label:secret", hint=AUTH_HINT) from None
    label, colon, secret = decoded.partition(":")
    if not colon:
        raise Unauthorized("the Basic credentials hold no ':': send label:secret", hint=AUTH_HINT)
    return label, secret


async def owner(app: State, authorization: Annotated[str | None, Header()] = None) -> str:
    if not app.keys.enabled:
        return app.keys.owner(None)
    given = credentials(authorization)
    if given is None:
        raise Unauthorized("an API key is required", hint=AUTH_HINT)
    label, key = given
    try:
        if not key:
            raise Unauthorized("an API key is required", hint=AUTH_HINT)
        return app.keys.owner(key)
    except Unauthorized:
        if label and _is_key(app, label):
            raise Unauthorized(
                "this API key is not valid: the key was sent as the label, the first part of Basic auth",
                hint=AUTH_HINT,
            ) from None
        raise


def _is_key(app: AppState, text: str) -> bool:
    try:
        app.keys.owner(text)
    except Unauthorized:
        return False
    return True


Owner = Annotated[str, Depends(owner)]


def _flag(text: str, name: str, *, values: Mapping[str, bool] = FLAGS, hint: str | None = None) -> bool:
    """A query flag: true, 1 or empty (`?dryRun`) is on, false or 0 off (or as `values` say); anything else
    a 400."""
    value = values.get(text.strip().lower())
    if value is None:
        raise InvalidInput(f"{name} must be true or false, got {text!r}", field=name, hint=hint)
    return value


async def json_object(request: Request) -> dict[str, Any]:
    """The JSON object body; an empty body is `{}`."""
    raw = await request.body()
    if not raw.strip():
        return {}
    body = json_body(raw, not_json="the request body is not valid JSON")
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object", field="body")
    return body


# generate and jobs ---------------------------------------------------------------------------------------


@router.post(PREFIX + "/generate/custom/{model_id}")
async def run_model(
    model_id: str,
    request: Request,
    app: State,
    who: Owner,
    dry_run: Annotated[str | None, Query(alias="dryRun")] = None,
) -> Response:
    """Queue a job on any model `GET /models` lists; a text-to-image model takes no images."""
    model, native_input = schemas.translate_request(model_id, await json_object(request))
    try:
        if dry_run is not None and _flag(dry_run, "dryRun", values=DRY_RUN_FLAGS, hint=DRY_RUN_HINT):
            model_spec(model).validate(JobKind.EDIT, native_input)
            return JSONResponse(
                {"creativeUnitsCost": 0, "creativeUnitsDiscount": 0}, status_code=DRY_RUN_STATUS
            )
        job = await app.service.submit(who, SubmitRequest(model=model, input=native_input))
    except InvalidInput as exc:
        raise schemas.as_sent(exc, model_id) from None
    except ReangleError:
        raise
    except Exception as exc:  # rendered as a 500 that the client must not retry
        log.exception("queueing a Scenario job failed")
        raise ReangleError("the server failed to queue the job; see its log") from exc
    return JSONResponse({"job": schemas.job_json(job), "creativeUnitsCost": 0, "creativeUnitsDiscount": 0})


@router.get(PREFIX + "/jobs/{job_id}")
async def get_job(job_id: str, app: State, who: Owner) -> dict[str, Any]:
    return {"job": schemas.job_json(app.service.get(who, job_id))}


@router.get(PREFIX + "/jobs")
async def list_jobs(
    app: State,
    who: Owner,
    page_size: Annotated[int, Query(alias="pageSize", ge=1, le=100)] = 50,
    pagination_token: Annotated[str | None, Query(alias="paginationToken")] = None,
    status: str | None = None,
    job_type: Annotated[str | None, Query(alias="type")] = None,
    types: str | None = None,
    created_after: Annotated[str | None, Query(alias="createdAfter")] = None,
    updated_after: Annotated[str | None, Query(alias="updatedAfter")] = None,
    author_id: Annotated[str | None, Query(alias="authorId")] = None,
    workflow_id: Annotated[str | None, Query(alias="workflowId")] = None,
) -> dict[str, Any]:
    """The caller's jobs, newest first, filtered on status, type/types, createdAfter, updatedAfter and
    authorId; reangle runs no workflows, so a workflowId matches none. hideResults and projectId change
    nothing (no job here is hidden; the key owns its jobs). With updatedAfter a page may hold fewer jobs than
    its size, or none, and still have a next page."""
    wanted_types = types or job_type
    nothing: dict[str, Any] = {"jobs": [], "nextPaginationToken": None}
    if wanted_types and schemas.JOB_TYPE not in wanted_types.split(","):
        return nothing
    if workflow_id is not None or (author_id is not None and author_id != who):
        return nothing
    created_floor = _instant(created_after, "createdAfter")
    updated_floor = _instant(updated_after, "updatedAfter")
    core_status = None
    if status is not None:
        if status in UNREPORTED_STATUSES:
            return nothing
        if status not in schemas.STATUS_FILTER:
            choices = ", ".join([*schemas.STATUS_FILTER, *sorted(UNREPORTED_STATUSES)])
            raise InvalidInput(f"status must be one of {choices}, got {status!r}", field="status")
        core_status = schemas.STATUS_FILTER[status]
    jobs, cursor = app.service.list_jobs(
        who, status=core_status, limit=page_size, cursor=pagination_token, cursor_field="paginationToken"
    )
    if created_floor is not None:
        if any(_millis(job.created_at) <= created_floor for job in jobs):  # newest first: the rest are older
            cursor = None
        jobs = [job for job in jobs if _millis(job.created_at) > created_floor]
    if updated_floor is not None:
        jobs = [job for job in jobs if _millis(schemas.updated_at(job)) > updated_floor]
    return {"jobs": [schemas.job_json(job) for job in jobs], "nextPaginationToken": cursor}


def _millis(timestamp: float) -> int:
    """A timestamp in whole milliseconds, as the dates shown (`createdAt`, `updatedAt`) carry it: through the
    same datetime (`timestamp * 1e6` rounded otherwise near a microsecond's half, and one shown at .997 could
    count as .998, after itself)."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return round(moment.replace(microsecond=0).timestamp()) * 1000 + moment.microsecond // 1000


def _instant(text: str | None, name: str) -> int | None:
    """An ISO 8601 date (`2026-12-01T10:00:00.000Z`) in whole milliseconds; one without a zone is UTC."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(
            f"{name} must be an ISO 8601 date such as 2026-12-01T10:00:00.000Z, got {text!r}", field=name
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return _millis(moment.timestamp())


@router.post(PREFIX + "/jobs/{job_id}/action")
async def job_action(job_id: str, request: Request, app: State, who: Owner) -> dict[str, Any]:
    """`{"action": "cancel"}`. A finished job is answered as it stands (not 409, which clients retry);
    a running one once it has stopped (at its next denoising step), or after CANCEL_WAIT_S as it stands."""
    action = (await json_object(request)).get("action")
    if action != "cancel":
        raise InvalidInput(f'action must be "cancel", got {action!r}', field="action")
    try:
        job = app.service.cancel(who, job_id)
    except Conflict:
        job = app.service.get(who, job_id)
    if not job.status.is_terminal:  # a running job stops at its next step: answer once it has
        job = await app.service.wait(who, job_id, CANCEL_WAIT_S)
    return {"job": schemas.job_json(job)}


# assets --------------------------------------------------------------------------------------------------


@router.post(PREFIX + "/assets")
async def upload_asset(request: Request, app: State, who: Owner, links: LinkMaker) -> dict[str, Any]:
    """`{"name", "image": base64 or data URL}`; the answer's `asset.id` goes into a model's `images`, its
    `metadata.name` is the name given (as in GET /assets/{id})."""
    limit = app.settings.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit * 4 // 3 + 64 * 1024:
        raise TooLarge(
            f"the request is {int(declared):,} bytes; images may be {limit:,} bytes", field="image"
        )
    body = await json_object(request)
    name, image = body.get("name"), body.get("image")
    if name is None or name == "":
        raise InvalidInput("name: field required", field="name")
    if not isinstance(name, str):
        raise InvalidInput(f"name must be a text (the file's name), not {json_kind(name)}", field="name")
    upload_name(name, field="name")
    if not isinstance(image, str) or not image:
        raise InvalidInput(
            "image: send the image as base64 or a data URL (canvas uploads are not supported)", field="image"
        )
    data = await decoded_inline(
        image, field="image", expected=f"{INLINE_IMAGE} (uploads are not fetched from URLs)"
    )
    record = await app.service.assets.ingest_async(who, data, field="image", name=name)
    return {"asset": schemas.asset_json(record, links.asset_url(record))}


@router.get(PREFIX + "/assets")
async def list_assets(
    app: State,
    who: Owner,
    links: LinkMaker,
    page_size: Annotated[int, Query(alias="pageSize", ge=1, le=100)] = 50,
    pagination_token: Annotated[str | None, Query(alias="paginationToken")] = None,
    asset_type: Annotated[str | None, Query(alias="type")] = None,
    types: str | None = None,
    author_id: Annotated[str | None, Query(alias="authorId")] = None,
    model_id: Annotated[str | None, Query(alias="modelId")] = None,
    created_after: Annotated[str | None, Query(alias="createdAfter")] = None,
    created_before: Annotated[str | None, Query(alias="createdBefore")] = None,
    updated_after: Annotated[str | None, Query(alias="updatedAfter")] = None,
    updated_before: Annotated[str | None, Query(alias="updatedBefore")] = None,
    sort_by: Annotated[str | None, Query(alias="sortBy")] = None,
    sort_direction: Annotated[str | None, Query(alias="sortDirection")] = None,
    privacy: str | None = None,
    deleted: str | None = None,
    collection_id: Annotated[str | None, Query(alias="collectionId")] = None,
    inference_id: Annotated[str | None, Query(alias="inferenceId")] = None,
    tags: str | None = None,
) -> dict[str, Any]:
    """The caller's uploads and outputs still stored, newest first, filtered on type/types, authorId,
    modelId and the dates (an asset's updatedAt is its createdAt). reangle has no collections, inferences,
    tags, deleted or public assets: filtering on them finds none. projectId and originalAssets change
    nothing. A page is full unless it is the last."""
    wanted = schemas.asset_types(asset_type, types)
    if sort_by is not None and sort_by not in schemas.ASSET_SORT_FIELDS:
        choices = " or ".join(schemas.ASSET_SORT_FIELDS)
        raise InvalidInput(f"sortBy must be {choices}, got {sort_by!r}", field="sortBy")
    if sort_direction is not None and sort_direction != "desc":
        raise InvalidInput(
            f"sortDirection must be desc (newest first), got {sort_direction!r}", field="sortDirection"
        )
    if privacy is not None and privacy not in schemas.ASSET_PRIVACY:
        choices = ", ".join(schemas.ASSET_PRIVACY)
        raise InvalidInput(f"privacy must be one of {choices}, got {privacy!r}", field="privacy")
    listing = AssetListing(
        wanted=wanted,
        model_id=model_id,
        floor=_latest(_instant(created_after, "createdAfter"), _instant(updated_after, "updatedAfter")),
        ceiling=_earliest(
            _instant(created_before, "createdBefore"), _instant(updated_before, "updatedBefore")
        ),
    )
    before = schemas.asset_page_key(pagination_token) if pagination_token is not None else None
    finds_none = (
        (wanted is not None and not wanted & schemas.MADE_ASSET_TYPES)
        or (author_id is not None and author_id != who)
        or (privacy is not None and not schemas.ASSET_PRIVACY[privacy])
        or (deleted is not None and _flag(deleted, "deleted"))
        or any(given is not None for given in (collection_id, inference_id, tags))
    )
    if finds_none:
        return {"assets": [], "nextPaginationToken": None}
    # pages of the store until this one is full: off the event loop
    assets, next_key = await asyncio.to_thread(listing.page, app, who, links, page_size, before)
    return {"assets": assets, "nextPaginationToken": next_key and schemas.asset_page_token(next_key)}


def _latest(*instants: int | None) -> int | None:
    given = [instant for instant in instants if instant is not None]
    return max(given) if given else None


def _earliest(*instants: int | None) -> int | None:
    given = [instant for instant in instants if instant is not None]
    return min(given) if given else None


@dataclass(frozen=True, kw_only=True)
class AssetListing:
    """What `GET /assets` keeps of the owner's assets: of the `wanted` types (sources), made by the model
    `model_id`, created after `floor` and before `ceiling` (whole milliseconds, as createdAt shows them)."""

    wanted: frozenset[str] | None = None
    model_id: str | None = None
    floor: int | None = None
    ceiling: int | None = None

    def page(
        self, app: AppState, who: str, links: Links, size: int, before: AssetKey | None
    ) -> tuple[list[dict[str, Any]], AssetKey | None]:
        """Up to `size` assets from the store's pages after `before`, read until the page is full or none
        are left, so that a page short of `size` is the last (the client stops at an empty page)."""
        if self.ceiling is not None:  # the store's order starts at the ceiling; the keep test is exact
            before = min(before or (math.inf, ""), (self.ceiling / 1000, ""))
        # only outputs have a source other than "uploaded", or a model
        outputs_only = self.model_id is not None or (
            self.wanted is not None and "uploaded" not in self.wanted
        )
        producers: dict[str, Job | None] = {}
        kept: list[dict[str, Any]] = []
        while True:
            records, next_key = app.store.list_assets(
                who, now=app.service.assets.clock(), limit=size, before=before, outputs_only=outputs_only
            )
            for record in records:
                if self.floor is not None and _millis(record.created_at) <= self.floor:
                    return kept, None  # newest first: the rest are older
                job = None
                if record.job_id is not None:  # read once for all the outputs of one job
                    if record.job_id not in producers:
                        producers[record.job_id] = _producing_job(app, who, record)
                    job = producers[record.job_id]
                shown = schemas.asset_json(record, links.asset_url(record), job=job)
                if self.keeps(shown, record):
                    kept.append(shown)
                if len(kept) == size:
                    last = record is records[-1]
                    return kept, (None if last and next_key is None else (record.created_at, record.id))
            if next_key is None:
                return kept, None
            before = next_key

    def keeps(self, shown: dict[str, Any], record: AssetRecord) -> bool:
        if self.wanted is not None and shown["source"] not in self.wanted:
            return False
        if self.model_id is not None and shown["metadata"].get("modelId") != self.model_id:
            return False
        return self.ceiling is None or _millis(record.created_at) < self.ceiling


@router.post(PREFIX + "/assets/get-bulk")
async def get_assets_in_bulk(request: Request, app: State, who: Owner, links: LinkMaker) -> dict[str, Any]:
    """`{"assetIds": [...]}` (up to MAX_BULK_ASSETS) -> `{"assets": [Asset, ...]}`: those of the ids that name
    this key's assets, in the order given; an unknown or expired id is left out, as Scenario leaves out
    those the team cannot read."""
    asset_ids = schemas.bulk_asset_ids((await json_object(request)).get("assetIds"))
    # up to two store reads an id: off the event loop
    return {"assets": await asyncio.to_thread(_assets_of, app, who, links, asset_ids)}


def _assets_of(app: AppState, who: str, links: Links, asset_ids: Sequence[str]) -> list[dict[str, Any]]:
    assets = []
    for asset_id in asset_ids:
        try:
            record = app.service.assets.get(who, asset_id)
        except NotFound:
            continue
        job = _producing_job(app, who, record)
        assets.append(schemas.asset_json(record, links.asset_url(record), job=job))
    return assets


@router.get(PREFIX + "/assets/{asset_id}")
async def get_asset(asset_id: str, app: State, who: Owner, links: LinkMaker) -> dict[str, Any]:
    record = app.service.assets.get(who, asset_id)
    job = _producing_job(app, who, record)
    return {"asset": schemas.asset_json(record, links.asset_url(record), job=job)}


def _producing_job(app: AppState, who: str, record: AssetRecord) -> Job | None:
    """The job that made the asset, while it is kept; None for uploads."""
    if record.job_id is None:
        return None
    try:
        return app.service.get(who, record.job_id)
    except NotFound:
        return None


@router.post(PREFIX + "/assets/{asset_id}/download")
async def download_asset(
    asset_id: str, request: Request, app: State, who: Owner, links: LinkMaker
) -> dict[str, Any]:
    """A signed, expiring URL of the file; `targetFormat` png|jpeg|jpg|webp converts it into a new asset,
    made once per format."""
    fmt = schemas.target_format((await json_object(request)).get("targetFormat"))
    record = app.service.assets.get(who, asset_id)
    if fmt is not None and MIME_TYPES[fmt] != record.mime_type:
        source = record
        record = await app.service.assets.converted(
            source, MIME_TYPES[fmt], lambda: _reencode(app, source, fmt)
        )
    return {"url": links.asset_url(record), "mimeType": record.mime_type}


def _reencode(app: AppState, record: AssetRecord, fmt: OutputFormat) -> tuple[bytes, tuple[int, int]]:
    """The asset's pixels in another format (a decode: see AssetService.decoding)."""
    image = app.service.assets.load_image(record)
    return encode_image(image, fmt), image.size


# models --------------------------------------------------------------------------------------------------


@router.get(PREFIX + "/models")
async def list_models(who: Owner) -> dict[str, Any]:
    return {
        "models": [model.to_json() for model in schemas.scenario_models().values()],
        "nextPaginationToken": None,
    }


@router.get(PREFIX + "/models/{model_id}")
async def get_model(model_id: str, who: Owner) -> dict[str, Any]:
    return {"model": schemas.scenario_model(model_id).to_json()}


add_fallback_routes(router, "/scenario", base_url="http://HOST/scenario/v1")
