"""With auth off, the server answers only requests addressed to itself, so that a web page open in a browser
on the same machine cannot use it: not by sending requests from its own origin (which any page can, even
without reading the answers), nor by a DNS name of its own that it points at this machine (DNS rebinding,
which makes the answers readable)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from reangle.api.errors import error_response

HINT = "turn auth on (REANGLE_AUTH=on) to serve other names and web pages, or set REANGLE_PUBLIC_BASE_URL"


class NoAuthGuard:
    """403 for a request whose Host is a DNS name other than `localhost` and `public_host`, or whose Origin
    (sent by browsers) is another site than the one it is addressed to."""

    def __init__(self, app: ASGIApp, public_host: str | None) -> None:
        self.app = app
        self.public_host = public_host.lower() if public_host else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        problem = self._problem(headers.get("host", ""), headers.get("origin"))
        if problem is None:
            await self.app(scope, receive, send)
            return
        await error_response(403, "forbidden", problem, HINT)(scope, receive, send)

    def _problem(self, host: str, origin: str | None) -> str | None:
        name = _host_name(f"//{host}")
        if host and not (name and (_is_own_name(name) or name == self.public_host)):  # browsers send a Host
            return (
                f"this server runs without auth and answers only requests to its own address, not {host!r} "
                f"(an IP address, localhost, or the host of REANGLE_PUBLIC_BASE_URL)"
            )
        if origin is not None and _netloc(origin) != host.lower():
            return f"this server runs without auth and refuses requests from other sites' pages ({origin})"
        return None


def _host_name(url: str) -> str | None:
    try:
        name = urlsplit(url).hostname
    except ValueError:  # such as an unclosed IPv6 bracket
        return None
    return name.lower() if name else None


def _netloc(url: str) -> str | None:
    try:
        return urlsplit(url).netloc.lower()
    except ValueError:
        return None


def _is_own_name(name: str) -> bool:
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
