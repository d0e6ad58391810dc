"""REANGLE_PORT: a port a server can listen on, or a clear refusal (a wrapped port listened elsewhere)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from reangle.settings import Settings


@pytest.mark.parametrize("port", ["1", "8000", "65535"])
def test_ports_1_to_65535_are_taken(port: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REANGLE_PORT", port)
    assert Settings().port == int(port)


@pytest.mark.parametrize("port", ["0", "65536", "99999", "-1"])
def test_other_ports_are_refused_saying_the_range(port: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REANGLE_PORT", port)
    with pytest.raises(ValidationError, match=f"{port} is not a TCP port: use 1 to 65535"):
        Settings()
