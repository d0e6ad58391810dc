"""Signed, expiring download links: an HMAC over (asset id, expiry); a link needs no auth header."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from reangle.errors import Forbidden


class UrlSigner:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    @classmethod
    def from_setting_or_file(cls, secret: str | None, data_dir: Path) -> UrlSigner:
        """The configured secret, else one generated once and kept in the data directory."""
        if secret:
            return cls(secret.encode())
        path = data_dir / "signing.key"
        if not path.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as key_file:
                key_file.write(secrets.token_hex(32))
        return cls(path.read_text().strip().encode())

    def signature(self, asset_id: str, expires: int) -> str:
        message = f"{asset_id}:{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def verify(self, asset_id: str, expires: int, signature: str, now: float) -> None:
        # compare_digest refuses non-ASCII text with a TypeError: such a signature is simply wrong
        if not (signature.isascii() and hmac.compare_digest(self.signature(asset_id, expires), signature)):
            raise Forbidden("the signature of this link is wrong", hint="ask the API for a fresh asset URL")
        if expires < now:
            raise Forbidden("this link has expired", hint="ask the API for a fresh asset URL")
