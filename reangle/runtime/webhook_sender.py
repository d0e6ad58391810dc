"""The webhook sender: takes due deliveries from the outbox and POSTs them, signed, beside the job runner.

Each delivery is claimed with a lease (on PostgreSQL with SKIP LOCKED), so that of several processes sending
from one database only one holds a delivery at a time; one that dies mid-attempt lets its leases run out and
the deliveries come due again. At most CONCURRENCY attempts run at once, at most PER_HOST to one receiver and
PER_OWNER for one key's jobs: a delivery claimed past a limit is put back for BUSY_RETRY_S. So a
receiver that hangs or is down holds at most PER_HOST slots, a key's receivers at most PER_OWNER, never the
others or any job: jobs never wait on deliveries.

Each attempt (the lookup of the target's host, the connection, the request and the response's status line and
headers) has one deadline, `attempt_timeout_s`, at most a third of the lease, so that an attempt ends long
before another sender could take the delivery and send it twice. Only the status is read: the response body is
never read and the connection is closed, so a receiver that trickles its answer or never ends its body holds
the sender no longer than the deadline.

An attempt succeeds on 2xx; 410 gives the delivery up; anything else (another status, a redirect, which is
not followed, a connection error, a host name that does not resolve, or the deadline passing) is tried again
after `retry_delay` until MAX_ATTEMPTS. The target is checked against the SSRF rules again before each attempt
(a host may resolve elsewhere by now): a refused target is given up at once, saying why.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial

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
#: Attempts at once to one receiver (host and port).
PER_HOST = 2
#: Attempts at once for one API key's jobs: a key whose receivers hang (on many ports or hosts) holds at most
#: these slots, never all of them, so the other keys' deliveries still go out.
PER_OWNER = 4
#: A delivery claimed while its receiver or its key has all its attempts under way is due again this soon: a
#: healthy receiver's attempts take milliseconds (a hanging one's put back this often: a write a second).
BUSY_RETRY_S = 1.0
#: How often the outbox is looked at for due deliveries; while the store cannot be read, OUTBOX_RETRY_S.
POLL_S = 0.5
OUTBOX_RETRY_S = 5.0
#: How long a claimed delivery is kept from other senders: past any attempt (render, check, POST, record).
LEASE_S = 6 * ATTEMPT_TIMEOUT_S
#: An attempt may take at most this part of the lease.
MAX_LEASE_SHARE = 1 / 3
#: A RunPod batch with items still running is looked at again after this long.
NOT_READY_S = 2.0

Render = Callable[[WebhookDelivery], str]


class NameNotResolved(Exception):
    """The target's host name does not resolve (now): a failed attempt, tried again like a refused
    connection (DNS can come back), unlike a target the SSRF rules refuse."""


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
        attempt_timeout_s: float = ATTEMPT_TIMEOUT_S,
        lease_s: float = LEASE_S,
    ) -> None:
        self.store, self.render, self.retry_base_s = store, render, retry_base_s
        self.clock, self.resolver, self.lease_s = clock, resolver, lease_s
        self.attempt_timeout_s = min(attempt_timeout_s, lease_s * MAX_LEASE_SHARE)
        # The attempt's own deadline, earlier, governs: a slow lookup is a timed-out attempt, tried again,
        # not a refused target.
        self.policy = replace(policy, timeout_s=self.attempt_timeout_s + 1)
        #: Why the outbox could not be read, while it cannot (said once, and once more when it can again).
        self.outbox_trouble: str | None = None

    async def run(self) -> None:
        """Until cancelled (attempts under way are dropped; their leases run out and they come due again)."""
        in_flight: set[asyncio.Task[None]] = set()
        per_host: Counter[str] = Counter()
        per_owner: Counter[str] = Counter()

        def ended(host: str, owner: str, task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            for counter, key in ((per_host, host), (per_owner, owner)):
                counter[key] -= 1
                if not counter[key]:
                    del counter[key]

        try:
            while True:
                busy_hosts = [host for host, count in per_host.items() if count >= PER_HOST]
                busy_owners = [owner for owner, count in per_owner.items() if count >= PER_OWNER]
                for delivery in await self._claim(CONCURRENCY - len(in_flight), busy_owners, busy_hosts):
                    host, owner = receiver_of(delivery.url), delivery.owner
                    if per_host[host] >= PER_HOST or per_owner[owner] >= PER_OWNER:
                        await self._put_back(delivery, self.clock() + BUSY_RETRY_S)
                        continue
                    per_host[host] += 1
                    per_owner[owner] += 1
                    task = asyncio.create_task(self._deliver(delivery), name=f"webhook {delivery.id}")
                    in_flight.add(task)
                    task.add_done_callback(partial(ended, host, owner))
                await asyncio.sleep(POLL_S if self.outbox_trouble is None else OUTBOX_RETRY_S)
        finally:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)

    async def _claim(
        self, room: int, busy_owners: Sequence[str] = (), busy_hosts: Sequence[str] = ()
    ) -> list[WebhookDelivery]:
        """Due deliveries, none of a key or to a receiver that has all its attempts under way: a backlog to a
        receiver that hangs is not claimed (and put back) ahead of every other receiver's."""
        if room <= 0:
            return []
        claim = partial(self.store.claim_webhook_deliveries, skip_owners=busy_owners, skip_origins=busy_hosts)
        try:
            claimed = await asyncio.to_thread(claim, self.clock(), room, self.lease_s)
        except Unavailable as exc:  # the database is away: one line, not one each poll while it is
            if self.outbox_trouble is None:
                log.warning(
                    "could not read the webhook outbox: %s; trying again every %g s", exc, OUTBOX_RETRY_S
                )
            self.outbox_trouble = str(exc)
            return []
        except Exception:
            log.exception("could not read the webhook outbox")
            return []
        if self.outbox_trouble is not None:
            log.info("the webhook outbox can be read again")
            self.outbox_trouble = None
        return claimed

    async def _put_back(self, delivery: WebhookDelivery, at: float) -> None:
        try:
            await asyncio.to_thread(self.store.postpone_webhook_delivery, delivery.id, at)
        except Unavailable as exc:  # its lease runs out instead
            log.warning("could not put webhook %s back: %s", delivery.id, exc)
        except Exception:
            log.exception("could not put webhook %s back", delivery.id)

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
        elif await asyncio.to_thread(self.store.get_job, delivery.job_id) is None:  # a retry
            gone = f"job {delivery.job_id} was deleted before its webhook was delivered"
            await self._record(delivery, payload, gone, give_up=True)
            return
        error, give_up = await self._post(delivery, payload)
        await self._record(delivery, payload, error, give_up=give_up)

    async def _post(self, delivery: WebhookDelivery, payload: str) -> tuple[str | None, bool]:
        """(None, _) when delivered; else (why, whether to give up)."""
        now = self.clock()
        secrets = await asyncio.to_thread(self.store.webhook_secrets, delivery.owner, now)
        body = payload.encode()
        headers = signed_headers(secrets, delivery.id, int(now), body) | {
            "Content-Type": "application/json",
            "User-Agent": f"reangle/{__version__}",
            "Connection": "close",
        }
        try:
            async with asyncio.timeout(self.attempt_timeout_s):
                return await self._send(delivery.url, body, headers)
        except TimeoutError:
            return f"timed out: no response status and headers within {self.attempt_timeout_s:g} s", False

    async def _send(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[str | None, bool]:
        """Check the target, POST, read the status: what `_post` returns."""
        try:
            [address, *_] = await checked_addresses(url, self.policy, resolver=self._resolve)
            pinned = pin(httpx.URL(url), address)
        except NameNotResolved as exc:
            return str(exc), False
        except InvalidInput as exc:  # refused by the SSRF rules, or no usable URL: it will not get better
            return exc.message.replace("refusing to fetch", "refusing to call"), True
        except httpx.InvalidURL as exc:
            return f"cannot connect to {address} ({exc})", True
        try:
            async with pinned_client(self.attempt_timeout_s) as client:
                request = pinned.request(client, "POST", content=body, headers=headers)
                response = await client.send(request, stream=True)
                await response.aclose()  # unread: the body could be endless; the connection is closed
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__, False
        if response.is_success:
            return None, False
        answer = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
        return answer, response.status_code == 410

    async def _resolve(self, host: str) -> Sequence[str]:
        """The resolver's answer; a lookup that fails or finds nothing is NameNotResolved (tried again), which
        the check passes on untouched, rather than an InvalidInput (given up)."""
        try:
            answers = await self.resolver(host)
        except OSError as exc:  # socket.gaierror and the like
            raise NameNotResolved(f"{host} could not be resolved ({type(exc).__name__}: {exc})") from None
        if not answers:
            raise NameNotResolved(f"{host} resolved to no address")
        return answers

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


def receiver_of(url: str) -> str:
    """What PER_HOST counts: the receiver a delivery goes to, as its URL starts (`scheme://host:port`)."""
    scheme, separator, rest = url.partition("://")
    return scheme + separator + re.split(r"[/?#]", rest, maxsplit=1)[0]
