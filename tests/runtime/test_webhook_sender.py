"""A webhook goes to the address its host was checked at: the name is resolved once, for the check, and the
connection is made to that address (a second lookup could answer a private one: DNS rebinding)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from reangle.core.ports import WebhookDelivery
from reangle.runtime.webhook_sender import WebhookSender
from reangle.store.sqlite import SqliteStore
from reangle.store.url_fetch import FetchPolicy
from tests.webhook_receiver import Receiver

HOOK_HOST = "hooks.example.test"  # no DNS knows it: only the sender's resolver does


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


def delivery(url: str) -> WebhookDelivery:
    return WebhookDelivery(
        id="msg_1", job_id="job_1", owner="owner-1", url=url, type="job.succeeded", created_at=1.0
    )


def sender(
    store: SqliteStore, answers: list[str], lookups: list[str], *, allow_private: bool
) -> WebhookSender:
    async def fake_resolver(host: str) -> list[str]:
        lookups.append(host)
        return [answers.pop(0)]

    def unused_render(delivery: WebhookDelivery) -> str:
        raise AssertionError("the payload is given")

    return WebhookSender(
        store,
        unused_render,
        retry_base_s=1,
        policy=FetchPolicy(allow_private=allow_private, timeout_s=5),
        resolver=fake_resolver,
    )


def test_the_post_goes_to_the_checked_address_with_the_hosts_name(
    store: SqliteStore, receiver: Receiver
) -> None:
    port = receiver.server.server_address[1]
    lookups: list[str] = []
    # were the name looked up again to connect, the second answer would be used: a metadata address
    hooks = sender(store, ["127.0.0.1", "169.254.169.254"], lookups, allow_private=True)

    error, _ = asyncio.run(hooks._post(delivery(f"http://{HOOK_HOST}:{port}/hook"), '{"id": "job_1"}'))

    assert error is None
    assert lookups == [HOOK_HOST]
    [received] = receiver.wait_for(1)
    assert received.headers["host"] == f"{HOOK_HOST}:{port}"
    assert received.body == b'{"id": "job_1"}'
    assert received.headers["webhook-id"] == "msg_1"


def test_a_host_that_resolves_to_a_private_address_is_refused_for_good(
    store: SqliteStore, receiver: Receiver
) -> None:
    port = receiver.server.server_address[1]
    hooks = sender(store, ["127.0.0.1"], [], allow_private=False)

    error, give_up = asyncio.run(hooks._post(delivery(f"http://{HOOK_HOST}:{port}/hook"), "{}"))

    assert give_up
    assert error is not None
    assert "127.0.0.1" in error
    assert receiver.requests == []
