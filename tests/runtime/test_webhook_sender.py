"""The webhook sender's attempts against real HTTP receivers on 127.0.0.1 (tests/webhook_receiver.py), with
deliveries in a real SQLite outbox.

A webhook goes to the address its host was checked at: the name is resolved once, for the check, and the
connection is made to that address (a second lookup could answer a private one: DNS rebinding). Each attempt
has one deadline however the receiver trickles its answer, never reads the response body, and a name that
does not resolve is tried again while a target the SSRF rules refuse is given up at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from reangle.core.jobs import Job, JobKind, JobStatus, StatusChange, WebhookTarget
from reangle.core.ports import NewJob, WebhookDelivery
from reangle.errors import Unavailable
from reangle.runtime import webhook_sender
from reangle.runtime.webhook_sender import CONCURRENCY, LEASE_S, WebhookSender
from reangle.store.sqlite import SqliteStore
from reangle.store.url_fetch import FetchPolicy, Resolver
from tests.webhook_receiver import ENDLESS_BODY, TRICKLE, TRICKLE_S, Receiver

HOOK_HOST = "hooks.example.test"  # no DNS knows it: only the sender's resolver does
JOB_ID = "job_1"
PAYLOAD = '{"id": "job_1"}'
RETRY_BASE_S = 0.2


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


def delivery(url: str) -> WebhookDelivery:
    return WebhookDelivery(
        id="msg_1", job_id=JOB_ID, owner="owner-1", url=url, type="job.succeeded", created_at=1.0
    )


def hook_url(receiver: Receiver) -> str:
    return f"http://{HOOK_HOST}:{receiver.server.server_address[1]}/hook"


def fake_resolver(answers: Sequence[list[str] | OSError], lookups: list[str] | None = None) -> Resolver:
    """Answers each lookup with the next of `answers`: addresses, or an error to raise."""
    pending = list(answers)

    async def resolve(host: str) -> list[str]:
        if lookups is not None:
            lookups.append(host)
        answer = pending.pop(0)
        if isinstance(answer, OSError):
            raise answer
        return answer

    return resolve


def sender(
    store: SqliteStore,
    answers: Sequence[list[str] | OSError],
    lookups: list[str] | None = None,
    *,
    allow_private: bool = True,
    attempt_timeout_s: float = 5.0,
    lease_s: float = LEASE_S,
) -> WebhookSender:
    def render(delivery: WebhookDelivery) -> str:
        return PAYLOAD

    return WebhookSender(
        store,
        render,
        retry_base_s=RETRY_BASE_S,
        policy=FetchPolicy(allow_private=allow_private, timeout_s=5),
        resolver=fake_resolver(answers, lookups),
        attempt_timeout_s=attempt_timeout_s,
        lease_s=lease_s,
    )


def due_delivery(store: SqliteStore, url: str) -> WebhookDelivery:
    """The one delivery of a job with a webhook at `url`, canceled just now, claimed as the sender claims."""
    hooked_job(store, JOB_ID, url, at=time.time())
    return claimed_again(store)


def claimed_again(store: SqliteStore) -> WebhookDelivery:
    """The delivery, claimed once it is due (waiting for that up to a few seconds)."""
    deadline = time.monotonic() + 5
    while True:
        claimed = store.claim_webhook_deliveries(time.time(), 1, LEASE_S)
        if claimed:
            [due] = claimed
            return due
        assert time.monotonic() < deadline, store.webhook_deliveries(JOB_ID)
        time.sleep(0.02)


def recorded(store: SqliteStore) -> WebhookDelivery:
    [row] = store.webhook_deliveries(JOB_ID)
    return row


def test_the_post_goes_to_the_checked_address_with_the_hosts_name(
    store: SqliteStore, receiver: Receiver
) -> None:
    lookups: list[str] = []
    # were the name looked up again to connect, the second answer would be used: a metadata address
    hooks = sender(store, [["127.0.0.1"], ["169.254.169.254"]], lookups)

    error, _ = asyncio.run(hooks._post(delivery(hook_url(receiver)), PAYLOAD))

    assert error is None
    assert lookups == [HOOK_HOST]
    [received] = receiver.wait_for(1)
    assert received.headers["host"] == f"{HOOK_HOST}:{receiver.server.server_address[1]}"
    assert received.body == PAYLOAD.encode()
    assert received.headers["webhook-id"] == "msg_1"


def test_an_attempt_takes_at_most_a_third_of_the_lease(store: SqliteStore) -> None:
    assert sender(store, [], attempt_timeout_s=5).attempt_timeout_s == 5.0
    assert sender(store, [], attempt_timeout_s=10, lease_s=12).attempt_timeout_s == 4.0


def test_a_trickling_receiver_times_out_within_the_limit_and_is_retried(store: SqliteStore) -> None:
    receiver = Receiver([TRICKLE])  # then 200
    try:
        hooks = sender(store, [["127.0.0.1"], ["127.0.0.1"]], attempt_timeout_s=0.5)
        first = due_delivery(store, hook_url(receiver))

        started = time.monotonic()
        asyncio.run(hooks._attempt(first))
        took = time.monotonic() - started

        # each byte comes well within httpx's read timeout: only the attempt's deadline ends it
        assert 0.5 <= took < TRICKLE_S / 3
        failed = recorded(store)
        assert failed.attempts == 1
        assert failed.last_error == "timed out: no response status and headers within 0.5 s"
        assert failed.given_up_at is None
        assert failed.next_attempt_at is not None
        assert failed.next_attempt_at - time.time() <= RETRY_BASE_S * 1.2  # the first wait of the schedule
        assert_hung_up(receiver, 1)

        asyncio.run(hooks._attempt(claimed_again(store)))

        delivered = recorded(store)
        assert (delivered.attempts, delivered.last_error) == (2, None)
        assert delivered.delivered_at is not None
        requests = receiver.wait_for(2)
        assert requests[0].headers["webhook-id"] == requests[1].headers["webhook-id"] == first.id
    finally:
        receiver.close()


def test_a_body_that_never_ends_is_not_read(store: SqliteStore) -> None:
    receiver = Receiver([ENDLESS_BODY])
    try:
        hooks = sender(store, [["127.0.0.1"]], attempt_timeout_s=5.0)

        error, give_up = asyncio.run(hooks._post(delivery(hook_url(receiver)), PAYLOAD))

        # had the sender waited for the body, the attempt's deadline would have ended it with an error
        assert (error, give_up) == (None, False)
        assert_hung_up(receiver, 1)
    finally:
        receiver.close()


@pytest.mark.parametrize(
    ("failed_lookup", "says"),
    [
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "could not be resolved (gaierror"),
        ([], "resolved to no address"),
    ],
)
def test_a_name_that_does_not_resolve_is_tried_again(
    store: SqliteStore, receiver: Receiver, failed_lookup: list[str] | OSError, says: str
) -> None:
    hooks = sender(store, [failed_lookup, ["127.0.0.1"]])

    asyncio.run(hooks._attempt(due_delivery(store, hook_url(receiver))))

    failed = recorded(store)
    assert failed.attempts == 1
    assert failed.last_error is not None
    assert failed.last_error.startswith(HOOK_HOST)
    assert says in failed.last_error
    assert failed.given_up_at is None
    assert failed.next_attempt_at is not None
    assert receiver.requests == []

    asyncio.run(hooks._attempt(claimed_again(store)))

    assert recorded(store).delivered_at is not None
    assert len(receiver.wait_for(1)) == 1


def test_a_target_the_rules_refuse_is_given_up_at_once(store: SqliteStore, receiver: Receiver) -> None:
    hooks = sender(store, [["169.254.169.254"]], allow_private=False)

    asyncio.run(hooks._attempt(due_delivery(store, hook_url(receiver))))

    given_up = recorded(store)
    assert given_up.attempts == 1
    assert given_up.given_up_at is not None
    assert given_up.next_attempt_at is None
    why = f"{HOOK_HOST} resolves to a link-local address"
    assert given_up.last_error == f"refusing to call {hook_url(receiver)}: {why}"
    assert store.claim_webhook_deliveries(time.time() + 10**6, 1, LEASE_S) == []  # never again
    assert receiver.requests == []


def assert_hung_up(receiver: Receiver, count: int) -> None:
    """The sender closed the connection of each misbehaving answer (it did not leave it open)."""
    deadline = time.monotonic() + 5
    while len(receiver.hang_ups) < count:
        assert time.monotonic() < deadline, "the sender kept the connection open"
        time.sleep(0.02)


def test_a_retry_for_a_job_deleted_meanwhile_is_given_up(store: SqliteStore) -> None:
    failing = Receiver(statuses=[500])
    try:
        hooks = sender(store, [["127.0.0.1"]])
        asyncio.run(hooks._attempt(due_delivery(store, hook_url(failing))))
        assert recorded(store).next_attempt_at is not None  # to be tried again
        store.delete_finished_before(time.time() + 1)  # the retention sweep
        asyncio.run(hooks._attempt(claimed_again(store)))
    finally:
        failing.close()
    given_up = recorded(store)
    assert given_up.given_up_at is not None
    assert given_up.last_error == f"job {JOB_ID} was deleted before its webhook was delivered"
    assert len(failing.requests) == 1


def test_a_hanging_receiver_holds_at_most_two_attempts_and_never_the_others(
    store: SqliteStore, receiver: Receiver
) -> None:
    """Many more deliveries due to a receiver that never answers than the sender runs at once, all due before
    one to a healthy receiver: that one still goes out at once, not after the timeouts or after the backlog
    was claimed and put back."""
    with socket.socket() as silent:  # accepts connections (the kernel does) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(32)
        hanging = f"http://{HOOK_HOST}:{silent.getsockname()[1]}/hook"
        now = time.time()
        for number in range(200):
            hooked_job(store, f"job_hang_{number}", hanging, at=now - 10 + number * 0.01)
        hooked_job(store, JOB_ID, hook_url(receiver), at=now)

        started = time.monotonic()
        send_for(loopback_sender(store, attempt_timeout_s=5), 2)  # as long as the request may take
        [request] = receiver.wait_for(1, timeout=0.1)
        assert request.at - started < 2  # the timeouts at the silent receiver are 5 s
        assert request.headers["webhook-id"] == recorded(store).id


def test_one_keys_hanging_receivers_on_many_ports_never_hold_every_attempt(
    store: SqliteStore, receiver: Receiver
) -> None:
    """A key whose receivers never answer, on as many ports as the sender runs attempts: another key's
    delivery, due after all of theirs, still goes out at once."""
    with contextlib.ExitStack() as sockets:
        hanging = []
        for _ in range(CONCURRENCY):
            silent = sockets.enter_context(socket.socket())
            silent.bind(("127.0.0.1", 0))
            silent.listen(8)
            hanging.append(f"http://{HOOK_HOST}:{silent.getsockname()[1]}/hook")
        now = time.time()
        for number in range(2 * CONCURRENCY):
            url = hanging[number % CONCURRENCY]
            hooked_job(store, f"job_hang_{number}", url, at=now - 10 + number * 0.01, owner="owner-2")
        hooked_job(store, JOB_ID, hook_url(receiver), at=now)

        started = time.monotonic()
        send_for(loopback_sender(store, attempt_timeout_s=5), 2)  # as long as the request may take
        [request] = receiver.wait_for(1, timeout=0.1)
        assert request.at - started < 2  # the timeouts at the silent receivers are 5 s


def test_one_keys_many_deliveries_to_quick_receivers_go_out_within_seconds(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More due deliveries of one key than it may have attempts at once: those put back are due again as
    soon as the quick attempts before them are done, not an attempt's whole time later."""
    monkeypatch.setattr(webhook_sender, "POLL_S", 0.1)  # six rounds of PER_OWNER attempts, each a poll apart
    receivers = [Receiver() for _ in range(4)]
    try:
        now = time.time()
        for number in range(24):
            hooked_job(store, f"job_{number}", hook_url(receivers[number % 4]), at=now - 10 + number * 0.01)

        hooks = loopback_sender(store, attempt_timeout_s=10)

        async def send_until_delivered() -> None:
            task = asyncio.create_task(hooks.run())
            try:
                while sum(len(receiver.requests) for receiver in receivers) < 24:
                    await asyncio.sleep(0.05)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

        started = time.monotonic()
        asyncio.run(asyncio.wait_for(send_until_delivered(), timeout=30))
        assert time.monotonic() - started < 8  # put back for an attempt's time (10 s): over 10 s
    finally:
        for receiver in receivers:
            receiver.close()


def loopback_sender(store: SqliteStore, *, attempt_timeout_s: float) -> WebhookSender:
    """A sender whose every host name resolves to 127.0.0.1."""

    async def resolve(host: str) -> list[str]:
        return ["127.0.0.1"]

    hooks = sender(store, [], attempt_timeout_s=attempt_timeout_s)
    hooks.resolver = resolve
    return hooks


def send_for(hooks: WebhookSender, seconds: float) -> None:
    async def sending() -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await hooks.run()

    asyncio.run(sending())


def hooked_job(store: SqliteStore, job_id: str, url: str, *, at: float, owner: str = "owner-1") -> None:
    """A job of `owner` with a webhook at `url`, canceled at `at`: its job.canceled delivery is due from then
    on."""
    job = Job(
        id=job_id,
        owner=owner,
        model="qwen-edit-multiangle-2511",
        kind=JobKind.ORBIT,
        input={},
        created_at=at,
        history=(StatusChange(status=JobStatus.QUEUED, at=at),),
        webhook=WebhookTarget(url=url, base_url="https://api.test"),
    )
    store.insert_jobs([NewJob(job=job)])
    store.cancel(job_id, at)


def test_an_outbox_the_store_cannot_read_is_said_once_and_once_more_when_it_can(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    hooks = sender(store, [])
    claim = store.claim_webhook_deliveries
    refusals = [Unavailable("the job database cannot be reached")] * 3

    def fake_claim(*args: Any, **skipped: Any) -> list[WebhookDelivery]:  # the store away for three polls
        if refusals:
            raise refusals.pop()
        return claim(*args, **skipped)

    monkeypatch.setattr(store, "claim_webhook_deliveries", fake_claim)
    with caplog.at_level(logging.INFO, "reangle.webhooks"):
        for _ in range(4):
            asyncio.run(hooks._claim(1))
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "could not read the webhook outbox: the job database cannot be reached; trying again every 5 s",
        "the webhook outbox can be read again",
    ]
    assert hooks.outbox_trouble is None
