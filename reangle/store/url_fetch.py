"""Fetch an input image from an http(s) URL without letting the URL reach into the server's own network.

Each hop (the URL, then every redirect) is parsed, its host resolved once by us and every resolved address
checked against the `FetchPolicy` before a byte is sent; the request then goes to exactly the address that was
checked, so a DNS answer that changes between check and connect (rebinding) cannot steer it elsewhere.
Redirects are followed by hand, the body is streamed against a byte limit and one deadline covers the whole
fetch. Whatever is wrong with the URL, the target or the response is an `InvalidInput` naming the field.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import certifi
import httpx
import idna

from reangle import __version__
from reangle.core.inputs import NUL, NUL_MESSAGE
from reangle.errors import InvalidInput, TooLarge, Unavailable

log = logging.getLogger("reangle.server")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], Awaitable[Sequence[str]]]
"""An async callable that turns a host name into the IP addresses (as text) it stands for."""

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_SHOWN_CHARS = 200
_HOST_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?")
#: DNS limits (RFC 1035): a label of at most 63 characters, a name of at most 253 (without its final dot).
MAX_LABEL_CHARS = 63
MAX_HOST_CHARS = 253

_IPV4_CLASSES = tuple(
    (ipaddress.IPv4Network(network), label)
    for network, label in (
        ("0.0.0.0/8", "an unspecified address"),
        ("127.0.0.0/8", "a loopback address"),
        ("10.0.0.0/8", "a private address"),
        ("172.16.0.0/12", "a private address"),
        ("192.168.0.0/16", "a private address"),
        ("169.254.0.0/16", "a link-local address"),
        ("100.64.0.0/10", "a shared (carrier-grade NAT) address"),
        ("224.0.0.0/4", "a multicast address"),
        ("240.0.0.0/4", "a reserved address"),
    )
)
_IPV6_CLASSES = tuple(
    (ipaddress.IPv6Network(network), label)
    for network, label in (
        ("::/128", "an unspecified address"),
        ("::1/128", "a loopback address"),
        ("fc00::/7", "a private (unique local) address"),
        ("fec0::/10", "a private (site-local) address"),
        ("fe80::/10", "a link-local address"),
        ("ff00::/8", "a multicast address"),
        ("::/8", "a reserved address"),  # IPv4-compatible ::a.b.c.d and the like
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def address_class(address: IPAddress) -> str | None:
    """What kind of non-public address this is ("a loopback address", ...), or None for a public one."""
    if isinstance(address, ipaddress.IPv4Address):
        for network4, label in _IPV4_CLASSES:
            if address in network4:
                return label
    else:
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            label4 = address_class(embedded)
            return None if label4 is None else f"{label4} (an IPv4 one inside IPv6)"
        for network6, label in _IPV6_CLASSES:
            if address in network6:
                return label
    # Documentation, benchmarking and protocol ranges: nothing worth fetching lives there.
    return None if address.is_global else "a reserved (non-public) address"


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address that an IPv4-mapped, NAT64 or 6to4 address leads to."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    return address.sixtofour


class PrivateAddress(InvalidInput):
    """A URL refused because it leads to a loopback, private, link-local or other non-public address."""


@dataclass(frozen=True, kw_only=True)
class FetchPolicy:
    """What `fetch_url` may connect to, how much it may read and for how long."""

    allow_private: bool = False  # let loopback, private, link-local, ... targets through (tests, LANs)
    max_bytes: int = 30 * 1024 * 1024
    timeout_s: float = 20.0  # the whole fetch, redirects included
    max_redirects: int = 5

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.timeout_s <= 0 or self.max_redirects < 0:
            raise ValueError(f"invalid {self!r}: limits must be positive")

    def refusal(self, host: str, address: IPAddress) -> str | None:
        """Why `host`, resolved to `address`, must not be fetched from ("a loopback address"), or None.

        The single place where the address rule is applied, for every hop: a subclass can trust more.
        """
        return None if self.allow_private else address_class(address)


async def system_resolver(host: str) -> list[str]:
    """The operating system's answer for `host`: every address, in its order of preference."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def fetch_url(
    url: str, policy: FetchPolicy, *, field: str = "url", resolver: Resolver | None = None
) -> bytes:
    """GET `url`, following redirects, and return the body; every refusal or failure is an InvalidInput."""
    fetcher = _Fetcher(policy=policy, field=field, resolver=resolver or system_resolver)
    try:
        async with asyncio.timeout(policy.timeout_s):
            return await fetcher.run(url)
    except TimeoutError:
        raise fetcher.timed_out(url) from None


async def checked_addresses(
    url: str, policy: FetchPolicy, *, field: str = "url", resolver: Resolver | None = None
) -> list[IPAddress]:
    """Check `url` as `fetch_url` checks its first hop (a plain http(s) URL whose host resolves only to
    addresses the policy allows), sending nothing: its addresses, or an InvalidInput naming `field`."""
    fetcher = _Fetcher(policy=policy, field=field, resolver=resolver or system_resolver)
    parsed = fetcher._checked(url, came_from=None)
    try:
        async with asyncio.timeout(policy.timeout_s):
            return await fetcher._addresses(parsed, _shown(parsed))
    except TimeoutError:
        raise fetcher.timed_out(url) from None


@dataclass(frozen=True)
class PinnedURL:
    """A URL whose host was checked, aimed at the address it was checked at. The request names the address,
    so httpx connects there and resolves nothing (a second lookup could answer a private address); the Host
    header keeps the original name for the server, and for https the `sni_hostname` extension makes httpcore
    send that name in SNI and verify the certificate against it (not against the IP)."""

    url: httpx.URL
    target: httpx.URL

    def request(self, client: httpx.AsyncClient, method: str, **options: Any) -> httpx.Request:
        headers = {"Host": self.url.netloc.decode("ascii"), **options.pop("headers", {})}
        sni = self.url.raw_host.decode("ascii")
        extensions = {"sni_hostname": sni} if self.url.scheme == "https" else {}
        return client.build_request(method, self.target, headers=headers, extensions=extensions, **options)


def pin(url: httpx.URL, address: IPAddress) -> PinnedURL:
    """`url` aimed at `address`, one of the addresses its host was checked to have; httpx.InvalidURL when
    the address cannot stand in a URL."""
    connect_to = address
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        connect_to = address.ipv4_mapped
    return PinnedURL(url=url, target=url.copy_with(host=str(connect_to)))


def pinned_client(timeout_s: float) -> httpx.AsyncClient:
    """A client for pinned requests. Use a fresh one per host: a TLS connection verified for one name must not
    be reused for another on the same address. trust_env=False keeps proxy variables from sending requests
    somewhere that was not checked; redirects are not followed (each hop is checked by the caller)."""
    return httpx.AsyncClient(
        verify=_tls_context(), trust_env=False, timeout=httpx.Timeout(timeout_s), follow_redirects=False
    )


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """Certificates are verified against Mozilla's CA bundle, built once (the same roots httpx uses)."""
    return ssl.create_default_context(cafile=certifi.where())


def _shown(url: str | httpx.URL) -> str:
    """The URL as job errors and the log show it: without its query (a presigned URL's signature, a token),
    which the user who sent it knows and nobody else should read. A URL with a password is refused unshown."""
    text = str(url)
    with contextlib.suppress(httpx.InvalidURL, ValueError):
        parsed = httpx.URL(text)
        text = str(parsed.copy_with(query=None, fragment=None))
        text += "?..." if parsed.query else ""
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


def _url_problem(text: str) -> str | None:
    """What makes `text` unfit to fetch, as the end of a sentence about it, or None when it is fine."""
    try:
        url = httpx.URL(text)
    except (httpx.InvalidURL, ValueError) as exc:
        return f"is not a valid URL ({exc})"
    if not url.scheme:
        return "has no scheme; only http and https URLs are fetched"
    if url.scheme not in ("http", "https"):
        return f"is a {url.scheme}: URL; only http and https URLs are fetched"
    host = url.raw_host.decode("ascii")  # IDNA-encoded; `url.host` would decode it, and can fail doing so
    if not host:
        return "has no host name"
    if _literal_ip(host) is None:
        problem = _host_name_problem(host)
        if problem is not None:
            return problem
    if url.userinfo:
        return "contains a user name or password, which is not accepted"
    if url.port is not None and not 0 < url.port < 65536:
        return f"has an invalid port {url.port}"
    return None


def _host_name_problem(host: str) -> str | None:
    """What makes an (IDNA-encoded) host name unusable, as the end of a sentence about its URL, or None."""
    if not _HOST_NAME.fullmatch(host):
        return f"has an invalid host name {host!r}"
    name = host.removesuffix(".")
    if len(name) > MAX_HOST_CHARS:
        return f"has a host name of {len(name)} characters; at most {MAX_HOST_CHARS} are possible"
    for label in name.split("."):
        if len(label) > MAX_LABEL_CHARS:
            return (
                f"has a host name part of {len(label)} characters ({label[:40]}...); at most "
                f"{MAX_LABEL_CHARS} are possible"
            )
        if label.lower().startswith("xn--"):
            try:
                idna.decode(label)
            except (idna.IDNAError, UnicodeError):
                return f"has an invalid international host name {host!r} ({label!r} is not valid IDNA)"
    return None


def _literal_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


@dataclass(frozen=True)
class _Fetcher:
    """One fetch_url call: the hops, each resolved, checked, sent and read under the same policy."""

    #: a compressed body could expand past max_bytes in one chunk: identity only
    request_headers: ClassVar[dict[str, str]] = {
        "Accept": "image/*",
        "Accept-Encoding": "identity",
        "User-Agent": f"reangle/{__version__}",
    }

    policy: FetchPolicy
    field: str
    resolver: Resolver

    async def run(self, text: str) -> bytes:
        url = self._checked(text, came_from=None)
        origin = url
        for _ in range(self.policy.max_redirects + 1):
            where = _shown(url) if url == origin else f"{_shown(url)} (redirected from {_shown(origin)})"
            addresses = await self._addresses(url, where)
            outcome = await self._send(url, addresses, where)
            if isinstance(outcome, bytes):
                return outcome
            url = self._checked(outcome, came_from=url)
        raise self._invalid(
            f"refusing to fetch {_shown(origin)}: too many redirects (more than {self.policy.max_redirects})"
        )

    def timed_out(self, text: str) -> InvalidInput:
        return self._invalid(f"fetching {_shown(text)} timed out after {self.policy.timeout_s:g} s")

    def _invalid(self, message: str) -> InvalidInput:
        return InvalidInput(message, field=self.field)

    def _checked(self, text: str, *, came_from: httpx.URL | None) -> httpx.URL:
        """Parse one hop's URL with the parser that will send it, and accept only plain http(s) URLs."""
        if NUL in text:
            raise self._invalid(f"{self.field}: {NUL_MESSAGE}")
        problem = _url_problem(text)
        if problem is None:
            return httpx.URL(text)
        if came_from is None:
            raise self._invalid(f"{self.field} {problem}")
        raise self._invalid(f"refusing to follow the redirect from {_shown(came_from)}: its target {problem}")

    async def _addresses(self, url: httpx.URL, where: str) -> list[IPAddress]:
        """Resolve the host once and return its addresses, all of which the policy allows."""
        host = url.raw_host.decode("ascii")  # IDNA-encoded; an IPv6 literal without its brackets
        literal = _literal_ip(host)
        if literal is not None:
            addresses = [literal]
        else:
            try:
                answers = await self.resolver(host)
            except (OSError, UnicodeError) as exc:
                raise self._invalid(
                    f"could not fetch {where}: {host} could not be resolved ({type(exc).__name__}: {exc})"
                ) from None
            addresses = []
            for answer in answers:
                address = _literal_ip(answer)
                if address is None:
                    raise self._invalid(f"could not fetch {where}: {host} resolved to {answer!r}, not an IP")
                if address not in addresses:
                    addresses.append(address)
            if not addresses:
                raise self._invalid(f"could not fetch {where}: {host} resolved to no address")
        for address in addresses:
            reason = self.policy.refusal(host, address)
            if reason is not None:
                if literal:
                    raise PrivateAddress(f"refusing to fetch {where}: {host} is {reason}", field=self.field)
                # the address stays in the log: told to the caller, it would map the internal network
                log.info("refused to fetch %s: %s resolves to %s, %s", where, host, address, reason)
                raise PrivateAddress(
                    f"refusing to fetch {where}: {host} resolves to {reason}", field=self.field
                )
        return addresses

    async def _send(self, url: httpx.URL, addresses: list[IPAddress], where: str) -> bytes | str:
        """One GET to the first address that answers: the body, or the target of a redirect."""
        host = url.raw_host.decode("ascii")
        error: httpx.HTTPError | None = None
        for address in addresses:
            try:
                return await self._exchange(url, address, where)
            except httpx.TimeoutException:
                raise self.timed_out(str(url)) from None
            except httpx.ConnectError as exc:
                error = exc  # try the host's next address
            except httpx.HTTPError as exc:
                error = exc
                break
        assert error is not None
        detail = f" ({str(error)[:_SHOWN_CHARS]})" if str(error) else ""
        raise self._invalid(f"could not fetch {where}: {type(error).__name__} from {host}{detail}")

    async def _exchange(self, url: httpx.URL, address: IPAddress, where: str) -> bytes | str:
        try:
            pinned = pin(url, address)
        except httpx.InvalidURL:
            raise self._invalid(f"could not fetch {where}: cannot connect to {address}") from None
        async with pinned_client(self.policy.timeout_s) as client:
            request = pinned.request(client, "GET", headers=self.request_headers)
            response = await client.send(request, stream=True, follow_redirects=False)
            try:
                return await self._outcome(url, response, where)
            finally:
                await response.aclose()

    async def _outcome(self, url: httpx.URL, response: httpx.Response, where: str) -> bytes | str:
        status = response.status_code
        if status in REDIRECT_STATUSES:
            location = response.headers.get("Location")
            if not location:
                raise self._invalid(f"could not fetch {where}: HTTP {status} redirect without a Location")
            try:
                return str(url.join(location))
            except (httpx.InvalidURL, ValueError) as exc:
                raise self._invalid(
                    f"could not fetch {where}: it redirects to an invalid URL ({exc})"
                ) from None
        if not 200 <= status < 300:
            answer = f"HTTP {status} {httpx.codes.get_reason_phrase(status)}".rstrip()  # no phrase: ""
            raise self._invalid(f"could not fetch {where}: the server answered {answer}")
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise self._invalid(f"could not fetch {where}: the server sent a {encoding}-encoded body")
        limit = self.policy.max_bytes
        too_large = f"{where} is larger than the limit of {limit} bytes"
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise TooLarge(too_large, field=self.field)
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_raw():
            size += len(chunk)
            if size > limit:
                raise TooLarge(too_large, field=self.field)
            chunks.append(chunk)
        return b"".join(chunks)


# Streaming a large body to the caller (LoRA files: tens to hundreds of MB) ----------------------------------

#: HTTP answers worth trying again later: the server, or something in front of it, is busy or failing.
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


async def fetch_url_streamed(
    url: str,
    policy: FetchPolicy,
    write: Callable[[bytes], object],
    *,
    field: str = "url",
    resolver: Resolver | None = None,
) -> int:
    """GET `url` as `fetch_url` does (the same checks on every hop, the same byte limit and deadline), but
    hand the body to `write` chunk by chunk instead of holding it in memory; returns the bytes written.

    A failure that may pass (no connection, a timeout, a cut-off body, HTTP 429/5xx) is `Unavailable`; the
    rest (a refused target, HTTP 404, ...) is an `InvalidInput` naming `field`, and a body over the limit is
    `TooLarge`. `write` may already have been given part of the body when it fails: write to a temporary file
    and keep it only on success."""
    written = [0]
    fetcher = _StreamingFetcher(
        policy=policy, field=field, resolver=resolver or system_resolver, write=write, written=written
    )
    try:
        async with asyncio.timeout(policy.timeout_s):
            await fetcher.run(url)
    except TimeoutError:
        raise fetcher.unavailable(f"fetching {_shown(url)} timed out after {policy.timeout_s:g} s") from None
    return written[0]


@dataclass(frozen=True)
class _StreamingFetcher(_Fetcher):
    """A `_Fetcher` whose final hop streams its body to `write` (and `run` returns b"")."""

    request_headers: ClassVar[dict[str, str]] = {
        "Accept-Encoding": "identity",
        "User-Agent": f"reangle/{__version__}",
    }

    write: Callable[[bytes], object]
    written: list[int]  # one item: the bytes written so far

    def unavailable(self, message: str) -> Unavailable:
        return Unavailable(message, retry_after_s=30)

    async def _send(self, url: httpx.URL, addresses: list[IPAddress], where: str) -> bytes | str:
        host = url.raw_host.decode("ascii")
        error: httpx.HTTPError | None = None
        for address in addresses:
            try:
                return await self._exchange(url, address, where)
            except httpx.TimeoutException:
                raise self.unavailable(f"fetching {where} timed out") from None
            except httpx.TransportError as exc:
                if self.written[0]:  # cut off mid-body: another address would write the body again
                    raise self.unavailable(
                        f"fetching {where} failed after {self.written[0]} bytes: {type(exc).__name__}"
                    ) from None
                error = exc  # no connection: try the host's next address
            except httpx.HTTPError as exc:
                detail = f" ({str(exc)[:_SHOWN_CHARS]})" if str(exc) else ""
                raise self._invalid(f"could not fetch {where}: {type(exc).__name__}{detail}") from None
        assert error is not None
        detail = f" ({str(error)[:_SHOWN_CHARS]})" if str(error) else ""
        raise self.unavailable(f"could not fetch {where}: {type(error).__name__} from {host}{detail}")

    async def _outcome(self, url: httpx.URL, response: httpx.Response, where: str) -> bytes | str:
        status = response.status_code
        if status in TRANSIENT_STATUSES:
            reason = httpx.codes.get_reason_phrase(status)
            answer = f"HTTP {status} {reason}".rstrip()
            raise self.unavailable(f"could not fetch {where}: the server answered {answer}")
        if status in REDIRECT_STATUSES or not 200 <= status < 300:
            return await super()._outcome(url, response, where)  # a redirect, or the same refusal
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise self._invalid(f"could not fetch {where}: the server sent a {encoding}-encoded body")
        limit = self.policy.max_bytes
        too_large = f"{where} is larger than the limit of {limit} bytes"
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise TooLarge(too_large, field=self.field)
        async for chunk in response.aiter_raw():
            if self.written[0] + len(chunk) > limit:
                raise TooLarge(too_large, field=self.field)
            self.write(chunk)
            self.written[0] += len(chunk)
        return b""
