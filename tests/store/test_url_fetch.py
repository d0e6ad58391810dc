"""fetch_url against real HTTP and HTTPS servers on 127.0.0.1.

Fake resolvers stand in for DNS and a fake policy for a public host, so nothing here leaves the machine.
"""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import logging
import shutil
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from reangle.errors import InvalidInput, TooLarge
from reangle.store import url_fetch
from reangle.store.url_fetch import FetchPolicy, IPAddress, address_class, checked_addresses, fetch_url
from tests.conftest import image_bytes, make_image

IMAGE = image_bytes(make_image(), "PNG")
LOCAL = FetchPolicy(allow_private=True, timeout_s=2.0)  # every test server lives on loopback
STALL_LIMIT_S = 5.0  # stalled handlers give up on their own after this, should teardown never release them


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.seen.append(self.path)
        route = urlsplit(self.path)
        query = parse_qs(route.query)
        try:
            if route.path == "/image":
                self._reply(200, IMAGE, headers={"Content-Type": "image/png"})
            elif (
                route.path == "/image-unsized"
            ):  # no Content-Length: the body ends when the connection closes
                self._reply(200, IMAGE, sized=False)
            elif route.path == "/echo-host":
                self._reply(200, self.headers["Host"].encode())
            elif route.path == "/declared-large":
                self._reply(200, b"", headers={"Content-Length": "10000000"})
                self._stall()
            elif route.path == "/streamed-large":
                self._reply(200, b"", sized=False)
                for _ in range(4):
                    self.wfile.write(b"x" * 65536)
                self._stall()
            elif route.path == "/stall":
                self._stall()
            elif route.path == "/drip":  # each byte comes quickly, the whole body does not
                self._reply(200, b"", headers={"Content-Length": "50"})
                for _ in range(50):
                    if self.server.release.wait(0.1):
                        break
                    self.wfile.write(b"x")
            elif route.path.startswith("/redirect/"):
                left = int(route.path.rsplit("/", 1)[1])  # redirects still to come
                location = "/image" if left <= 1 else f"/redirect/{left - 1}"
                self._reply(302, b"", headers={"Location": location})
            elif route.path == "/redirect-to":
                self._reply(302, b"", headers={"Location": query["location"][0]})
            elif route.path == "/redirect-nowhere":
                self._reply(302, b"")
            elif route.path == "/gzip":
                self._reply(200, gzip.compress(IMAGE), headers={"Content-Encoding": "gzip"})
            elif route.path == "/error":
                self._reply(500, b"")
            else:
                self._reply(404, b"not here")
        except OSError:
            pass  # the client hung up, as it should when it has seen enough

    def _reply(
        self, status: int, body: bytes, *, sized: bool = True, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        headers = dict(headers or {})
        if sized and "Content-Length" not in headers:
            headers["Content-Length"] = str(len(body))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _stall(self) -> None:
        self.server.release.wait(STALL_LIMIT_S)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[str] = []  # request paths, in order
        self.release = threading.Event()
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.port = self.server_address[1]

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"


def _serve(server: _Server) -> Iterator[_Server]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=2)


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    yield from _serve(_Server())


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for images.example only, made with the openssl command line."""
    assert shutil.which("openssl"), "the TLS tests need the openssl command to make a test certificate"
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=images.example"),
            *("-addext", "subjectAltName=DNS:images.example"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture(scope="module")
def tls_server(tls_files: tuple[Path, Path]) -> Iterator[tuple[_Server, list[str]]]:
    """An HTTPS server that records the SNI name of every handshake."""
    cert, key = tls_files
    names: list[str] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda _socket, name, _context: names.append(name or "")
    for running in _serve(_Server(context)):
        yield running, names


@pytest.fixture
def trust_test_certificate(monkeypatch: pytest.MonkeyPatch, tls_files: tuple[Path, Path]) -> None:
    """Trust the test certificate instead of the public roots; the connection path itself is untouched."""
    context = ssl.create_default_context(cafile=str(tls_files[0]))
    monkeypatch.setattr(url_fetch, "_tls_context", lambda: context)


class FakeResolver:
    """Stands in for DNS: answers from a fixed table and records every name it was asked about."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def __call__(self, host: str) -> list[str]:
        self.asked.append(host)
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.table[host]


@dataclass(frozen=True, kw_only=True)
class FakeVettedPolicy(FetchPolicy):
    """The real rules, except that each (host, address) pair in `vetted` counts as public: this is how a test
    makes its loopback server play a public host while every other hop is judged as in production."""

    vetted: frozenset[tuple[str, str]] = frozenset()

    def refusal(self, host: str, address: IPAddress) -> str | None:
        if (host, str(address)) in self.vetted:
            return None
        return super().refusal(host, address)


def fetch(url: str, policy: FetchPolicy = LOCAL, **options: Any) -> bytes:
    """fetch_url, with a resolver that knows no names unless the test brings its own: no real DNS lookups."""
    options.setdefault("resolver", FakeResolver({}))
    return asyncio.run(fetch_url(url, policy, **options))


def refused(url: str, policy: FetchPolicy = LOCAL, **options: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        fetch(url, policy, **options)
    assert caught.value.field == options.get("field", "url")
    return caught.value


def as_shown(url: str) -> str:
    """`url` as errors show it: its query (a presigned URL's signature) left out."""
    base, query = url.split("?", 1) if "?" in url else (url, "")
    return base + ("?..." if query else "")


def probe() -> str:
    """A query string that marks one request, to check that it never reached the server."""
    return f"probe={uuid.uuid4().hex}"


# --- success -----------------------------------------------------------------------------------------------


def test_returns_the_exact_bytes(server: _Server) -> None:
    assert fetch(server.url("/image")) == IMAGE


def test_a_body_without_content_length_is_read_to_the_end(server: _Server) -> None:
    assert fetch(server.url("/image-unsized")) == IMAGE


def test_connects_to_the_checked_address_and_sends_the_original_host(
    server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    system_lookups: list[object] = []
    real_getaddrinfo = socket.getaddrinfo

    def recording_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        system_lookups.append(host)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", recording_getaddrinfo)
    resolver = FakeResolver({"images.example": ["127.0.0.1"]})
    body = fetch(server.url("/echo-host", host="images.example"), resolver=resolver)
    assert body == f"images.example:{server.port}".encode()
    assert resolver.asked == ["images.example"]  # resolved once, by us...
    assert (
        "images.example" not in system_lookups
    )  # ...and never again by the HTTP stack (no rebinding window)


def test_every_hop_is_resolved_again(server: _Server) -> None:
    resolver = FakeResolver({"images.example": ["127.0.0.1"]})
    assert fetch(server.url("/redirect/3", host="images.example"), resolver=resolver) == IMAGE
    assert resolver.asked == ["images.example"] * 4


def test_names_are_resolved_in_their_idna_form(server: _Server) -> None:
    resolver = FakeResolver({"xn--bcher-kva.example": ["127.0.0.1"]})
    assert fetch(server.url("/image", host="bücher.example"), resolver=resolver) == IMAGE
    assert resolver.asked == ["xn--bcher-kva.example"]


def test_body_of_exactly_the_limit_is_accepted(server: _Server) -> None:
    exact = FetchPolicy(allow_private=True, max_bytes=len(IMAGE), timeout_s=2.0)
    assert fetch(server.url("/image"), exact) == IMAGE
    assert fetch(server.url("/image-unsized"), exact) == IMAGE


# --- forbidden targets -------------------------------------------------------------------------------------

FORBIDDEN = [
    ("127.0.0.1", "a loopback address"),
    ("10.1.2.3", "a private address"),
    ("172.16.0.1", "a private address"),
    ("192.168.1.1", "a private address"),
    ("169.254.169.254", "a link-local address"),
    ("::1", "a loopback address"),
    ("fe80::1", "a link-local address"),
    ("fc00::1", "a private (unique local) address"),
    ("::ffff:127.0.0.1", "a loopback address (an IPv4 one inside IPv6)"),
    ("64:ff9b::a9fe:a9fe", "a link-local address (an IPv4 one inside IPv6)"),
    ("2002:7f00:1::1", "a loopback address (an IPv4 one inside IPv6)"),
    ("0.0.0.0", "an unspecified address"),
    ("::", "an unspecified address"),
    ("100.64.0.1", "a shared (carrier-grade NAT) address"),
    ("224.0.0.1", "a multicast address"),
    ("ff02::1", "a multicast address"),
    ("240.0.0.1", "a reserved address"),
    ("198.51.100.7", "a reserved (non-public) address"),
]


@pytest.mark.parametrize(("address", "kind"), FORBIDDEN)
def test_literal_addresses_of_each_class_are_refused(server: _Server, address: str, kind: str) -> None:
    mark = probe()
    host = f"[{address}]" if ":" in address else address
    url = f"http://{host}:{server.port}/image?{mark}"
    error = refused(url, FetchPolicy(timeout_s=1.0))
    assert error.message == f"refusing to fetch {as_shown(url)}: {address} is {kind}"
    assert not [path for path in server.seen if mark in path]


def test_an_error_leaves_out_the_urls_query(server: _Server) -> None:
    url = f"http://127.0.0.1:{server.port}/lora.safetensors?X-Amz-Signature=5ec7e7&token=t0k"
    error = refused(url, FetchPolicy(timeout_s=1.0))
    assert error.message == f"refusing to fetch http://127.0.0.1:{server.port}/lora.safetensors?...: " + (
        "127.0.0.1 is a loopback address"
    )


@pytest.mark.parametrize(("address", "kind"), FORBIDDEN)
def test_names_resolving_to_each_class_are_refused(server: _Server, address: str, kind: str) -> None:
    mark = probe()
    url = f"http://images.example:{server.port}/image?{mark}"
    resolver = FakeResolver({"images.example": [address]})
    error = refused(url, FetchPolicy(timeout_s=1.0), resolver=resolver)
    assert error.message == f"refusing to fetch {as_shown(url)}: images.example resolves to {kind}"
    assert not [path for path in server.seen if mark in path]


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_not_classed(address: str) -> None:
    assert address_class(ipaddress.ip_address(address)) is None
    assert FetchPolicy().refusal("dns.example", ipaddress.ip_address(address)) is None


def test_allow_private_lets_every_class_through() -> None:
    for address, _ in FORBIDDEN:
        assert FetchPolicy(allow_private=True).refusal("lan.example", ipaddress.ip_address(address)) is None


def test_one_forbidden_address_among_several_is_enough(
    server: _Server, caplog: pytest.LogCaptureFixture
) -> None:
    mark = probe()
    vetted = FakeVettedPolicy(vetted=frozenset({("images.example", "127.0.0.1")}), timeout_s=1.0)
    resolver = FakeResolver({"images.example": ["127.0.0.1", "10.0.0.1"]})
    with caplog.at_level(logging.INFO, "reangle.server"):
        error = refused(server.url(f"/image?{mark}", host="images.example"), vetted, resolver=resolver)
    # the caller is not told where an internal name points; the operator's log is
    assert "images.example resolves to a private address" in error.message
    assert "10.0.0.1" not in error.message
    assert "images.example resolves to 10.0.0.1, a private address" in caplog.text
    assert not [path for path in server.seen if mark in path]


@pytest.mark.parametrize("host", ["2130706433", "0x7f.1", "127.1"])
def test_odd_spellings_of_loopback_are_caught_by_their_resolved_address(host: str) -> None:
    # The system resolver reads these spellings as numbers, without asking DNS.
    error = refused(f"http://{host}/", FetchPolicy(timeout_s=1.0), resolver=url_fetch.system_resolver)
    assert error.message == f"refusing to fetch http://{host}/: {host} resolves to a loopback address"


# --- redirects ---------------------------------------------------------------------------------------------

PUBLIC = FakeVettedPolicy(vetted=frozenset({("public.test", "127.0.0.1")}), timeout_s=2.0)


def _public_redirect(server: _Server, location: str) -> str:
    return server.url(f"/redirect-to?location={quote(location, safe='')}", host="public.test")


def test_the_vetted_host_itself_is_fetched(server: _Server) -> None:
    resolver = FakeResolver({"public.test": ["127.0.0.1"]})
    assert fetch(server.url("/redirect/2", host="public.test"), PUBLIC, resolver=resolver) == IMAGE


def test_redirect_to_a_loopback_literal_is_refused(server: _Server) -> None:
    mark = probe()
    target = server.url(f"/image?{mark}")
    resolver = FakeResolver({"public.test": ["127.0.0.1"]})
    error = refused(_public_redirect(server, target), PUBLIC, resolver=resolver)
    assert error.message.startswith(
        f"refusing to fetch {as_shown(target)} (redirected from http://public.test:"
    )
    assert error.message.endswith(": 127.0.0.1 is a loopback address")
    assert any("/redirect-to" in path for path in server.seen)  # the first hop did go out
    assert not [path for path in server.seen if mark in path]


def test_redirect_to_a_name_resolving_to_loopback_is_refused(server: _Server) -> None:
    mark = probe()
    resolver = FakeResolver({"public.test": ["127.0.0.1"], "images.example": ["127.0.0.1"]})
    url = _public_redirect(server, server.url(f"/image?{mark}", host="images.example"))
    error = refused(url, PUBLIC, resolver=resolver)
    assert error.message.endswith("images.example resolves to a loopback address")
    assert resolver.asked == ["public.test", "images.example"]
    assert not [path for path in server.seen if mark in path]


def test_redirect_to_cloud_metadata_is_refused(server: _Server) -> None:
    resolver = FakeResolver({"public.test": ["127.0.0.1"]})
    url = _public_redirect(server, "http://169.254.169.254/latest/meta-data/")
    error = refused(url, PUBLIC, resolver=resolver)
    assert error.message.endswith("169.254.169.254 is a link-local address")


def test_redirect_to_another_scheme_is_refused(server: _Server) -> None:
    url = server.url("/redirect-to?location=file:///etc/passwd")
    error = refused(url)
    assert error.message == (
        f"refusing to follow the redirect from {as_shown(url)}: "
        "its target is a file: URL; only http and https URLs are fetched"
    )


def test_redirects_up_to_the_limit_are_followed(server: _Server) -> None:
    assert fetch(server.url("/redirect/2"), FetchPolicy(allow_private=True, max_redirects=2)) == IMAGE


@pytest.mark.parametrize(("hops", "limit"), [(3, 2), (1, 0), (6, 5)])
def test_too_many_redirects(server: _Server, hops: int, limit: int) -> None:
    url = server.url(f"/redirect/{hops}")
    error = refused(url, FetchPolicy(allow_private=True, max_redirects=limit))
    assert error.message == f"refusing to fetch {url}: too many redirects (more than {limit})"


def test_a_redirect_without_location_is_refused(server: _Server) -> None:
    error = refused(server.url("/redirect-nowhere"))
    assert error.message.endswith("HTTP 302 redirect without a Location")


# --- URLs --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("file:///etc/passwd", "is a file: URL; only http and https URLs are fetched"),
        ("ftp://images.example/a.png", "is a ftp: URL; only http and https URLs are fetched"),
        ("gopher://images.example/", "is a gopher: URL; only http and https URLs are fetched"),
        ("data:image/png;base64,iVBORw0KGgo=", "is a data: URL; only http and https URLs are fetched"),
        ("images.example/a.png", "has no scheme; only http and https URLs are fetched"),
        ("//images.example/a.png", "has no scheme; only http and https URLs are fetched"),
        ("", "has no scheme; only http and https URLs are fetched"),
        ("http:///a.png", "has no host name"),
    ],
)
def test_only_http_and_https_urls_are_fetched(url: str, problem: str) -> None:
    resolver = FakeResolver({})
    error = refused(url, FetchPolicy(), field="image_url", resolver=resolver)
    assert error.message == f"image_url {problem}"
    assert resolver.asked == []


@pytest.mark.parametrize("url", ["http://user:s3cret@images.example/a.png", "https://s3cret@images.example/"])
def test_urls_with_credentials_are_refused_without_echoing_them(url: str) -> None:
    resolver = FakeResolver({"images.example": ["127.0.0.1"]})
    error = refused(url, LOCAL, resolver=resolver)
    assert error.message == "url contains a user name or password, which is not accepted"
    assert "s3cret" not in error.message
    assert resolver.asked == []


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://images.example:99999/a.png", "has an invalid port 99999"),
        ("http://images.example:0/a.png", "has an invalid port 0"),
        ("http://images .example/a.png", "has an invalid host name 'images%20.example'"),
        ("http://a..example/a.png", "has an invalid host name 'a..example'"),
        ("http://exa\tmple/a.png", "is not a valid URL (Invalid non-printable ASCII character in URL"),
    ],
)
def test_a_malformed_url_is_invalid_input(url: str, problem: str) -> None:
    resolver = FakeResolver({"images.example": ["127.0.0.1"]})
    assert refused(url, resolver=resolver).message.startswith(f"url {problem}")
    assert resolver.asked == []


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://xn--a.example/x.png", "has an invalid international host name 'xn--a.example'"),
        ("http://cdn.XN--A.example/x.png", "has an invalid international host name 'cdn.xn--a.example'"),
        (f"http://{'a' * 64}.example/x.png", "has a host name part of 64 characters"),
        (f"http://{'abcdefg.' * 32}example/x.png", "has a host name of 263 characters; at most 253"),
    ],
    ids=["bad-punycode", "bad-punycode-label", "label-over-63", "name-over-253"],
)
def test_a_host_name_dns_cannot_carry_is_invalid_input_before_any_lookup(url: str, problem: str) -> None:
    resolver = FakeResolver({})
    assert refused(url, resolver=resolver).message.startswith(f"url {problem}")
    checked = asyncio.run(
        _refused_check(url, FetchPolicy(timeout_s=1.0), resolver=resolver, field="webhook_url")
    )
    assert checked.message.startswith(f"webhook_url {problem}")
    assert resolver.asked == []


def test_the_longest_host_names_dns_carries_are_fetched(server: _Server) -> None:
    host = f"{'a' * 63}.{'b' * 57}.example"
    resolver = FakeResolver({host: ["127.0.0.1"], "xn--bcher-kva.example": ["127.0.0.1"]})
    assert fetch(server.url("/image", host=host), resolver=resolver) == IMAGE
    assert fetch(server.url("/image", host="xn--bcher-kva.example"), resolver=resolver) == IMAGE


@pytest.mark.parametrize(
    "url", ["http://images.example/a\x00.png", "http://images\x00.example/a.png", "\x00"], ids=repr
)
def test_a_url_with_a_nul_character_is_refused_naming_the_field(url: str) -> None:
    resolver = FakeResolver({"images.example": ["127.0.0.1"]})
    error = refused(url, resolver=resolver, field="input.loras.0.url")
    assert error.message == "input.loras.0.url: must not contain a NUL character"
    assert resolver.asked == []


async def _refused_check(url: str, policy: FetchPolicy, **options: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        await checked_addresses(url, policy, **options)
    return caught.value


def test_a_name_that_does_not_resolve(server: _Server) -> None:
    error = refused(server.url("/image", host="nowhere.example"), resolver=FakeResolver({}))
    assert "nowhere.example could not be resolved (gaierror:" in error.message


def test_a_resolver_answer_that_is_not_an_address() -> None:
    error = refused("http://images.example/", resolver=FakeResolver({"images.example": ["localhost"]}))
    assert error.message.endswith("images.example resolved to 'localhost', not an IP")


# --- responses ---------------------------------------------------------------------------------------------


def test_not_found_names_the_status(server: _Server) -> None:
    url = server.url("/missing.png")
    assert refused(url).message == f"could not fetch {url}: the server answered HTTP 404 Not Found"


def test_server_error_names_the_status(server: _Server) -> None:
    assert refused(server.url("/error")).message.endswith(
        "the server answered HTTP 500 Internal Server Error"
    )


def test_a_declared_length_over_the_limit_is_refused_before_the_body(server: _Server) -> None:
    url = server.url("/declared-large")
    started = time.monotonic()
    with pytest.raises(TooLarge) as caught:  # a kind of InvalidInput
        fetch(url, FetchPolicy(allow_private=True, max_bytes=100_000, timeout_s=2.0))
    assert caught.value.message == f"{url} is larger than the limit of 100000 bytes"
    assert caught.value.field == "url"
    assert time.monotonic() - started < 1.0  # the server never sends the body: only the header can tell


def test_a_streamed_body_over_the_limit_is_cut_off(server: _Server) -> None:
    url = server.url("/streamed-large")
    started = time.monotonic()
    with pytest.raises(TooLarge) as caught:
        fetch(url, FetchPolicy(allow_private=True, max_bytes=100_000, timeout_s=2.0))
    assert caught.value.message == f"{url} is larger than the limit of 100000 bytes"
    assert time.monotonic() - started < 1.0  # the body never ends: only counting can stop it


@pytest.mark.parametrize("path", ["/image", "/image-unsized"])
def test_one_byte_over_the_limit_is_refused(server: _Server, path: str) -> None:
    with pytest.raises(TooLarge):
        fetch(server.url(path), FetchPolicy(allow_private=True, max_bytes=len(IMAGE) - 1))


@pytest.mark.parametrize("path", ["/stall", "/drip"])
def test_the_whole_fetch_has_one_deadline(server: _Server, path: str) -> None:
    url = server.url(path)
    started = time.monotonic()
    error = refused(url, FetchPolicy(allow_private=True, timeout_s=0.5))
    assert error.message == f"fetching {url} timed out after 0.5 s"
    assert time.monotonic() - started < 1.5


def test_a_compressed_body_is_refused(server: _Server) -> None:
    assert refused(server.url("/gzip")).message.endswith("the server sent a gzip-encoded body")


def test_a_closed_port_is_a_connection_error_naming_the_host() -> None:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    url = f"http://images.example:{port}/a.png"
    error = refused(url, resolver=FakeResolver({"images.example": ["127.0.0.1"]}))
    assert error.message.startswith(f"could not fetch {as_shown(url)}: ConnectError from images.example")


# --- https -------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("trust_test_certificate")
def test_https_verifies_the_certificate_for_the_name_while_connecting_to_the_address(
    tls_server: tuple[_Server, list[str]],
) -> None:
    running, names = tls_server
    names.clear()
    resolver = FakeResolver({"images.example": ["127.0.0.1"]})
    assert fetch(running.url("/image", host="images.example", scheme="https"), resolver=resolver) == IMAGE
    assert names == ["images.example"]  # the SNI name, not 127.0.0.1


@pytest.mark.usefixtures("trust_test_certificate")
def test_https_to_a_name_the_certificate_does_not_cover_fails(tls_server: tuple[_Server, list[str]]) -> None:
    running, _ = tls_server
    mark = probe()
    resolver = FakeResolver({"other.example": ["127.0.0.1"]})
    url = running.url(f"/image?{mark}", host="other.example", scheme="https")
    error = refused(url, resolver=resolver)
    assert error.message.startswith(f"could not fetch {as_shown(url)}: ConnectError from other.example")
    assert "CERTIFICATE_VERIFY_FAILED" in error.message
    assert not [path for path in running.seen if mark in path]


def test_https_is_verified_against_public_roots_by_default(tls_server: tuple[_Server, list[str]]) -> None:
    running, _ = tls_server
    resolver = FakeResolver({"images.example": ["127.0.0.1"]})
    error = refused(running.url("/image", host="images.example", scheme="https"), resolver=resolver)
    assert "CERTIFICATE_VERIFY_FAILED" in error.message  # self-signed: not trusted unless a test says so


# --- policy ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("limits", [{"max_bytes": 0}, {"timeout_s": 0.0}, {"max_redirects": -1}])
def test_policy_limits_must_make_sense(limits: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="limits must be positive"):
        FetchPolicy(**limits)
