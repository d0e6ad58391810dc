"""RunPod serverless shapes, pure: a request body -> native input(s), core jobs -> a RunPod job body.

One RunPod job is a list of core jobs: one job, or the children of a batch (a `prompt` list with one prompt
per image), in item order. Free of HTTP and I/O, so the golden tests can pin it down exactly.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reangle.core.jobs import TIMED_OUT_CODE, Job, JobKind, JobStatus, TimeLimits
from reangle.core.models import catalog_defaulted, invalid_input_from
from reangle.core.service import model_spec
from reangle.errors import InvalidInput

IN_QUEUE, IN_PROGRESS, COMPLETED = "IN_QUEUE", "IN_PROGRESS", "COMPLETED"
FAILED, CANCELLED, TIMED_OUT = "FAILED", "CANCELLED", "TIMED_OUT"
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED, TIMED_OUT})
RETRYABLE = frozenset({FAILED, TIMED_OUT})
#: The bounds RunPod sets on `policy`, in milliseconds.
MIN_EXECUTION_TIMEOUT_MS, MIN_TTL_MS, MAX_POLICY_MS = 5_000, 10_000, 7 * 24 * 3600 * 1000

#: The worker's defaults (seed doc 001): Lightning, 4 steps, no true CFG, a fixed seed. Sent only for a field
#: the model's catalog entry has no default of (see `catalog_defaulted`): a catalog model's own wins.
DEFAULTS: dict[str, Any] = {"seed": 42, "num_inference_steps": 4, "guidance_scale": 1.0}
#: Input fields passed to the native model as they are, when given and not null.
PASSED = ("width", "height")
CAMERA_FIELDS = ("azimuth", "elevation", "distance", "lora_scale")
#: Output roles that are pictures of the scene (orbit jobs also have a turntable and a contact sheet).
IMAGE_ROLES = ("image", "view")


class RunpodPolicy(BaseModel):
    """How long the job may take, in ms: `executionTimeout` its run, `ttl` its whole life from submission
    (see TimeLimits). `lowPriority` keeps RunPod from starting workers for it; here it changes nothing."""

    model_config = ConfigDict(extra="forbid")

    executionTimeout: int | None = Field(None, ge=MIN_EXECUTION_TIMEOUT_MS, le=MAX_POLICY_MS)
    lowPriority: bool = False
    ttl: int | None = Field(None, ge=MIN_TTL_MS, le=MAX_POLICY_MS)

    def limits(self) -> TimeLimits | None:
        if self.executionTimeout is None and self.ttl is None:
            return None
        return TimeLimits(
            run_s=None if self.executionTimeout is None else self.executionTimeout / 1000,
            total_s=None if self.ttl is None else self.ttl / 1000,
        )


class RunpodRequest(BaseModel):
    """The body of /run and /runsync. `webhook` is a URL called once the job ends, with its /status body;
    `s3Config` is refused (see `translate`)."""

    model_config = ConfigDict(extra="ignore")

    input: dict[str, Any]
    webhook: Any = None
    policy: RunpodPolicy | None = None
    s3Config: Any = None


class RunpodInput(BaseModel):
    """The worker's `input`. Numbers are left to the native model, which validates and snaps them. A key not
    listed is refused (typo protection); a null value is as if the key were not given."""

    model_config = ConfigDict(extra="forbid")

    image: str | None = None
    images: list[str] | None = None
    prompt: Any = None  # a string, or a list of strings (checked in `_prompt` to name the field plainly)
    rewrite_prompt: bool | None = None
    azimuth: Any = None
    elevation: Any = None
    distance: Any = None
    lora_scale: Any = None
    seed: Any = None
    num_inference_steps: Any = None
    guidance_scale: Any = None
    width: Any = None
    height: Any = None


@dataclass(frozen=True, kw_only=True)
class Translated:
    """What to submit: one native input (`batch=False`), or one per batch item (`batch=True`)."""

    model: str
    inputs: list[dict[str, Any]]
    batch: bool
    #: called with the job's /status body once it ends (checked against the SSRF rules by the caller)
    webhook: str | None = None
    limits: TimeLimits | None = None
    #: the image came as `image`, not in `images`: a refusal of it names `input.image`
    single_image: bool = False


def translate(body: Any, model: str) -> Translated:
    """A /run or /runsync body as native input(s) for `model`; InvalidInput naming the field otherwise."""
    if not isinstance(body, dict):
        raise InvalidInput('the body must be a JSON object: {"input": {...}}', field="body")
    try:
        request = RunpodRequest.model_validate(body)
    except ValidationError as exc:
        raise invalid_input_from(exc) from None
    if request.webhook is not None and not isinstance(request.webhook, str):
        raise InvalidInput("webhook: must be an http(s) URL string", field="webhook")
    if request.s3Config is not None:
        raise InvalidInput(
            "s3Config: this server returns images inline as base64 and uploads nothing", field="s3Config"
        )
    limits = request.policy.limits() if request.policy is not None else None
    data = request.input
    if set(data) == {"input"} and isinstance(data["input"], dict):  # the async SDK wraps {"input": ...} again
        data = data["input"]
    try:
        given = RunpodInput.model_validate(data)
    except ValidationError as exc:
        raise invalid_input_from(exc, prefix="input") from None
    images = _images(given)
    defaulted = catalog_defaulted(model)
    common = {
        name: _or_default(given, name)
        for name in DEFAULTS
        if getattr(given, name) is not None or name not in defaulted
    }
    common |= {name: getattr(given, name) for name in PASSED if getattr(given, name) is not None}
    common |= _camera(given, model)
    if given.rewrite_prompt:
        common["rewrite_prompt"] = True
    if given.prompt is None and "prompt" in defaulted:  # null: not given; the model's own prompt
        return Translated(
            model=model,
            inputs=[{"images": images, **common}],
            batch=False,
            webhook=request.webhook,
            limits=limits,
            single_image=given.image is not None,
        )
    prompts = _prompt("" if given.prompt is None else given.prompt)
    if isinstance(prompts, str) or len(prompts) == 1:
        prompt = prompts if isinstance(prompts, str) else prompts[0]
        inputs = [{"images": images, "prompt": prompt, **common}]
        return Translated(
            model=model,
            inputs=inputs,
            batch=False,
            webhook=request.webhook,
            limits=limits,
            single_image=given.image is not None,
        )
    if len(prompts) != len(images):
        raise InvalidInput(
            f"input.prompt: a list of prompts is a batch and needs one prompt per image; got "
            f"{len(prompts)} prompts for {len(images)} images",
            field="input.prompt",
            hint="send one prompt string to edit several images together as references",
        )
    inputs = [
        {"images": [image], "prompt": text, **common} for image, text in zip(images, prompts, strict=True)
    ]
    return Translated(model=model, inputs=inputs, batch=True, webhook=request.webhook, limits=limits)


def _prompt(value: Any) -> str | list[str]:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return value
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    raise InvalidInput(
        f"input.prompt: must be a string or a non-empty list of strings, got {shown}", field="input.prompt"
    )


def _images(given: RunpodInput) -> list[str]:
    if given.image is not None and given.images is not None:
        raise InvalidInput("input.image: send image or images, not both", field="input.image")
    if given.image is not None:
        return [given.image]
    if given.images:
        return given.images
    raise InvalidInput(
        "input.image: field required (a base64 image; or several in images)", field="input.image"
    )


def _or_default(given: RunpodInput, name: str) -> Any:
    value = getattr(given, name)
    return DEFAULTS[name] if value is None else value


def _camera(given: RunpodInput, model: str) -> dict[str, Any]:
    chosen = {name: getattr(given, name) for name in CAMERA_FIELDS if getattr(given, name) is not None}
    accepted = model_spec(model).inputs[JobKind.EDIT].model_fields
    for name in chosen:
        if name not in accepted:
            raise InvalidInput(
                f"input.{name}: this endpoint serves {model}, which takes no camera pose",
                field=f"input.{name}",
            )
    return chosen


# core jobs -> RunPod ----------------------------------------------------------------------------------


def job_status(job: Job) -> str:
    if job.status == JobStatus.QUEUED:
        return IN_QUEUE
    if job.status == JobStatus.PROCESSING:
        return IN_PROGRESS
    if job.status == JobStatus.SUCCEEDED:
        return COMPLETED
    if job.status == JobStatus.CANCELED:
        return CANCELLED
    return TIMED_OUT if job.error is not None and job.error.code == TIMED_OUT_CODE else FAILED


def runpod_status(jobs: Sequence[Job]) -> str:
    """One status for a job or a whole batch: running while any item runs; then FAILED (or TIMED_OUT) if an
    item failed, CANCELLED if an item was canceled, COMPLETED when every item succeeded."""
    statuses = [job_status(job) for job in jobs]
    if any(status not in TERMINAL for status in statuses):
        return IN_QUEUE if all(status == IN_QUEUE for status in statuses) else IN_PROGRESS
    for status in (FAILED, TIMED_OUT, CANCELLED):
        if status in statuses:
            return status
    return COMPLETED


def output_asset_ids(jobs: Sequence[Job]) -> list[str]:
    """The image assets of a job (or of a batch, in item order) that `output.images` carries."""
    return [output.asset_id for job in jobs for output in job.outputs if output.role in IMAGE_ROLES]


def status_body(
    runpod_id: str, jobs: Sequence[Job], image: Callable[[str], str] | None = None
) -> dict[str, Any]:
    """The /status body. `image` gives an output asset's base64; the output is left out without it."""
    status = runpod_status(jobs)
    body: dict[str, Any] = {"id": runpod_id, "status": status}
    starts = [job.started_at for job in jobs if job.started_at is not None]
    if starts:
        body["delayTime"] = _ms(min(starts) - min(job.created_at for job in jobs))
        ends = [job.finished_at for job in jobs if job.finished_at is not None]
        if status in TERMINAL and ends:
            body["executionTime"] = _ms(max(ends) - min(starts))
    if status == COMPLETED and image is not None:
        body["output"] = {"images": [image(asset_id) for asset_id in output_asset_ids(jobs)]}
    elif status in RETRYABLE:
        body["error"] = error_text(jobs)
    return body


def error_text(jobs: Sequence[Job]) -> str:
    """The first failed item's error, as the RunPod worker SDK sends a handler's exception: a JSON string."""
    for index, job in enumerate(jobs):
        if job.status == JobStatus.FAILED:
            code = job.error.code if job.error else "error"
            message = job.error.message if job.error else "the job failed"
            if job.error is not None and job.error.hint:
                message += f" ({job.error.hint})"
            if len(jobs) > 1:
                message = f"batch item {index}: {message}"
            return json.dumps({"error_type": code, "error_message": message})
    return json.dumps({"error_type": "error", "error_message": "the job failed"})


def health_body(jobs: Sequence[Job], *, running: bool, retries: Collection[str] = ()) -> dict[str, Any]:
    """GET /health: this key's jobs on this endpoint by RunPod status, and the one local worker. `jobs` holds
    each job once, by its newest attempt; `retries` names the attempts that /retry queued (counted, like jobs
    the core ran again, as `retried`)."""
    statuses = [job_status(job) for job in jobs]
    return {
        "jobs": {
            "completed": statuses.count(COMPLETED),
            "failed": statuses.count(FAILED) + statuses.count(TIMED_OUT),
            "inProgress": statuses.count(IN_PROGRESS),
            "inQueue": statuses.count(IN_QUEUE),
            "retried": sum(1 for job in jobs if job.attempt > 1 or job.id in retries),
        },
        "workers": {"idle": 0 if running else 1, "running": 1 if running else 0},
    }


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))
