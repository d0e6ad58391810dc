"""The job: what was asked, by whom, and where it stands. Frozen values; the store persists them."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    QUEUED = "queued"  #: waiting for a runner
    PROCESSING = "processing"  #: a runner is on it
    SUCCEEDED = "succeeded"  #: outputs are ready
    FAILED = "failed"  #: ended with an error
    CANCELED = "canceled"  #: canceled before it finished

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED})


class JobKind(StrEnum):
    EDIT = "edit"  #: one edit of 1-3 images (batch children are edits with a batch id)
    ORBIT = "orbit"  #: one image seen from a list of poses, plus a turntable and a contact sheet


@dataclass(frozen=True, kw_only=True)
class JobError:
    code: str
    message: str
    hint: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "hint": self.hint}


@dataclass(frozen=True, kw_only=True)
class OutputAsset:
    asset_id: str
    #: "image" for edits; "view", "turntable" or "contact_sheet" for orbits
    role: str
    width: int
    height: int
    mime_type: str
    seed: int | None = None
    #: The camera pose the request resolved to (edits with a pose, and orbit views).
    pose: dict[str, Any] | None = None
    #: What the model was given for this output: prompt, size, steps, guidance, LoRAs (see EditPlan).
    plan: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class WebhookTarget:
    """Where a job's events are POSTed (see `reangle.core.webhooks`)."""

    url: str
    #: "completed" (terminal statuses) and/or "progress" (status changes and throttled progress)
    events: tuple[str, ...] = ("completed",)
    #: the payload's shape: "native" (the job JSON in an envelope) or "runpod" (RunPod's /status body)
    flavor: str = "native"
    #: the base of the payload's download links: REANGLE_PUBLIC_BASE_URL, else the submitting request's
    base_url: str = ""


@dataclass(frozen=True, kw_only=True)
class TimeLimits:
    """How long a client lets its job take (RunPod's `policy`); None: no limit. A job past either limit is
    stopped at its next step and ends failed with the code `timed_out`; a job whose render has finished is
    stored, whatever the time."""

    #: its run, counted from the start of each attempt (`executionTimeout`)
    run_s: float | None = None
    #: its whole life, counted from its submission: time in the queue and its run (`ttl`)
    total_s: float | None = None

    def deadline(self, job: Job) -> float | None:
        """When `job`'s current attempt must have ended; None: never."""
        ends = []
        if self.run_s is not None and job.started_at is not None:
            ends.append(job.started_at + self.run_s)
        if self.total_s is not None:
            ends.append(job.created_at + self.total_s)
        return min(ends, default=None)

    def error(self, job: Job, now: float) -> JobError:
        """Why `job` ended at `now`: which limit it ran past."""
        if self.total_s is not None and now >= job.created_at + self.total_s:
            message = (
                f"the job was not done within its total time limit ({self.total_s:g} s from its submission)"
            )
        else:
            message = f"the job ran longer than its run time limit ({self.run_s:g} s)"
        return JobError(code=TIMED_OUT_CODE, message=message, hint="give it a longer limit, or retry it")


#: The error code of a job stopped by its TimeLimits.
TIMED_OUT_CODE = "timed_out"

#: The `source` of the jobs an older reangle stored, before it recorded one: the upgrade marks them so, and
#: every route sees them as it did then.
SOURCE_UNRECORDED = "unrecorded"


@dataclass(frozen=True, kw_only=True)
class StatusChange:
    status: JobStatus
    at: float


@dataclass(frozen=True, kw_only=True)
class JobEvent:
    """What subscribers of a job hear: `status` events carry the job; `progress` events carry
    {progress, step, steps}."""

    job_id: str
    kind: str
    job: Job | None = None
    progress: dict[str, float] | None = None


@dataclass(frozen=True, kw_only=True)
class Job:
    id: str
    owner: str
    model: str
    kind: JobKind
    #: the validated input, image references replaced by asset ids (enough to run the job again)
    input: dict[str, Any]
    status: JobStatus = JobStatus.QUEUED
    progress: float = 0.0
    attempt: int = 1
    priority: int = 0
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    history: tuple[StatusChange, ...] = ()
    outputs: tuple[OutputAsset, ...] = ()
    error: JobError | None = None
    timings: dict[str, float] = field(default_factory=dict)
    batch_id: str | None = None
    cancel_requested: bool = False
    webhook: WebhookTarget | None = None
    #: The id of the task a vendor's API runs for this job (remote models), recorded once created: a run
    #: after a server stop follows that task instead of creating (and paying for) another.
    vendor_task: str | None = None
    #: Which client route submitted it, where that route's answers depend on it: `runpod:<endpoint id>` (a
    #: RunPod endpoint sees and purges only its own jobs); None for the others; SOURCE_UNRECORDED for a job
    #: stored before reangle recorded it.
    source: str | None = None
    limits: TimeLimits | None = None
