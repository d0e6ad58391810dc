"""API keys: made by `reangle keys create` (stored hashed) or given in REANGLE_API_KEYS. A key's id owns
the jobs and assets made with it."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable

from reangle.core.ports import JobStore
from reangle.errors import Unauthorized

ANONYMOUS = "anonymous"
KEY_PREFIX = "rk_"
#: How long a stored key, once found, is trusted without asking the database again (a key deleted from the
#: database stops working after at most this long).
STORED_KEY_TRUST_S = 10.0
#: HTTP authorization schemes (IANA's registry, and the API-key ones other services use) that a refusal may
#: name; any other first word is not repeated, being perhaps the key itself.
OTHER_SCHEMES = frozenset(
    {"basic", "digest", "negotiate", "ntlm", "hoba", "mutual", "vapid", "dpop", "token", "key", "apikey"}
    | {"scram-sha-1", "scram-sha-256", "aws4-hmac-sha256", "gnap", "privatetoken", "concealed"}
)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(store: JobStore, name: str) -> tuple[str, str]:
    """A new random key, stored only as its hash. Returns (key id, key): the key is shown once."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = "key_" + hash_key(key)[:16]
    store.insert_api_key(key_id, name, hash_key(key), time.time())
    return key_id, key


def listed_keys(text: str) -> list[str]:
    """The keys of REANGLE_API_KEYS: comma-separated, blanks around them and empty items left out."""
    return [key.strip() for key in text.split(",") if key.strip()]


def env_key_id(key: str) -> str:
    """The id a key of REANGLE_API_KEYS owns its work under (what `reangle keys list` shows for it)."""
    return "env_" + hash_key(key)[:16]


class KeyRing:
    def __init__(
        self,
        store: JobStore,
        *,
        enabled: bool,
        env_keys: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.enabled, self.clock = store, enabled, clock
        self._env = {hash_key(key): env_key_id(key) for key in listed_keys(env_keys)}
        #: digest -> (key id, trusted until): stored keys found lately, so that a client polling a job does
        #: not cost a query per request. Only keys that exist get in, so it holds at most one per stored key.
        self._found: dict[str, tuple[str, float]] = {}

    def env_key_ids(self) -> set[str]:
        """The ids of the keys given in REANGLE_API_KEYS."""
        return set(self._env.values())

    def owner(self, key: str | None) -> str:
        """The key id that owns what this request makes; Unauthorized for a missing or unknown key."""
        if not self.enabled:
            return ANONYMOUS
        if not key:
            raise Unauthorized("an API key is required", hint="send Authorization: Bearer <key>")
        digest = hash_key(key)
        owner = self._env.get(digest) or self._stored_key_id(digest)
        if owner is None:
            scheme, space, _ = key.partition(" ")
            if space and scheme.lower() in OTHER_SCHEMES:  # `Basic ...` where `Bearer KEY` was wanted
                raise Unauthorized(
                    f"the {scheme} authorization scheme is not taken here",
                    hint="send Authorization: Bearer <key>",
                )
            if space:  # never repeated: it may be the key itself, followed by something else
                raise Unauthorized(
                    "the Authorization header has more than the key after its scheme",
                    hint="send Authorization: Bearer <key>, with nothing after the key",
                )
            raise Unauthorized("this API key is not valid", hint="create one with `reangle keys create`")
        return owner

    def _stored_key_id(self, digest: str) -> str | None:
        now = self.clock()
        found = self._found.get(digest)
        if found is not None and now < found[1]:
            return found[0]
        key_id = self.store.api_key_id(digest)
        if key_id is None:
            self._found.pop(digest, None)
        else:
            self._found[digest] = (key_id, now + STORED_KEY_TRUST_S)
        return key_id


def bearer_token(authorization: str | None) -> str | None:
    """The key from `Bearer KEY` (or a bare `KEY`)."""
    if not authorization:
        return None
    scheme, _, rest = authorization.strip().partition(" ")
    return rest.strip() if scheme.lower() == "bearer" else authorization.strip()
