"""Webhooks: which status changes a target hears, the retry schedule, and Standard Webhooks signing.

A delivery row (the outbox) is written by the job store in the same transaction as the status change it
reports, so a committed change always has its delivery and a rolled-back one never does. The sender
(`reangle.runtime.webhook_sender`) POSTs due rows and records each attempt; its payload is built at the first
attempt from the job as it then stands, kept in the row, and sent unchanged on every retry. An attempt that
fails (a status other than 2xx, a timeout, no connection, a name that does not resolve) is tried again on the
RETRY_DELAYS_S schedule; a 410, or a target the SSRF rules refuse, gives the delivery up at once.

Signing follows https://www.standardwebhooks.com: headers `webhook-id` (the event id, the same on every
retry), `webhook-timestamp` (unix seconds) and `webhook-signature`: `v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}">` keyed with the base64 part of the owner's `whsec_` secret; while a rotated secret
is still valid, one signature per secret, space-separated.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import secrets
from collections.abc import Callable, Sequence
from typing import Any

from reangle.core.jobs import JobStatus, WebhookTarget

COMPLETED, PROGRESS = "completed", "progress"
EVENTS = (COMPLETED, PROGRESS)
NATIVE, RUNPOD = "native", "runpod"

STATUS_TYPES = {
    JobStatus.PROCESSING: "job.processing",
    JobStatus.SUCCEEDED: "job.succeeded",
    JobStatus.FAILED: "job.failed",
    JobStatus.CANCELED: "job.canceled",
}
PROGRESS_TYPE = "job.progress"

#: The waits between attempts, before jitter: 8 attempts in all (the first and 7 retries), the last about 23 h
#: after the first. REANGLE_WEBHOOK_RETRY_BASE_S replaces the first wait (30 s) and scales the others alike.
RETRY_DELAYS_S = (30.0, 120.0, 600.0, 1800.0, 7200.0, 21600.0, 50400.0)
MAX_ATTEMPTS = len(RETRY_DELAYS_S) + 1
#: Each wait is moved by up to this fraction either way, so that receivers that come back are not hit by
#: every retry at once.
JITTER = 0.2
#: "progress" subscribers get at most one progress event per job this often (status changes always go).
PROGRESS_EVERY_S = 5.0
#: The deadline of one attempt, from the lookup of the target's host to the response's status and headers
#: (its body is never read); the sender keeps it within a third of its lease. A timed-out attempt is retried.
ATTEMPT_TIMEOUT_S = 10.0
#: A rotated-out secret still signs (beside the new one) for this long.
ROTATION_OVERLAP_S = 24 * 3600.0
SECRET_PREFIX = "whsec_"


class NotReady(Exception):
    """The delivery cannot be sent yet (a RunPod batch with items still running): try again soon, no attempt
    spent."""


class Undeliverable(Exception):
    """The delivery can never be sent (its job was deleted): give it up."""


def event_type(target: WebhookTarget, status: JobStatus) -> str | None:
    """The event a change to `status` makes for `target`, or None when it did not ask for it: "completed"
    asks for the terminal statuses, "progress" for every status change (terminal ones too). A job going back
    to the queue (a restart) makes none: its next processing does."""
    if status.is_terminal:
        return STATUS_TYPES[status]
    if status == JobStatus.PROCESSING and PROGRESS in target.events and target.flavor == NATIVE:
        return STATUS_TYPES[status]
    return None


def wants_progress(target: WebhookTarget | None) -> bool:
    return target is not None and PROGRESS in target.events and target.flavor == NATIVE


def new_event_id() -> str:
    return "evt_" + secrets.token_hex(12)


def batch_event_id(batch_id: str) -> str:
    """The one terminal event of a RunPod batch (RunPod calls its webhook once per RunPod job): whichever
    item ends first writes it, the others find it there."""
    return "evt_" + hashlib.sha256(f"runpod-batch:{batch_id}".encode()).hexdigest()[:24]


def retry_delay(attempts: int, base_s: float, rng: Callable[[], float] = random.random) -> float | None:
    """The wait after `attempts` failed attempts; None when no attempt is left."""
    if attempts >= MAX_ATTEMPTS:
        return None
    delay = RETRY_DELAYS_S[attempts - 1] * base_s / RETRY_DELAYS_S[0]
    return delay * (1 + JITTER * (2 * rng() - 1))


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def secrets_in_use(current: str, previous: str | None, previous_until: float | None, now: float) -> list[str]:
    """The secrets to sign with: the current one, and the one it replaced while that is still valid."""
    if previous and previous_until is not None and now < previous_until:
        return [current, previous]
    return [current]


def signature(secret: str, event_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{event_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signed_headers(secrets_: Sequence[str], event_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(s, event_id, timestamp, body) for s in secrets_),
    }


def envelope(event_type: str, timestamp: str, data: Any) -> bytes:
    return json.dumps({"type": event_type, "timestamp": timestamp, "data": data}).encode()


def target_json(target: WebhookTarget | None) -> str | None:
    if target is None:
        return None
    return json.dumps(
        {
            "url": target.url,
            "events": list(target.events),
            "flavor": target.flavor,
            "base_url": target.base_url,
        }
    )


def target_from_json(text: str | None) -> WebhookTarget | None:
    if not text:
        return None
    data = json.loads(text)
    return WebhookTarget(
        url=data["url"], events=tuple(data["events"]), flavor=data["flavor"], base_url=data["base_url"]
    )
