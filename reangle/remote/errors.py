"""Errors of remote providers that reangle's tree (`reangle.errors`) does not name yet. Each subclasses the
error every dialect already maps, so they need no new mapping: a dialect that knows them can say more."""

from __future__ import annotations

from reangle.errors import EngineError, InvalidInput


class ProviderConfigError(EngineError):
    """The remote provider refused the server's own credentials or setup (key, region, account); the operator
    has to fix the server's settings, the caller can do nothing about it."""

    code = "provider_config"


class ContentRefused(InvalidInput):
    """The provider's content moderation refused the prompt, an input image or the generated result."""

    code = "content_refused"
