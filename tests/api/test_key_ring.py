"""KeyRing remembers a stored key it has found, for STORED_KEY_TRUST_S: a client polling a job costs no key
query per request, and a key deleted from the database stops working once that time has passed."""

from __future__ import annotations

import contextlib
import sqlite3

import pytest

from reangle.api.auth import ANONYMOUS, STORED_KEY_TRUST_S, KeyRing, create_key
from reangle.errors import Unauthorized
from reangle.store.sqlite import SqliteStore


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def key_queries(store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The key hashes the store is asked about, in order."""
    asked: list[str] = []
    lookup = store.api_key_id

    def counted(key_hash: str) -> str | None:
        asked.append(key_hash)
        return lookup(key_hash)

    monkeypatch.setattr(store, "api_key_id", counted)
    return asked


def test_a_found_key_is_not_queried_again_within_the_trust_time(
    store: SqliteStore, key_queries: list[str]
) -> None:
    clock = FakeClock()
    keys = KeyRing(store, enabled=True, clock=clock)
    key_id, key = create_key(store, "poller")
    assert keys.owner(key) == key_id
    clock.now += STORED_KEY_TRUST_S * 0.9
    assert keys.owner(key) == key_id
    assert len(key_queries) == 1
    clock.now += STORED_KEY_TRUST_S
    assert keys.owner(key) == key_id
    assert len(key_queries) == 2


def test_a_deleted_key_stops_working_once_the_trust_time_has_passed(store: SqliteStore) -> None:
    clock = FakeClock()
    keys = KeyRing(store, enabled=True, clock=clock)
    key_id, key = create_key(store, "revoked")
    assert keys.owner(key) == key_id
    with contextlib.closing(sqlite3.connect(store.path)) as operator:  # as with `sqlite3`
        operator.execute("DELETE FROM api_keys WHERE id = ?", (key_id,))
        operator.commit()
    assert keys.owner(key) == key_id  # still trusted
    clock.now += STORED_KEY_TRUST_S + 0.001
    with pytest.raises(Unauthorized, match="not valid"):
        keys.owner(key)


def test_an_unknown_key_is_asked_about_every_time(store: SqliteStore, key_queries: list[str]) -> None:
    keys = KeyRing(store, enabled=True, clock=FakeClock())
    for _ in range(3):
        with pytest.raises(Unauthorized, match="not valid"):
            keys.owner("rk_unknown")
    assert len(key_queries) == 3
    key_id, key = create_key(store, "made later")
    assert keys.owner(key) == key_id


def test_env_keys_and_auth_off_need_no_query(store: SqliteStore, key_queries: list[str]) -> None:
    keys = KeyRing(store, enabled=True, env_keys="rk_env_1, rk_env_2")
    assert keys.owner("rk_env_2").startswith("env_")
    assert KeyRing(store, enabled=False).owner(None) == ANONYMOUS
    assert key_queries == []
