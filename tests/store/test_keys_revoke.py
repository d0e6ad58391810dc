"""Listing and removing stored API keys, on both stores: what `reangle keys list` and `revoke` rest on."""

from __future__ import annotations

import pytest

from reangle.api.auth import STORED_KEY_TRUST_S, KeyRing, create_key, hash_key
from reangle.core.ports import ApiKeyRecord, JobStore
from reangle.errors import Unauthorized
from tests.store.conftest import StoreOpener
from tests.store.test_job_stores import T0


def test_keys_are_listed_oldest_first_without_their_hashes(job_store: JobStore) -> None:
    assert job_store.list_api_keys() == []
    job_store.insert_api_key("key_b", "ci", "hash-b", T0 + 1)
    job_store.insert_api_key("key_a", "laptop", "hash-a", T0)
    listed = job_store.list_api_keys()
    assert listed == [
        ApiKeyRecord(id="key_a", name="laptop", created_at=T0),
        ApiKeyRecord(id="key_b", name="ci", created_at=T0 + 1),
    ]
    assert "hash-a" not in repr(listed)


def test_a_deleted_key_is_gone_for_every_store_on_the_database(open_store: StoreOpener) -> None:
    first, second = open_store(), open_store()
    key_id, key = create_key(first, "ci")
    create_key(first, "other")
    assert second.delete_api_key(key_id) is True
    assert first.delete_api_key(key_id) is False  # already gone: nothing to delete
    assert first.api_key_id(hash_key(key)) is None
    assert not first.has_api_key(key_id)
    assert [record.name for record in first.list_api_keys()] == ["other"]
    assert first.count_api_keys() == 1


def test_a_key_ring_refuses_a_deleted_key_once_its_trust_runs_out(open_store: StoreOpener) -> None:
    store = open_store()
    key_id, key = create_key(store, "ci")
    now = [0.0]
    ring = KeyRing(store, enabled=True, clock=lambda: now[0])
    assert ring.owner(key) == key_id
    assert open_store().delete_api_key(key_id)
    now[0] = STORED_KEY_TRUST_S + 0.1  # the delay the README promises ("within 10 seconds")
    with pytest.raises(Unauthorized):
        ring.owner(key)


def test_deleting_an_unknown_key_changes_nothing(job_store: JobStore) -> None:
    job_store.insert_api_key("key_a", "laptop", "hash-a", T0)
    assert job_store.delete_api_key("key_missing") is False
    assert [record.id for record in job_store.list_api_keys()] == ["key_a"]
