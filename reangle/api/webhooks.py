"""Webhook targets as requests give them (checked against the SSRF rules of URL fetching), and the route
that shows the caller's signing secret."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Request

from reangle.api.caller import Owner
from reangle.api.deps import state_of
from reangle.api.openapi_errors import NativeError, error_responses
from reangle.api.state import AppState
from reangle.core.jobs import WebhookTarget
from reangle.core.webhooks import COMPLETED, NATIVE
from reangle.errors import InvalidInput
from reangle.store.url_fetch import FetchPolicy, checked_addresses

MAX_URL_CHARS = 2048

router = APIRouter(responses=error_responses(NativeError))


async def webhook_target(
    app: AppState,
    request: Request,
    url: str | None,
    events: Sequence[str] | None = None,
    *,
    field: str,
    flavor: str = NATIVE,
) -> WebhookTarget | None:
    """The target of `url` for `events` (default: completed), or None without a URL; InvalidInput naming
    `field` when the URL is not http(s), too long, or its host resolves to an address URL fetching refuses
    (loopback, private, link-local, metadata... unless REANGLE_ALLOW_PRIVATE_URLS)."""
    if url is None:
        if events:
            raise InvalidInput("webhook_events: give webhook_url too", field="webhook_events")
        return None
    if len(url) > MAX_URL_CHARS:
        raise InvalidInput(f"{field}: at most {MAX_URL_CHARS} characters, got {len(url)}", field=field)
    policy = FetchPolicy(
        allow_private=app.settings.allow_private_urls, timeout_s=app.settings.url_fetch_timeout_s
    )
    try:
        await checked_addresses(url, policy, field=field)
    except InvalidInput as exc:
        message = exc.message.replace("refusing to fetch", "refusing to call").replace(
            "could not fetch", "cannot call"
        )
        if not message.startswith(field):
            message = f"{field}: {message}"
        raise InvalidInput(message, field=field, hint=exc.hint) from None
    base = app.settings.public_base_url or str(request.base_url)
    return WebhookTarget(
        url=url, events=tuple(dict.fromkeys(events or (COMPLETED,))), flavor=flavor, base_url=base.rstrip("/")
    )


@router.get("/v1/webhook-secret", tags=["webhooks"])
async def webhook_secret(request: Request, who: Owner) -> dict[str, Any]:
    """The secret this key's webhooks are signed with (`whsec_...`), and the one it replaced while that still
    signs too (24 h after `reangle keys webhook-secret --rotate`)."""
    secrets = state_of(request).store.webhook_secrets(who, time.time())
    return {"secret": secrets[0], "previous": secrets[1] if len(secrets) > 1 else None}
