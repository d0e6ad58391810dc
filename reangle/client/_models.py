"""The server's answers as pydantic models. Unknown fields are kept (`extra="allow"`), so a newer server that
adds fields still parses; `status`, `kind` and `role` are plain strings for the same reason.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from reangle.client._errors import JobCanceled, JobFailed

#: Statuses after which a job never changes again.
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Asset(_Model):
    """An uploaded or generated image. `url` is an absolute signed download URL that needs no API key."""

    id: str
    url: str
    mime_type: str
    width: int
    height: int
    #: Size of the file in bytes.
    bytes: int
    created_at: datetime
    expires_at: datetime | None = None
    #: The file name given at upload (None for outputs, and for uploads sent without one).
    name: str | None = None


class ViewPose(_Model):
    """The camera pose of one orbit view: azimuth and elevation in degrees, distance as a factor."""

    azimuth_deg: float
    elevation_deg: float
    distance: float


class PromptRewrite(_Model):
    """What the prompt rewriter made of a job's prompt (the job asked for `rewrite_prompt`). When `rewritten`
    is False, `prompt` is `original_prompt` unchanged, and `fallback_reason` (refused, overlong, timeout,
    skipped, ...) with `detail` says why."""

    original_prompt: str
    prompt: str
    rewritten: bool
    fallback_reason: str | None = None
    detail: str | None = None
    #: How long the rewrite took.
    seconds: float = 0.0


class OutputAsset(_Model):
    """One output of a job. `role` is "image" for edits; "view", "turntable" or "contact_sheet" for orbits."""

    id: str
    url: str
    width: int
    height: int
    mime_type: str
    seed: int | None = None
    role: str = "image"
    #: The camera pose the request resolved to (camera edits and orbit views).
    pose: ViewPose | None = None
    #: What the model was given: prompt, negative_prompt, width, height, steps, true_cfg_scale, loras, and
    #: `rewrite` when the job asked for its prompt to be rewritten (see `rewrite`).
    plan: dict[str, Any] | None = None

    @property
    def rewrite(self) -> PromptRewrite | None:
        """What the rewriter made of the prompt of this output; None when the job asked for no rewrite (or
        the output is not one the model made, as an orbit's turntable)."""
        found = (self.plan or {}).get("rewrite")
        return PromptRewrite.model_validate(found) if isinstance(found, dict) else None


class JobOutput(_Model):
    assets: list[OutputAsset] = Field(default_factory=list)


#: The longest time limit of either kind the server takes: a week.
MAX_TIME_LIMIT_S = 7 * 24 * 3600


@dataclass(frozen=True)
class TimeLimits:
    """How long a job may take, in seconds (None: no limit of that kind). `run_s` bounds each run of it, from
    when a runner starts it; `total_s` its whole life from its submission, time in the queue included. A job
    past either ends failed with the error code "timed_out" (`JobFailed` when waited for). The server takes
    up to a week for each. Checked when sent (`check`), not when read back: a server's own limits may differ.

        client.edit("photo.jpg", azimuth=90, time_limits=TimeLimits(run_s=120, total_s=600))
    """

    run_s: float | None = None
    total_s: float | None = None

    def check(self) -> None:
        """ValueError when a limit is not a positive, finite number of seconds or is over a week; TypeError
        when it is no number."""
        for name in ("run_s", "total_s"):
            _check_seconds(getattr(self, name), f"time_limits.{name}")

    def to_json(self) -> dict[str, float]:
        """The limits given, as the API takes them (`{"run_s": 120}`); empty when neither is."""
        return {name: value for name, value in asdict(self).items() if value is not None}


def _check_seconds(value: object, field: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{field} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{field} is {value}: a time limit must be a positive, finite number of seconds")
    if value > MAX_TIME_LIMIT_S:
        raise ValueError(f"{field} is {value}: the server takes at most a week ({MAX_TIME_LIMIT_S} s)")


class JobError(_Model):
    """Why a job failed: a stable `code`, a readable `message`, and sometimes a `hint` on what to change."""

    code: str
    message: str
    hint: str | None = None


class Job(_Model):
    """A job as the server reports it. `status` is queued, processing, succeeded, failed or canceled."""

    id: str
    model: str
    kind: str = "edit"
    status: str
    #: 0..1
    progress: float = 0.0
    attempt: int = 1
    priority: int = 0
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    input: dict[str, Any] = Field(default_factory=dict)
    output: JobOutput | None = None
    error: JobError | None = None
    timings: dict[str, Any] = Field(default_factory=dict)
    batch_id: str | None = None
    #: The time limits the job was submitted with; None when it has none (or the server shows none).
    time_limits: TimeLimits | None = None
    #: True when the server runs a demo engine (tiny, fake): its images are meaningless.
    demo: bool = False

    @property
    def is_terminal(self) -> bool:
        """True once the job has succeeded, failed or been canceled."""
        return self.status in TERMINAL_STATUSES

    @property
    def assets(self) -> list[OutputAsset]:
        """The job's outputs (empty until it succeeds)."""
        return self.output.assets if self.output else []

    def assets_with_role(self, role: str) -> list[OutputAsset]:
        return [asset for asset in self.assets if asset.role == role]

    @property
    def rewrite(self) -> PromptRewrite | None:
        """What the rewriter made of the job's prompt (its first output's record); None when the job asked
        for no rewrite or has no outputs yet."""
        return next((found for asset in self.assets if (found := asset.rewrite) is not None), None)

    def raise_for_status(self) -> Job:
        """Raise `JobFailed` or `JobCanceled` when the job ended that way; return the job otherwise."""
        if self.status == "failed":
            raise JobFailed(self)
        if self.status == "canceled":
            raise JobCanceled(self)
        return self


class JobPage(_Model):
    """One page of `GET /v1/jobs`; pass `next_cursor` as `cursor` to get the next (None on the last page)."""

    data: list[Job]
    next_cursor: str | None = None


class Batch(_Model):
    """A batch: one edit job per item, all with this batch id."""

    id: str
    jobs: list[Job]


class ProgressEvent(_Model):
    """A progress event from a job's event stream: `progress` is 0..1, over `steps` denoising steps."""

    progress: float
    step: int | None = None
    steps: int | None = None


class Model(_Model):
    """A model the server runs, with the JSON Schema of its `input`."""

    id: str
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=dict)


class _ModelList(_Model):
    data: list[Model]


class CameraPrompt(_Model):
    """One of the camera poses the Multiple-Angles LoRA knows, and its prompt."""

    azimuth: str
    azimuth_deg: float
    elevation: str
    elevation_deg: float
    distance: str
    prompt: str


class _CameraPromptList(_Model):
    data: list[CameraPrompt]


class WebhookSecret(_Model):
    """`GET /v1/webhook-secret`: the secret (`whsec_...`) the key's webhooks are signed with, per Standard
    Webhooks, and the one it replaced while that still signs too (for 24 h after a rotation; else None)."""

    secret: str
    previous: str | None = None


class Health(_Model):
    """`GET /healthz`: whether the server is up, which engine it runs, and how many jobs wait."""

    status: str
    engine: str | None = None
    #: True when the engine is a demo (its images are meaningless).
    demo: bool = False
    device: str | None = None
    #: The engine's speed options in effect (setting name -> value); empty for engines without any.
    options: dict[str, str | int] = {}
    queue_depth: int = 0


#: What `Client.events` yields and `on_progress` callbacks receive: a job status update or a progress tick.
JobEvent = Job | ProgressEvent
