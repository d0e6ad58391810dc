"""The webhook sender: takes due deliveries from the outbox and POSTs them, signed, beside the job runner.

Each delivery is claimed with a lease (on PostgreSQL with SKIP LOCKED), so that of several processes sending
from one database only one holds a delivery at a time; one that dies mid-attempt lets its leases run out and
the deliveries come due again. At most CONCURRENCY attempts run at once, each bounded by ATTEMPT_TIMEOUT_S, so
a receiver that hangs or is down holds one slot, never the others or any job: jobs never wait on deliveries.

An attempt succeeds on 2xx; 410 gives the delivery up; anything else (another status, a redirect, which is
not followed, a connection error or a timeout) is tried again after `retry_delay` until MAX_ATTEMPTS. The
target is checked against the SSRF rules again before each attempt (a host may resolve elsewhere by now).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import httpx

from reangle import __version__
from reangle.core.ports import JobStore, WebhookDelivery
from reangle.core.webhooks import (
    ATTEMPT_TIMEOUT_S,
    MAX_ATTEMPTS,
    NotReady,
    Undeliverable,
    retry_delay,
    signed_headers,
)
from reangle.errors import InvalidInput, Unavailable
from reangle.store.url_fetch import (
    FetchPolicy,
    Resolver,
    checked_addresses,
    pin,
    pinned_client,
    system_resolver,
)

log = logging.getLogger("reangle.webhooks")

CONCURRENCY = 8
#: How often the outbox is looked at for due deliveries.
POLL_S = 0.5
#: How long a claimed delivery is kept from other senders: past any attempt (render, check, POST).
LEASE_S = 6 * ATTEMPT_TIMEOUT_S
#: A RunPod batch with items still running is looked at again after this long.
NOT_READY_S = 2.0

Render = Callable[[WebhookDelivery], str]


class WebhookSender:
    def __init__(
        self,
        store: JobStore,
        render: Render,
        *,
        retry_base_s: float,
        policy: FetchPolicy,
        clock: Callable[[], float] = time.time,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.store, self.render, self.retry_base_s, self.policy = store, render, retry_base_s, policy
        self.clock, self.resolver = clock, resolver

    async def run(self) -> None:
        """Until cancelled (attempts under way are dropped; their leases run out and they come due again)."""
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while True:
                for delivery in await self._claim(CONCURRENCY - len(in_flight)):
                    task = asyncio.create_task(self._deliver(delivery), name=f"webhook {delivery.id}")
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                await asyncio.sleep(POLL_S)
        finally:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)

    async def _claim(self, room: int) -> list[WebhookDelivery]:
        if room <= 0:
            return []
        try:
            return await asyncio.to_thread(self.store.claim_webhook_deliveries, self.clock(), room, LEASE_S)
        except Unavailable as exc:  # the database is away: no traceback twice a second while it is
            log.warning("could not read the webhook outbox: %s", exc)
            return []
        except Exception:
            log.exception("could not read the webhook outbox")
            return []

    async def _deliver(self, delivery: WebhookDelivery) -> None:
        try:
            await self._attempt(delivery)
        except Exception:  # the lease runs out and the delivery is tried again
            log.exception("webhook %s of job %s: the attempt failed", delivery.id, delivery.job_id)

    async def _attempt(self, delivery: WebhookDelivery) -> None:
        payload = delivery.payload
        if payload is None:
            try:
                payload = await asyncio.to_thread(self.render, delivery)
            except NotReady:
                await asyncio.to_thread(
                    self.store.postpone_webhook_delivery, delivery.id, self.clock() + NOT_READY_S
                )
                return
            except Undeliverable as exc:
                await self._record(delivery, "", str(exc), give_up=True)
                return
        error, give_up = await self._post(delivery, payload)
        await self._record(delivery, payload, error, give_up=give_up)

    async def _post(self, delivery: WebhookDelivery, payload: str) -> tuple[str | None, bool]:
        """(None, _) when delivered; else (why, whether to give up)."""
        try:
            [address, *_] = await checked_addresses(delivery.url, self.policy, resolver=self.resolver)
            pinned = pin(httpx.URL(delivery.url), address)
        except InvalidInput as exc:
            return exc.message, True
        except httpx.InvalidURL as exc:
            return f"cannot connect to {address} ({exc})", True
        now = self.clock()
        secrets = await asyncio.to_thread(self.store.webhook_secrets, delivery.owner, now)
        body = payload.encode()
        headers = signed_headers(secrets, delivery.id, int(now), body) | {
            "Content-Type": "application/json",
            "User-Agent": f"reangle/{__version__}",
        }
        try:
            async with pinned_client(ATTEMPT_TIMEOUT_S) as client:
                response = await client.send(pinned.request(client, "POST", content=body, headers=headers))
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__, False
        if response.is_success:
            return None, False
        answer = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
        return answer, response.status_code == 410

    async def _record(
        self, delivery: WebhookDelivery, payload: str, error: str | None, *, give_up: bool
    ) -> None:
        attempts = delivery.attempts + 1
        delay = None if error is None or give_up else retry_delay(attempts, self.retry_base_s)
        retry_at = None if delay is None else self.clock() + delay
        if error is None:
            log.info("webhook %s (%s of job %s) delivered", delivery.id, delivery.type, delivery.job_id)
        elif retry_at is None:
            log.warning(
                "webhook %s of job %s: giving up after %d of %d attempts (%s)",
                delivery.id,
                delivery.job_id,
                attempts,
                MAX_ATTEMPTS,
                error,
            )
        else:
            log.info(
                "webhook %s of job %s: attempt %d failed (%s); again in %.1f s",
                delivery.id,
                delivery.job_id,
                attempts,
                error,
                delay,
            )
        await asyncio.to_thread(
            self.store.record_webhook_attempt,
            delivery.id,
            self.clock(),
            payload=payload,
            error=error,
            retry_at=retry_at,
        )
