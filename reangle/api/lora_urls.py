"""The check of a request's LoRA URLs at submit, under the SSRF rules of URL fetching (`FetchPolicy`)."""

from __future__ import annotations

import socket

from reangle.core.inputs import UrlCheck
from reangle.errors import InvalidInput
from reangle.store.url_fetch import FetchPolicy, checked_addresses


class _Unresolved(Exception):
    """A host name the submit check leaves to the download (which resolves it, and checks every address)."""


async def _without_dns(host: str) -> list[str]:
    """The addresses of what stands for an address whatever DNS says: `localhost` (RFC 6761) and the numeric
    shorthands of IPv4 (`127.1`). Any other name is left unresolved: a lookup now would slow the submit, and
    could not be trusted later."""
    name = host.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return ["127.0.0.1", "::1"]
    if name and all(part.isdigit() for part in name.split(".")):
        try:  # the resolver reads `127.1` or `2130706433` as an IPv4 address, without asking DNS
            return [socket.inet_ntoa(socket.inet_aton(name))]
        except OSError:
            pass
    raise _Unresolved(host)


def lora_url_check(policy: FetchPolicy) -> UrlCheck:
    """The submit check of a request's LoRA URL: refused (InvalidInput naming its field) where the LoRA
    download would refuse it at its first hop: not a plain http(s) URL, a bad host, or an address `policy`
    refuses (loopback, private, link-local... given as an IP or as localhost). Host names are not looked up:
    the download resolves them and checks every address, as it always did."""

    async def check(url: str, field: str) -> None:
        try:
            await checked_addresses(url, policy, field=field, resolver=_without_dns)
        except _Unresolved:
            return
        except InvalidInput as exc:
            raise exc.about(field) from None

    return check
