"""Signed, expiring download links: an HMAC over (asset id, expiry); a link needs no auth header."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from reangle.errors import Forbidden, ReangleError

KEY_FILE = "signing.key"
#: A key file shorter than this was cut short (the key written is 64 hex digits).
MIN_KEY_CHARS = 32


class UrlSigner:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    @classmethod
    def from_setting_or_file(cls, secret: str | None, data_dir: Path) -> UrlSigner:
        """The configured secret, else one generated once and kept in the data directory, its owner's only."""
        if secret:
            return cls(secret.encode())
        path = data_dir / KEY_FILE
        if not path.exists():
            _write_new_key(path)
        with contextlib.suppress(PermissionError):  # a file of another user's: theirs to narrow
            if path.stat().st_mode & 0o077:
                path.chmod(0o600)
        key = path.read_text().strip()
        if len(key) < MIN_KEY_CHARS:
            state = "empty" if not key else "too short"
            raise ReangleError(
                f"the download links' signing key {path} is {state}: anyone could sign links with it. Delete "
                "the file and start again to make a new one (the download links given out so far then stop "
                "working), or set REANGLE_SIGNING_SECRET"
            )
        return cls(key.encode())

    def signature(self, asset_id: str, expires: int) -> str:
        message = f"{asset_id}:{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def signed(self, asset_id: str, expires: int, signature: str) -> bool:
        """Whether `signature` is this key's for the link (expired or not)."""
        # compare_digest refuses non-ASCII text with a TypeError: such a signature is simply wrong
        return signature.isascii() and hmac.compare_digest(self.signature(asset_id, expires), signature)

    def verify(self, asset_id: str, expires: int, signature: str, now: float) -> None:
        if not self.signed(asset_id, expires, signature):
            raise Forbidden("the signature of this link is wrong", hint="ask the API for a fresh asset URL")
        if expires < now:
            raise Forbidden("this link has expired", hint="ask the API for a fresh asset URL")


def _write_new_key(path: Path) -> None:
    """A new random key in `path`, which appears whole or not at all (a crash while it is written leaves no
    empty key file); when another process made one meanwhile, theirs is kept."""
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    try:
        with os.fdopen(os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as key_file:
            key_file.write(secrets.token_hex(32))
            key_file.flush()
            os.fsync(key_file.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)
    finally:
        draft.unlink(missing_ok=True)
