"""The CLI's commands against a fake server (through the client's transport), and an input photo."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from reangle.cli import remote
from reangle.client import Client
from tests.client.fakes import FakeServer
from tests.conftest import make_image


def answer_with(monkeypatch: pytest.MonkeyPatch, handle: Callable[[httpx.Request], httpx.Response]) -> None:
    """The CLI's clients send their requests to `handle` (a FakeServer's, or one wrapping it)."""

    def factory(base_url: str, api_key: str | None) -> Client:
        return Client(base_url, api_key, transport=httpx.MockTransport(handle), poll_interval=0.01)

    monkeypatch.setattr(remote, "client_factory", factory)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    fake = FakeServer()
    answer_with(monkeypatch, fake.handle)
    return fake


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    make_image(64, 48).save(path)
    return path
