"""A request's LoRAs by URL, path or id: fetched from a real HTTP server on 127.0.0.1 under the image URLs'
SSRF rules, cached by content with a size-bounded LRU, confined to the operator's folder, and checked from
the safetensors header against the tiny transformer's layers."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch

from reangle.core.lora_refs import LoraRef, parse_lora_refs
from reangle.engine.lora_check import check_lora_file, model_layers
from reangle.engine.lora_sources import LoraSources, LoraSourcesConfig
from reangle.errors import InvalidInput, LoraLoadError, TooLarge, Unavailable
from reangle.store.url_fetch import FetchPolicy
from tests.conftest import serving
from tests.engine.lora_support import TARGETS, lora_bytes, lora_tensors, tiny_pipe, write_lora

LOCAL = FetchPolicy(allow_private=True, timeout_s=10.0, max_bytes=64 * 1024)
WAIT_S = 10.0
#: Path prefixes that change how the server answers for the file under them.
_MODES = ("/gate/", "/cut/", "/unsized/")


# A local HTTP server ---------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *_args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.seen.append(self.path)
        if self.path.startswith("/gate/"):
            self.server.release.wait(WAIT_S)
        route = "/" + self.path.split("/", 2)[2] if self.path.startswith(_MODES) else self.path
        status, body = self.server.routes.get(route, (404, b"not here"))
        if self.path.startswith("/cut/"):  # promises more than it sends, then hangs up
            self._start(status, {"Content-Length": str(len(body) + 1000)})
            self.wfile.write(body)
            self.close_connection = True
            return
        if self.path.startswith("/unsized/"):  # no Content-Length: the body ends when the connection does
            self._start(status, {"Connection": "close"})
            self.wfile.write(body)
            self.close_connection = True
            return
        if 300 <= status < 400:  # the body is where it redirects to
            self._start(status, {"Location": body.decode(), "Content-Length": "0"})
            return
        self._start(status, {"Content-Length": str(len(body))})
        self.wfile.write(body)

    def _start(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, tuple[int, bytes]] = {}
        self.seen: list[str] = []
        self.release = threading.Event()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def serve(self, path: str, body: bytes, status: int = 200) -> str:
        self.routes[path] = (status, body)
        return self.url(path)


@pytest.fixture
def server() -> Iterator[_Server]:
    running = _Server()
    with serving(running, running.release.set):
        yield running


# The model and the sources ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def layers() -> dict[str, tuple[int, int]]:
    return model_layers(tiny_pipe().transformer)


@pytest.fixture(scope="module")
def shapes(layers: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    return {module: layers[module] for module in TARGETS}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def sources(tmp_path: Path, clock: Clock, **changes: Any) -> LoraSources:
    settings: dict[str, Any] = {
        "cache_dir": tmp_path / "cache",
        "max_cache_bytes": 1024 * 1024,
        "fetch": LOCAL,
        "allowed_dir": tmp_path / "allowed",
    }
    return LoraSources(LoraSourcesConfig(**(settings | changes)), clock=clock)


def fits(size: int) -> FetchPolicy:
    return FetchPolicy(allow_private=True, timeout_s=10.0, max_bytes=size)


def url_ref(url: str, index: int = 0, scale: float = 1.0) -> LoraRef:
    return LoraRef(kind="url", value=url, scale=scale, field=f"loras.{index}.url")


def leftovers(tmp_path: Path) -> list[str]:
    return sorted(path.name for path in (tmp_path / "cache" / "tmp").iterdir())


# URLs ------------------------------------------------------------------------------------------------------


def test_a_url_lora_is_fetched_checked_and_cached_and_the_next_job_sends_no_request(
    tmp_path: Path, server: _Server, clock: Clock, layers: Any, shapes: Any
) -> None:
    body = lora_bytes(shapes, seed=1)
    url = server.serve("/style.safetensors", body)
    lora_sources = sources(tmp_path, clock)

    first = asyncio.run(lora_sources.resolve(url_ref(url, scale=0.7), layers))
    clock.now += 3600
    second = asyncio.run(lora_sources.resolve(url_ref(url, index=1), layers))

    assert server.seen == ["/style.safetensors"]  # one request for two jobs
    assert first.path == second.path
    assert first.path.read_bytes() == body
    assert first.sha256 == first.path.name.removesuffix(".safetensors")
    assert first.adapter == second.adapter == f"lora_{first.sha256[:16]}"
    assert (first.scale, first.field, second.field) == (0.7, "loras.0.url", "loras.1.url")
    assert sorted(first.check.modules) == sorted(TARGETS)
    assert leftovers(tmp_path) == []
    # a restarted server (a new LoraSources on the same folder) still knows the URL
    asyncio.run(sources(tmp_path, clock).resolve(url_ref(url), layers))
    assert len(server.seen) == 1


def test_a_redirect_is_followed_under_the_same_rules(
    tmp_path: Path, server: _Server, clock: Clock, layers: Any, shapes: Any
) -> None:
    body = lora_bytes(shapes, seed=1)
    server.serve("/files/style.safetensors", body)
    url = server.serve("/latest.safetensors", b"/files/style.safetensors", status=302)
    lora = asyncio.run(sources(tmp_path, clock).resolve(url_ref(url), layers))
    assert lora.path.read_bytes() == body
    assert server.seen == ["/latest.safetensors", "/files/style.safetensors"]


def test_without_allow_private_a_loopback_url_is_refused_before_any_request(
    tmp_path: Path, server: _Server, clock: Clock, layers: Any, shapes: Any
) -> None:
    url = server.serve("/style.safetensors", lora_bytes(shapes))
    lora_sources = sources(tmp_path, clock, fetch=FetchPolicy(max_bytes=64 * 1024))
    with pytest.raises(InvalidInput, match="loopback") as caught:
        asyncio.run(lora_sources.resolve(url_ref(url, index=2), layers))
    assert caught.value.field == "loras.2.url"
    assert caught.value.message.startswith("loras.2.url: refusing to fetch http://127.0.0.1:")
    assert server.seen == []


def test_after_the_trust_period_the_url_is_fetched_again_into_the_same_file(
    tmp_path: Path, server: _Server, clock: Clock, layers: Any, shapes: Any
) -> None:
    url = server.serve("/style.safetensors", lora_bytes(shapes, seed=1))
    lora_sources = sources(tmp_path, clock, url_trust_s=600)
    first = asyncio.run(lora_sources.resolve(url_ref(url), layers))
    clock.now += 601
    second = asyncio.run(lora_sources.resolve(url_ref(url), layers))
    assert len(server.seen) == 2
    assert second.sha256 == first.sha256
    # the URL now serves other bytes: the next fetch after the trust period gives the new file
    server.serve("/style.safetensors", lora_bytes(shapes, seed=2))
    clock.now += 601
    third = asyncio.run(lora_sources.resolve(url_ref(url), layers))
    assert third.sha256 != first.sha256


@pytest.mark.parametrize(
    "path", ["/big.safetensors", "/unsized/big.safetensors"], ids=["declared", "streamed"]
)
def test_a_file_over_the_size_cap_is_too_large_and_nothing_is_cached(
    tmp_path: Path, server: _Server, clock: Clock, layers: Any, shapes: Any, path: str
) -> None:
    body = lora_bytes(shapes)
    server.serve("/big.safetensors", body)
    lora_sources = sources(tmp_path, clock, fetch=FetchPolicy(allow_private=True, max_bytes=len(body) - 1))
    with pytest.raises(TooLarge, match=f"larger than the limit of {len(body) - 1} bytes") as caught:
        asyncio.run(lora_sources.resolve(url_ref(server.url(path)), layers))
    assert caught.value.field == "loras.0.url"
    assert lora_sources.cached_files() == []
    assert leftovers(tmp_path) == []


def test_the_least_recently_used_files_are_evicted_past_the_bound(
    tmp_path: Path, server: _Server, clock: Clock, layers: Any, shapes: Any
) -> None:
    size = len(lora_bytes(shapes))
    urls = {
        name: server.serve(f"/{name}.safetensors", lora_bytes(shapes, seed=seed))
        for seed, name in enumerate("abc")
    }
    lora_sources = sources(tmp_path, clock, max_cache_bytes=size * 2 + size // 2, fetch=fits(size))

    def job(name: str) -> Path:
        clock.now += 1
        return asyncio.run(lora_sources.resolve(url_ref(urls[name]), layers)).path

    a, b = job("a"), job("b")
    job("a")  # a is used again: b is now the least recently used
    c = job("c")
    assert lora_sources.cached_files() == [a, c]
    assert not b.exists()
    job("a")
    assert len(server.seen) == 3  # a is still cached
    job("b")  # fetched again; c is the least recently used now
    assert len(server.seen) == 4
    assert not c.exists()


def test_a_file_held_by_a_running_job_is_not_evicted(
    tmp_path: Path, server: _Server, clock: Clock, layers: Any, shapes: Any
) -> None:
    size = len(lora_bytes(shapes))
    first = server.serve("/a.safetensors", lora_bytes(shapes, seed=1))
    second = server.serve("/b.safetensors", lora_bytes(shapes, seed=2))
    lora_sources = sources(tmp_path, clock, max_cache_bytes=size + size // 2, fetch=fits(size))

    async def jobs() -> tuple[Path, Path]:
        async with lora_sources.resolved([url_ref(first)], layers) as (held,):
            clock.now += 1
            other = await lora_sources.resolve(url_ref(second), layers)
            assert held.path.exists()  # over the bound while the job runs
            return held.path, other.path

    held, other = asyncio.run(jobs())
    clock.now += 1
    asyncio.run(lora_sources.resolve(url_ref(second), layers))  # the next download evicts the released file
    assert held.exists()  # nothing was downloaded: no eviction pass yet
    third = server.serve("/c.safetensors", lora_bytes(shapes, seed=3))
    clock.now += 1
    asyncio.run(lora_sources.resolve(url_ref(third), layers))
    assert not held.exists()
    assert not other.exists()


async def _until(condition: Any) -> None:
    async with asyncio.timeout(WAIT_S):
        while not condition():
            await asyncio.sleep(0.01)


def test_jobs_fetching_one_url_at_once_download_it_once(
    tmp_path: Path, server: _Server, clock: Clock, layers: Any, shapes: Any
) -> None:
    server.serve("/style.safetensors", lora_bytes(shapes, seed=1))
    url = server.url("/gate/style.safetensors")
    lora_sources = sources(tmp_path, clock)

    async def jobs() -> list[Any]:
        first = asyncio.create_task(lora_sources.resolve(url_ref(url, index=0), layers))
        await _until(lambda: server.seen)
        second = asyncio.create_task(lora_sources.resolve(url_ref(url, index=1), layers))
        await asyncio.sleep(0.05)  # the second job is waiting on the first one's download
        server.release.set()
        return list(await asyncio.gather(first, second))

    first, second = asyncio.run(jobs())
    assert server.seen == ["/gate/style.safetensors"]
    assert first.path == second.path
    assert (first.field, second.field) == ("loras.0.url", "loras.1.url")


def test_one_download_failing_fails_each_waiting_job_with_its_own_field(
    tmp_path: Path, server: _Server, clock: Clock, layers: Any
) -> None:
    server.serve("/gone.safetensors", b"no", status=404)
    url = server.url("/gate/gone.safetensors")
    lora_sources = sources(tmp_path, clock)

    async def jobs() -> list[Any]:
        first = asyncio.create_task(lora_sources.resolve(url_ref(url, index=0), layers))
        await _until(lambda: server.seen)
        second = asyncio.create_task(lora_sources.resolve(url_ref(url, index=3), layers))
        await asyncio.sleep(0.05)
        server.release.set()
        return list(await asyncio.gather(first, second, return_exceptions=True))

    errors = asyncio.run(jobs())
    assert [type(error) for error in errors] == [InvalidInput, InvalidInput]
    assert [error.field for error in errors] == ["loras.0.url", "loras.3.url"]
    assert "HTTP 404" in errors[1].message
    assert len(server.seen) == 1


def test_two_processes_fetching_one_url_at_once_share_one_whole_file(
    tmp_path: Path, server: _Server, clock: Clock, layers: Any, shapes: Any
) -> None:
    body = lora_bytes(shapes, seed=1)
    server.serve("/style.safetensors", body)
    url = server.url("/gate/style.safetensors")
    one, two = sources(tmp_path, clock), sources(tmp_path, clock)  # two workers on one cache folder

    async def jobs() -> list[Any]:
        both = [asyncio.create_task(each.resolve(url_ref(url), layers)) for each in (one, two)]
        await _until(lambda: len(server.seen) == 2)
        server.release.set()
        return list(await asyncio.gather(*both))

    first, second = asyncio.run(jobs())
    assert first.path == second.path
    assert first.path.read_bytes() == body
    assert one.cached_files() == [first.path]
    assert leftovers(tmp_path) == []


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("case", ["503", "cut off", "refused"])
def test_a_network_failure_that_may_pass_is_unavailable_and_leaves_nothing(
    tmp_path: Path, server: _Server, clock: Clock, layers: Any, shapes: Any, case: str
) -> None:
    server.serve("/busy.safetensors", b"later", status=503)
    server.serve("/style.safetensors", lora_bytes(shapes))
    url = {
        "503": server.url("/busy.safetensors"),
        "cut off": server.url("/cut/style.safetensors"),
        "refused": f"http://127.0.0.1:{_closed_port()}/style.safetensors",
    }[case]
    lora_sources = sources(tmp_path, clock)
    with pytest.raises(Unavailable):
        asyncio.run(lora_sources.resolve(url_ref(url), layers))
    assert lora_sources.cached_files() == []
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>not a LoRA</html>", "is not a safetensors file"),
        (struct.pack("<Q", 10_000) + b"{}", "truncated"),
    ],
    ids=["html", "truncated header"],
)
def test_a_downloaded_file_that_is_not_a_lora_is_refused_and_not_cached(
    tmp_path: Path, server: _Server, clock: Clock, layers: Any, body: bytes, reason: str
) -> None:
    url = server.serve("/bad.safetensors", body)
    lora_sources = sources(tmp_path, clock)
    with pytest.raises(InvalidInput, match=reason) as caught:
        asyncio.run(lora_sources.resolve(url_ref(url), layers))
    assert caught.value.field == "loras.0.url"
    assert url in caught.value.message
    assert lora_sources.cached_files() == []
    assert leftovers(tmp_path) == []
    assert list((tmp_path / "cache" / "urls").iterdir()) == []


def test_a_cached_lora_for_another_model_is_refused_for_that_model(
    tmp_path: Path, server: _Server, clock: Clock, layers: Any, shapes: Any
) -> None:
    url = server.serve("/style.safetensors", lora_bytes(shapes))
    lora_sources = sources(tmp_path, clock)
    other_model = {"single_transformer_blocks.0.attn.to_q": (48, 48)}
    with pytest.raises(InvalidInput, match="matches none of the model's layers"):
        asyncio.run(lora_sources.resolve(url_ref(url), other_model))
    asyncio.run(lora_sources.resolve(url_ref(url), layers))  # the file itself is fine, and cached
    assert len(server.seen) == 1


# Paths and ids ---------------------------------------------------------------------------------------------


def path_ref(text: str) -> LoraRef:
    return LoraRef(kind="path", value=text, field="loras.0.path")


def test_a_path_inside_the_allowed_folder_is_used_where_it_is(
    tmp_path: Path, clock: Clock, layers: Any, shapes: Any
) -> None:
    file = write_lora(tmp_path / "allowed" / "styles" / "ink.safetensors", shapes)
    lora_sources = sources(tmp_path, clock)
    relative = asyncio.run(lora_sources.resolve(path_ref("styles/ink.safetensors"), layers))
    absolute = asyncio.run(lora_sources.resolve(path_ref(str(file)), layers))
    assert relative.path == absolute.path == file.resolve()
    assert relative.sha256 == absolute.sha256
    assert lora_sources.cached_files() == []  # not copied


@pytest.mark.parametrize("how", ["absolute", "dot-dot", "symlink", "symlinked folder"])
def test_a_path_outside_the_allowed_folder_is_refused(
    tmp_path: Path, clock: Clock, layers: Any, shapes: Any, how: str
) -> None:
    outside = write_lora(tmp_path / "secret" / "other.safetensors", shapes)
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "link.safetensors").symlink_to(outside)
    (allowed / "folder").symlink_to(outside.parent, target_is_directory=True)
    text = {
        "absolute": str(outside),
        "dot-dot": "../secret/other.safetensors",
        "symlink": "link.safetensors",
        "symlinked folder": "folder/other.safetensors",
    }[how]
    with pytest.raises(InvalidInput, match="is outside the folder of local LoRAs") as caught:
        asyncio.run(sources(tmp_path, clock).resolve(path_ref(text), layers))
    assert caught.value.field == "loras.0.path"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nothing.safetensors", "there is no LoRA file"),
        ("notes.txt", r"is not a \.safetensors file"),
        (".", "is outside the folder"),
    ],
)
def test_a_path_that_is_not_a_lora_file_in_the_folder_is_refused(
    tmp_path: Path, clock: Clock, layers: Any, text: str, message: str
) -> None:
    (tmp_path / "allowed").mkdir()
    (tmp_path / "allowed" / "notes.txt").write_text("hello")
    with pytest.raises(InvalidInput, match=message):
        asyncio.run(sources(tmp_path, clock).resolve(path_ref(text), layers))


def test_paths_are_refused_when_the_operator_allows_no_folder(
    tmp_path: Path, clock: Clock, layers: Any, shapes: Any
) -> None:
    file = write_lora(tmp_path / "allowed" / "ink.safetensors", shapes)
    with pytest.raises(InvalidInput, match="local LoRA paths are not accepted") as caught:
        asyncio.run(sources(tmp_path, clock, allowed_dir=None).resolve(path_ref(str(file)), layers))
    assert caught.value.field == "loras.0.path"


def test_a_registered_id_names_a_file_or_a_url(
    tmp_path: Path, server: _Server, clock: Clock, layers: Any, shapes: Any
) -> None:
    file = write_lora(tmp_path / "operator" / "brand.safetensors", shapes, seed=5)
    url = server.serve("/hub/style.safetensors", lora_bytes(shapes, seed=6))
    lora_sources = sources(
        tmp_path, clock, registered={"brand": str(file), "style": url, "broken": str(tmp_path / "none")}
    )

    def ref(name: str) -> LoraRef:
        return LoraRef(kind="id", value=name, field="loras.1.id")

    assert asyncio.run(lora_sources.resolve(ref("brand"), layers)).path == file.resolve()
    assert asyncio.run(lora_sources.resolve(ref("style"), layers)).path.read_bytes() == lora_bytes(
        shapes, seed=6
    )
    with pytest.raises(
        InvalidInput, match=r"unknown LoRA id 'nope' \(registered: brand, broken, style\)"
    ) as caught:
        asyncio.run(lora_sources.resolve(ref("nope"), layers))
    assert caught.value.field == "loras.1.id"
    missing = r"loras\.1\.id: the LoRA id 'broken' is missing on this server"
    with pytest.raises(LoraLoadError, match=missing) as gone:
        asyncio.run(lora_sources.resolve(ref("broken"), layers))
    assert str(tmp_path) not in gone.value.message  # the registered path is the operator's: logged only


SIGNED = "?X-Amz-Signature=s3cr3t"


@pytest.mark.parametrize(
    ("case", "error", "said"),
    [
        ("404", InvalidInput, "could not be fetched (unreachable)"),
        ("503", Unavailable, "could not be fetched for now (unreachable)"),
        ("too large", TooLarge, "is larger than this server's limit for a LoRA file"),
        ("not a lora", InvalidInput, "is not a LoRA file reangle can load"),
    ],
)
@pytest.mark.parametrize("declared", ["registered id", "catalog url"])
def test_a_private_lora_that_fails_is_named_by_its_id_or_label_and_its_url_only_logged(
    tmp_path: Path,
    server: _Server,
    clock: Clock,
    layers: Any,
    shapes: Any,
    caplog: pytest.LogCaptureFixture,
    case: str,
    error: type[Exception],
    said: str,
    declared: str,
) -> None:
    body = lora_bytes(shapes, seed=7)
    answers = {
        "404": (404, b"no"),
        "503": (503, b"later"),
        "too large": (200, body),
        "not a lora": (200, b"<html>"),
    }
    status, sent = answers[case]
    url = server.serve(f"/private/house.safetensors{SIGNED}", sent, status=status)
    policy = fits(len(body) - 1) if case == "too large" else LOCAL
    lora_sources = sources(tmp_path, clock, fetch=policy, registered={"house": url})
    if declared == "registered id":
        ref, shown = LoraRef(kind="id", value="house", field="input.loras.0.id"), "the LoRA id 'house'"
    else:
        ref = LoraRef(kind="url", value=url, field="catalog.shop.loras.0.url", label="House style")
        shown = "the model's LoRA 'House style'"

    with pytest.raises(error) as caught:
        asyncio.run(lora_sources.resolve(ref, layers))

    message = caught.value.message  # type: ignore[attr-defined]
    assert shown in message
    assert said in message
    for secret in ("/private/", "s3cr3t", "127.0.0.1"):
        assert secret not in message
    assert url.split("?")[0] in caplog.text  # the operator finds the cause in the log
    assert "s3cr3t" not in caplog.text  # and no one reading it the URL's token
    if isinstance(caught.value, InvalidInput):
        assert caught.value.field == ref.field


def test_a_catalog_path_outside_the_folder_is_missing_without_its_path(
    tmp_path: Path, clock: Clock, layers: Any
) -> None:
    lora_sources = sources(tmp_path, clock)
    ref = LoraRef(
        kind="path", value="../secret/house.safetensors", field="catalog.shop.loras.0.path", label="x"
    )
    with pytest.raises(LoraLoadError) as caught:
        asyncio.run(lora_sources.resolve(ref, layers))
    assert caught.value.message == "catalog.shop.loras.0.path: the model's LoRA 'x' is missing on this server"


def test_a_request_url_that_is_not_a_lora_is_named_without_its_query(
    tmp_path: Path, server: _Server, clock: Clock, layers: Any
) -> None:
    url = server.serve(f"/mine.safetensors{SIGNED}", b"<html>not a LoRA</html>")
    with pytest.raises(InvalidInput) as caught:
        asyncio.run(sources(tmp_path, clock).resolve(url_ref(url), layers))
    assert server.url("/mine.safetensors") in caught.value.message
    assert "s3cr3t" not in caught.value.message


def test_a_download_every_waiting_job_left_stops_and_a_later_job_fetches_again(
    tmp_path: Path, server: _Server, clock: Clock, layers: Any, shapes: Any
) -> None:
    server.serve("/style.safetensors", lora_bytes(shapes, seed=8))
    url = server.url("/gate/style.safetensors")
    lora_sources = sources(tmp_path, clock)

    async def jobs() -> Path:
        canceled = asyncio.create_task(lora_sources.resolve(url_ref(url), layers))
        await _until(lambda: len(server.seen) == 1)
        canceled.cancel()
        await asyncio.gather(canceled, return_exceptions=True)
        later = asyncio.create_task(lora_sources.resolve(url_ref(url), layers))
        await _until(
            lambda: len(server.seen) == 2
        )  # not joined to the abandoned download: a request of its own
        server.release.set()
        return (await later).path

    assert asyncio.run(jobs()).read_bytes() == lora_bytes(shapes, seed=8)


# The header check -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["diffusers", "peft", "kohya", "kohya_unet"])
def test_every_naming_style_matches_the_model_layers(
    tmp_path: Path, layers: Any, shapes: Any, style: Any
) -> None:
    path = write_lora(tmp_path / "x.safetensors", shapes, style=style)
    check = check_lora_file(path, layers, field="loras.0.url", shown="x")
    assert sorted(check.modules) == sorted(TARGETS)
    assert check.missing == ()
    assert check.rank == 2
    # names alone are enough to match, without shapes
    assert sorted(check_lora_file(path, set(layers), field="f", shown="x").modules) == sorted(TARGETS)


def test_the_check_reads_the_header_only(tmp_path: Path, layers: Any, shapes: Any) -> None:
    """A file whose tensor bytes are garbage still passes: no tensor data is read."""
    path = write_lora(tmp_path / "x.safetensors", shapes)
    data = bytearray(path.read_bytes())
    header_end = 8 + struct.unpack("<Q", data[:8])[0]
    data[header_end:] = b"\xff" * (len(data) - header_end)
    path.write_bytes(bytes(data))
    assert sorted(check_lora_file(path, layers, field="f", shown="x").modules) == sorted(TARGETS)


def _raw_safetensors(path: Path, header: dict[str, Any], data: bytes) -> Path:
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)
    return path


def _bad_files(shapes: dict[str, tuple[int, int]]) -> dict[str, tuple[dict[str, torch.Tensor] | bytes, str]]:
    lora = lora_tensors(shapes, seed=1)
    a_key = next(key for key in lora if key.endswith("lora_A.weight"))
    return {
        "text": (b"hello, not tensors at all", "is not a safetensors file"),
        "too short": (b"abc", "it has only 3 bytes"),
        "truncated header": (struct.pack("<Q", 500) + b'{"a": 1}', "truncated: its header needs 500 bytes"),
        "truncated data": (b"cut", "it is truncated: its tensors need"),
        "no LoRA keys": (
            {"transformer_blocks.0.attn.to_q.weight": torch.ones(48, 48)},
            "none of its 1 tensors is a lora_A/lora_B or lora_down/lora_up weight",
        ),
        "no tensors": ({}, "it holds no tensors"),
        "lora_A without lora_B": (
            {a_key: lora[a_key]},
            r"has a down \(lora_A, lora_down\) weight but not an up",
        ),
        "DoRA": ({**lora, "x.lora_magnitude_vector": torch.ones(3)}, "it is a DoRA"),
        "stray keys": ({**lora, "text_encoder.x.weight": torch.ones(2)}, "keys that are not LoRA weights"),
        "another model's layers": (
            lora_tensors({"single_transformer_blocks.3.attn.to_q": (48, 48)}, seed=1),
            "matches none of the model's layers",
        ),
        "other shapes": (
            lora_tensors({"transformer_blocks.0.attn.to_q": (64, 48)}, seed=1),
            r"shapes differ at transformer_blocks\.0\.attn\.to_q \(file 64->48, model 48->48\)",
        ),
        "partly another model's": (
            {**lora, **lora_tensors({"transformer_blocks.9.attn.to_q": (48, 48)}, seed=1)},
            r"names 1 layers the model does not have: transformer_blocks\.9\.attn\.to_q",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "text",
        "too short",
        "truncated header",
        "truncated data",
        "no LoRA keys",
        "no tensors",
        "lora_A without lora_B",
        "DoRA",
        "stray keys",
        "another model's layers",
        "other shapes",
        "partly another model's",
    ],
)
def test_a_bad_file_is_invalid_input_naming_the_field_and_the_reason(
    tmp_path: Path, layers: Any, shapes: Any, case: str
) -> None:
    from safetensors.torch import save_file

    content, reason = _bad_files(shapes)[case]
    path = tmp_path / "bad.safetensors"
    if isinstance(content, bytes) and case != "truncated data":
        path.write_bytes(content)
    elif case == "truncated data":
        save_file(lora_tensors(shapes, seed=1), str(path))
        path.write_bytes(path.read_bytes()[:-7])
    else:
        assert isinstance(content, dict)
        save_file(content, str(path))
    with pytest.raises(InvalidInput, match=reason) as caught:
        check_lora_file(path, layers, field="loras.1.path", shown="the LoRA path 'bad.safetensors'")
    assert caught.value.field == "loras.1.path"
    assert caught.value.message.startswith("loras.1.path: the LoRA path 'bad.safetensors'")
    assert "\n" not in caught.value.message


def test_a_partial_match_is_accepted_when_not_strict_and_names_what_is_left_out(
    tmp_path: Path, layers: Any, shapes: Any
) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "partial.safetensors"
    extra = lora_tensors({"transformer_blocks.9.attn.to_q": (48, 48)}, seed=1)
    save_file(lora_tensors(shapes, seed=1) | extra, str(path))
    check = check_lora_file(path, layers, field="f", shown="x", strict=False)
    assert sorted(check.modules) == sorted(TARGETS)
    assert check.missing == ("transformer_blocks.9.attn.to_q",)


def test_a_header_with_bad_offsets_is_refused(tmp_path: Path, layers: Any) -> None:
    entry = {"dtype": "F32", "shape": [2, 48], "data_offsets": [0, 100]}
    path = _raw_safetensors(tmp_path / "x.safetensors", {"a.lora_A.weight": entry}, b"\0" * 100)
    with pytest.raises(InvalidInput, match=r"has 100 bytes for a F32 tensor of shape \[2, 48\]"):
        check_lora_file(path, layers, field="f", shown="x")


# The request field -----------------------------------------------------------------------------------------


def test_the_loras_field_parses_into_references() -> None:
    refs = parse_lora_refs(
        [{"url": "https://example.com/a.safetensors", "scale": 0.5}, {"path": "b.safetensors"}, {"id": "c"}]
    )
    assert refs == [
        LoraRef(kind="url", value="https://example.com/a.safetensors", scale=0.5, field="loras.0.url"),
        LoraRef(kind="path", value="b.safetensors", scale=1.0, field="loras.1.path"),
        LoraRef(kind="id", value="c", scale=1.0, field="loras.2.id"),
    ]
    assert parse_lora_refs(None) == []


@pytest.mark.parametrize(
    ("value", "field", "message"),
    [
        ("https://x", "loras", "must be a list"),
        ([{"url": "a"}] * 5, "loras", "at most 4"),
        (["https://x"], "loras.0", "must be an object"),
        ([{"url": "a", "id": "b"}], "loras.0", "exactly one of url, path or id"),
        ([{"scale": 1}], "loras.0", "exactly one of url, path or id"),
        ([{"url": "a", "weight": 1}], "loras.0.weight", "unknown keys"),
        ([{"url": ""}], "loras.0.url", "non-empty text"),
        ([{"id": 3}], "loras.0.id", "non-empty text"),
        ([{"url": "a", "scale": "1"}], "loras.0.scale", "must be a number"),
        ([{"url": "a", "scale": True}], "loras.0.scale", "must be a number"),
        ([{"url": "a", "scale": float("nan")}], "loras.0.scale", "must be a number"),
        ([{"url": "a", "scale": 9}], "loras.0.scale", "between -4 and 4"),
    ],
)
def test_a_bad_loras_field_names_the_field(value: object, field: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as caught:
        parse_lora_refs(value)
    assert caught.value.field == field


def test_the_cache_cannot_be_smaller_than_one_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="larger than the whole cache"):
        LoraSourcesConfig(cache_dir=tmp_path, max_cache_bytes=10, fetch=FetchPolicy(max_bytes=11))


def test_stale_partial_downloads_are_removed_at_start(tmp_path: Path, clock: Clock) -> None:
    sources(tmp_path, clock)
    stale, fresh = tmp_path / "cache" / "tmp" / "old.part", tmp_path / "cache" / "tmp" / "new.part"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    os.utime(stale, (1, 1))
    sources(tmp_path, clock)
    assert leftovers(tmp_path) == ["new.part"]
