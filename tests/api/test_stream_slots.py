"""The per-key limit on open event streams: a slot is taken per stream and given back however it ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from starlette.requests import ClientDisconnect
from starlette.types import Message

from reangle.api.stream_slots import SlotStreamingResponse, StreamSlots
from reangle.errors import TooManyStreams


def test_each_key_has_its_own_slots_and_a_slot_given_back_twice_counts_once() -> None:
    slots = StreamSlots(max_per_owner=2)
    first, _ = slots.take("key_a"), slots.take("key_a")
    with pytest.raises(TooManyStreams, match="this API key has 2 event streams open; each key may have 2"):
        slots.take("key_a")
    slots.take("key_b")  # another key is not held back
    first()
    first()
    assert slots.open_streams("key_a") == 1
    slots.take("key_a")


def test_a_stream_whose_client_is_gone_before_its_first_byte_gives_its_slot_back() -> None:
    slots = StreamSlots(max_per_owner=1)
    started: list[bool] = []

    async def body() -> AsyncIterator[str]:
        started.append(True)  # never reached: its own cleanup could not give the slot back
        yield "event: status\n\n"

    async def gone(message: Message) -> None:
        raise OSError("the client closed the connection")

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    response = SlotStreamingResponse(body(), give_back=slots.take("key_a"), media_type="text/event-stream")
    with pytest.raises(ClientDisconnect):
        asyncio.run(response({"type": "http", "asgi": {"spec_version": "2.4"}}, receive, gone))
    assert started == []
    assert slots.open_streams("key_a") == 0
