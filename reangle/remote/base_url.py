"""The check of a vendor endpoint setting (`REANGLE_DASHSCOPE_BASE_URL`), shared by the settings, which refuse
a bad one at startup, and the client's config. Imports nothing heavy: the settings load it."""

from __future__ import annotations

from urllib.parse import urlsplit

#: Where every path of the vendor's API starts; a path before it (a proxy's prefix) is kept.
API_PATH = "/api/v1"
#: The path of the vendor's OpenAI-compatible API, easily copied from its docs for the base URL.
OPENAI_COMPATIBLE_PATH = "/compatible-mode/v1"


def base_url_problem(url: str) -> str | None:
    """What is wrong with `url` as the scheme and host that an API's paths are appended to; None when it is
    usable. The URL itself is not repeated (it could carry credentials)."""
    try:
        parts = urlsplit(url.strip())
        _ = parts.port  # raises on a port that is not a number
    except ValueError:
        return "it is not a valid URL"
    if parts.scheme.lower() not in ("http", "https"):
        return "it has no http:// or https:// scheme"
    if not parts.hostname:
        return "it has no host"
    if parts.username is not None or parts.password is not None:
        return "it must not carry credentials (the API key has a setting of its own)"
    if parts.query or parts.fragment:
        return "it must not have a query or a fragment (the API's paths are appended to it)"
    if parts.path.rstrip("/").endswith(API_PATH):
        # the vendor's own SDKs take the base URL with this path: here it would be doubled
        return f"it must not end in {API_PATH} (the API's paths, {API_PATH}/..., are appended to it)"
    if parts.path.rstrip("/").endswith(OPENAI_COMPATIBLE_PATH):
        return (
            f"{OPENAI_COMPATIBLE_PATH} is the vendor's OpenAI-compatible API, not the one its image models "
            "take: use the scheme and host"
        )
    return None
