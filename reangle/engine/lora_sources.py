"""A request's own LoRAs: `{"url"}`, `{"path"}` or `{"id"}` references turned into checked local files.

- url: downloaded under the same SSRF rules as image URLs (`FetchPolicy`: every hop resolved, checked and
  pinned), streamed to a temporary file against a size cap, checked as a safetensors LoRA, then moved into a
  disk cache named by its sha256. A URL -> sha256 index means that the next job with the same URL sends no
  request at all, for `url_trust_s` (default one day): a URL can be re-uploaded with other content, so the
  mapping is trusted that long and then fetched again (cheap when the bytes are the same: same file, same
  loaded adapter, which are keyed by content). 0 fetches every time.
- path: a file inside the operator's folder (`allowed_dir`), after resolving `..` and symlinks; relative paths
  are taken from that folder. The file is used where it is.
- id: a LoRA the operator registered by name, pointing at a local file (used where it is, no folder rule) or
  at an http(s) URL (fetched as above).

A registered id and a catalog model's own LoRA are the operator's (`LoraRef.private`): when one cannot be
fetched or read, the error names it by its id or label and says what went wrong (unreachable, not a LoRA
file, too large, missing), and its URL or path, with the full reason, goes to the server log only. A catalog
model's own LoRA that cannot be used (those failures, a file that is no LoRA for the model, or the same file
as another of the model's) is a `LoraLoadError`: the server's fault, not the request's input.

Two references of one job to the same file (the same file at two URLs, a request's LoRA that is the model's
own) are refused naming the later one's field.

The disk cache is a size-bounded LRU (a file's mtime is its last use) shared safely by jobs and processes:
a download is written under `tmp/` and renamed into `blobs/<sha256>.safetensors` only once whole and
checked, so a half-written or invalid file is never in the cache; two processes fetching the same file both
rename the same bytes to the same name. In one process, one URL is downloaded once however many jobs ask for
it at the same time (and the download stops when every job waiting for it has left, canceled), and files held
by a running job (`LoraSources.resolved`) are never evicted. A file fetched ahead of its job
(`LoraSources.prefetch`, the embedded server's `reangle.runtime.lora_prefetch`) is not held: a cache too
small for the queue's LoRAs may evict it before its job runs, which then fetches it again. Another process
sharing the folder may evict a file between a job's resolve and its load; its loader then fails with a
retryable error.

Every refusal is reangle's own: `InvalidInput` naming the field (`loras.0.url`), `TooLarge`, `LoraLoadError`
for a catalog model's own LoRA, or `Unavailable` for a network failure that may pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reangle.core.lora_refs import LORA_SUFFIX, LoraRef, without_query
from reangle.engine.lora_check import LoraCheck, ModelLayers, check_lora_file, lora_pairs, read_header
from reangle.errors import InvalidInput, LoraLoadError, ReangleError, TooLarge, Unavailable
from reangle.store.url_fetch import FetchPolicy, Resolver, fetch_url_streamed

log = logging.getLogger("reangle.loras")

#: Files in tmp/ older than this are left-overs of a crashed process (a live download is bounded by the
#: fetch timeout).
_STALE_TMP_S = 24 * 3600
_CHUNK = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class ResolvedLora:
    """A request's LoRA as a checked local file."""

    path: Path
    sha256: str
    scale: float
    field: str
    #: What the request named (the URL, path or id); the operator's location when `private`: not for users.
    source: str
    #: How messages to users name it (`LoraRef.shown`).
    shown: str
    private: bool = False
    check: LoraCheck

    @property
    def adapter(self) -> str:
        """The adapter name on the GPU: the same content is the same adapter, whatever named it."""
        return f"lora_{self.sha256[:16]}"


@dataclass(frozen=True, kw_only=True)
class LoraSourcesConfig:
    #: The disk cache (blobs/, urls/, tmp/); e.g. <REANGLE_CACHE_DIR>/loras.
    cache_dir: Path
    #: Bound of the files in blobs/; the least recently used are removed past it.
    max_cache_bytes: int = 20 * 1024**3
    #: SSRF rules, size cap (max_bytes) and deadline of one LoRA download.
    fetch: FetchPolicy = field(default_factory=lambda: FetchPolicy(max_bytes=2 * 1024**3, timeout_s=600))
    #: How long a URL's content is taken as known without asking again (see the module docstring).
    url_trust_s: float = 24 * 3600
    #: The operator's folder of local LoRAs; None refuses `path` references.
    allowed_dir: Path | None = None
    #: LoRA id -> a local file or an http(s) URL, registered by the operator.
    registered: Mapping[str, str] = field(default_factory=dict)
    #: Refuse a LoRA naming layers the model lacks (see lora_check); False accepts those that match.
    strict: bool = True

    def __post_init__(self) -> None:
        if self.fetch.max_bytes > self.max_cache_bytes:
            raise ValueError("a LoRA may not be larger than the whole cache: max_bytes > max_cache_bytes")
        if self.url_trust_s < 0:
            raise ValueError("url_trust_s must be 0 or more")


class LoraSources:
    """Resolves LoRA references against one cache folder. Use from one event loop."""

    def __init__(
        self,
        config: LoraSourcesConfig,
        *,
        resolver: Resolver | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._resolver = resolver
        self._clock = clock
        self._blobs = config.cache_dir / "blobs"
        self._urls = config.cache_dir / "urls"
        self._tmp = config.cache_dir / "tmp"
        for folder in (self._blobs, self._urls, self._tmp):
            folder.mkdir(parents=True, exist_ok=True)
        self._inflight: dict[str, asyncio.Future[str]] = {}
        #: a download -> the jobs waiting for it (by download: a URL may have a finished one and a new one)
        self._waiting: dict[asyncio.Future[str], int] = {}
        self._held: dict[str, int] = {}  # sha256 -> jobs holding the file
        self._lock = threading.Lock()  # _held and eviction (eviction runs in a worker thread)
        self._hashes: dict[tuple[str, int, int, int], str] = {}  # (path, size, mtime_ns, inode) -> sha256
        self._remove_stale_tmp()

    @contextlib.asynccontextmanager
    async def resolved(
        self, refs: Sequence[LoraRef], layers: ModelLayers | Set[str]
    ) -> AsyncIterator[list[ResolvedLora]]:
        """Resolve and check `refs` in order; their cached files are not evicted until the block ends."""
        held: list[str] = []
        try:
            found: list[ResolvedLora] = []
            for ref in refs:
                lora = await self._resolve(ref, layers, held)
                _check_new_file(lora, ref, found)
                found.append(lora)
            yield found
        finally:
            self._release(held)

    async def resolve(self, ref: LoraRef, layers: ModelLayers | Set[str]) -> ResolvedLora:
        """Resolve and check one reference. Its cached file may be evicted afterwards: jobs use `resolved`."""
        async with self.resolved([ref], layers) as (lora,):
            return lora

    async def prefetch(self, url: str, where: str) -> None:
        """Download a request's LoRA `url` into the cache ahead of its job, or join its download in flight.
        The file is not held: the job's `resolved` finds it cached, unless a cache too small evicted it."""
        held: list[str] = []
        try:
            await self._from_url(url, where, held)
        finally:
            self._release(held)

    def cached_files(self) -> list[Path]:
        """The cache's files, least recently used first."""
        return [path for _mtime, _size, path in self._blob_entries()]

    async def _resolve(self, ref: LoraRef, layers: ModelLayers | Set[str], held: list[str]) -> ResolvedLora:
        location = self._location(ref)
        try:
            path, sha = await self._locate(ref, location, held)
        except ReangleError as exc:
            if not ref.private:
                raise
            log.warning("%s (%s) could not be used: %s", ref.shown, without_query(location), exc.message)
            raise _private_failure(ref, exc) from None
        # the check's messages name the file as `ref.shown` and tell of its header and layers only
        try:
            check = await asyncio.to_thread(
                check_lora_file, path, layers, field=ref.field, shown=ref.shown, strict=self.config.strict
            )
        except InvalidInput as exc:
            if not ref.from_catalog:
                raise
            log.warning("%s (%s) is not a LoRA for this model: %s", ref.shown, without_query(location), exc)
            raise _operator_fault(exc.message, exc.hint) from None
        return ResolvedLora(
            path=path,
            sha256=sha,
            scale=ref.scale,
            field=ref.field,
            source=ref.value,
            shown=ref.shown,
            private=ref.private,
            check=check,
        )

    # references ---------------------------------------------------------------------------------------------

    def _allowed_file(self, text: str, where: str) -> Path:
        root = self.config.allowed_dir
        if root is None:
            raise InvalidInput(
                f"{where}: local LoRA paths are not accepted by this server",
                field=where,
                hint="give the LoRA as a url or a registered id",
            )
        base = Path(os.path.realpath(root))
        # realpath resolves `..` and every symlink, whether the file exists or not: the answer does not
        # tell what exists outside the folder
        real = Path(os.path.realpath(base / text))
        if not real.is_relative_to(base) or real == base:
            raise InvalidInput(f"{where} {text!r} is outside the folder of local LoRAs", field=where)
        if real.suffix != LORA_SUFFIX:
            raise InvalidInput(f"{where} {text!r} is not a {LORA_SUFFIX} file", field=where)
        if not real.is_file():
            raise InvalidInput(
                f"{where}: there is no LoRA file {text!r} in the folder of local LoRAs", field=where
            )
        return real

    def _location(self, ref: LoraRef) -> str:
        """Where the LoRA is: what the reference gives, or the location registered for its id."""
        if ref.kind != "id":
            return ref.value
        location = self.config.registered.get(ref.value)
        if location is None:
            known = ", ".join(sorted(self.config.registered)) or "none"
            raise InvalidInput(
                f"{ref.field}: unknown LoRA id {ref.value!r} (registered: {known})", field=ref.field
            )
        return location

    async def _locate(self, ref: LoraRef, location: str, held: list[str]) -> tuple[Path, str]:
        if ref.kind == "path":
            return await self._from_file(self._allowed_file(location, ref.field))
        if ref.kind == "url" or location.startswith(("http://", "https://")):
            return await self._from_url(location, ref.field, held)
        path = Path(location).expanduser()
        if not path.is_file():
            raise LoraLoadError(
                f"the registered LoRA {ref.value!r} points at {location}, which is not a file",
                hint="fix the server's registered LoRAs",
            )
        return await self._from_file(path.resolve())

    async def _from_file(self, path: Path) -> tuple[Path, str]:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
        sha = self._hashes.get(key)
        if sha is None:
            sha = await asyncio.to_thread(_file_sha256, path)
            self._hashes[key] = sha
        return path, sha

    # URLs ---------------------------------------------------------------------------------------------------

    async def _from_url(self, url: str, where: str, held: list[str]) -> tuple[Path, str]:
        sha = self._known(url)
        if sha is not None and self._use(sha, held):
            return self._blob(sha), sha
        for _attempt in range(2):
            future = self._inflight.get(url)
            if future is None:
                future = asyncio.ensure_future(self._download(url, where))
                self._inflight[url] = future
                future.add_done_callback(lambda done: self._finished(url, done))
            try:
                sha = await self._wait_for(url, future)
            except ReangleError as exc:
                raise _for_field(exc, where) from None
            if self._use(sha, held):
                return self._blob(sha), sha
            # evicted between its download and now: by another process, or by a cache too small for a job
        raise Unavailable(
            f"the LoRA cache could not keep {without_query(url)} long enough to use it", retry_after_s=30
        )

    async def _wait_for(self, url: str, download: asyncio.Future[str]) -> str:
        """The download's sha256; shared by every job waiting for it, stopped when the last of them leaves."""
        self._waiting[download] = self._waiting.get(download, 0) + 1
        try:
            return await asyncio.shield(download)
        except asyncio.CancelledError:
            if self._waiting[download] == 1 and not download.done():
                # no job wants it any more (canceled): a later job for this URL starts a new download
                if self._inflight.get(url) is download:
                    del self._inflight[url]
                download.cancel()
            raise
        finally:
            self._waiting[download] -= 1
            if not self._waiting[download]:
                del self._waiting[download]

    def _finished(self, url: str, future: asyncio.Future[str]) -> None:
        if self._inflight.get(url) is future:
            del self._inflight[url]
        if not future.cancelled():
            future.exception()  # retrieved here, so that a download all its waiters left is not logged

    def _release(self, held: list[str]) -> None:
        with self._lock:
            for sha in held:
                self._held[sha] -= 1
                if not self._held[sha]:
                    del self._held[sha]

    def _known(self, url: str) -> str | None:
        """The sha256 the URL gave when last fetched, while that is trusted."""
        try:
            entry = json.loads(self._index(url).read_text())
        except (OSError, ValueError):
            return None
        fresh = self._clock() - float(entry.get("fetched_at", 0)) < self.config.url_trust_s
        sha = entry.get("sha256")
        return sha if entry.get("url") == url and fresh and isinstance(sha, str) else None

    def _use(self, sha: str, held: list[str]) -> bool:
        """Mark the cached file as used now and hold it for the job; False when it is not in the cache."""
        now = self._clock()
        with self._lock:
            try:
                os.utime(self._blob(sha), (now, now))
            except FileNotFoundError:
                return False
            self._held[sha] = self._held.get(sha, 0) + 1
        held.append(sha)
        return True

    async def _download(self, url: str, where: str) -> str:
        handle = tempfile.NamedTemporaryFile(dir=self._tmp, suffix=".part", delete=False)  # noqa: SIM115
        part = Path(handle.name)
        try:
            digest = hashlib.sha256()

            def write(chunk: bytes) -> None:
                digest.update(chunk)
                handle.write(chunk)

            with handle:
                await fetch_url_streamed(url, self.config.fetch, write, field=where, resolver=self._resolver)
            sha = digest.hexdigest()
            await asyncio.to_thread(self._commit, part, url, sha, where)
            return sha
        finally:
            part.unlink(missing_ok=True)

    def _commit(self, part: Path, url: str, sha: str, where: str) -> None:
        """Check the downloaded file, move it into the cache whole, record the URL, evict past the bound."""
        shown = f"the file at {without_query(url)}"
        try:
            lora_pairs(read_header(part, field=where, shown=shown), field=where, shown=shown)
        except InvalidInput as exc:
            raise _NotLoraFile(exc.message, field=exc.field, hint=exc.hint) from None
        with part.open("rb") as handle:
            os.fsync(handle.fileno())  # the bytes are on disk before the name says they are whole
        now = self._clock()
        os.utime(part, (now, now))
        os.replace(part, self._blob(sha))  # atomic; a concurrent process renames the same bytes
        self._write_index(url, {"url": url, "sha256": sha, "fetched_at": now})
        self._evict(keep=sha)

    def _write_index(self, url: str, entry: dict[str, Any]) -> None:
        with tempfile.NamedTemporaryFile("w", dir=self._tmp, suffix=".json", delete=False) as handle:
            json.dump(entry, handle)
        os.replace(handle.name, self._index(url))

    # the disk cache -----------------------------------------------------------------------------------------

    def _blob(self, sha: str) -> Path:
        return self._blobs / f"{sha}{LORA_SUFFIX}"

    def _index(self, url: str) -> Path:
        return self._urls / f"{hashlib.sha256(url.encode()).hexdigest()}.json"

    def _blob_entries(self) -> list[tuple[float, int, Path]]:
        entries = []
        for path in self._blobs.glob(f"*{LORA_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                stat = path.stat()
                entries.append((stat.st_mtime, stat.st_size, path))
        return sorted(entries)

    def _evict(self, *, keep: str) -> None:
        """Remove the least recently used files until the cache fits its bound; never `keep` or a held one."""
        with self._lock:
            entries = self._blob_entries()
            total = sum(size for _mtime, size, _path in entries)
            for _mtime, size, path in entries:
                if total <= self.config.max_cache_bytes:
                    break
                sha = path.name.removesuffix(LORA_SUFFIX)
                if sha == keep or sha in self._held:
                    continue
                path.unlink(missing_ok=True)
                total -= size

    def _remove_stale_tmp(self) -> None:
        cutoff = time.time() - _STALE_TMP_S
        for path in self._tmp.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _for_field(exc: ReangleError, where: str) -> ReangleError:
    """The shared download's error for one of its waiters, naming that waiter's field, first in its message
    too (the fetcher's own messages are about the URL only)."""
    return exc.about(where) if isinstance(exc, InvalidInput) else exc


class _NotLoraFile(InvalidInput):
    """A downloaded file that is not a LoRA, told apart from a failed download in a private LoRA's message."""


_OPERATOR_HINT = "the server's operator set up this LoRA; the server log has the details"


def _operator_fault(message: str, hint: str | None = None) -> LoraLoadError:
    """A catalog model's own LoRA that cannot be used: the server's fault, whatever the request gave."""
    return LoraLoadError(message, hint=f"{hint}; {_OPERATOR_HINT}" if hint else _OPERATOR_HINT)


def _check_new_file(lora: ResolvedLora, ref: LoraRef, found: Sequence[ResolvedLora]) -> None:
    """Refuse `lora` when an earlier one of the job is the same file (two references to one file, or the
    same one twice): naming its field, as a fault of the catalog when both are a catalog model's own."""
    same = next((earlier for earlier in found if earlier.sha256 == lora.sha256), None)
    if same is None:
        return
    message = f"{lora.field}: {lora.shown} is the same file as {same.shown}; give it once"
    if not ref.from_catalog:
        raise InvalidInput(message, field=lora.field)
    # the catalog's LoRAs come first: the earlier one is the catalog's too
    log.warning(
        "%s (%s) is the same file as %s (%s)",
        lora.shown,
        without_query(lora.source),
        same.shown,
        without_query(same.source),
    )
    raise _operator_fault(message)


def _private_failure(ref: LoraRef, exc: ReangleError) -> ReangleError:
    """What users see when a private LoRA cannot be fetched or found: its id or label and the kind of
    failure, never its URL, path or the underlying message (logged instead). A catalog model's own LoRA that
    cannot be used is the server's fault (LoraLoadError), not the request's."""
    where, shown = ref.field, ref.shown
    if isinstance(exc, Unavailable):
        # the job preparer turns it into SourceUnavailable, which ends the job
        return Unavailable(
            f"{shown} could not be fetched for now (unreachable)", retry_after_s=exc.retry_after_s
        )
    if isinstance(exc, TooLarge):
        refusal: InvalidInput = TooLarge(
            f"{where}: {shown} is larger than this server's limit for a LoRA file", field=where
        )
    elif isinstance(exc, _NotLoraFile):
        message = f"{where}: {shown} is not a LoRA file reangle can load"
        refusal = InvalidInput(message, field=where, hint=_OPERATOR_HINT)
    elif isinstance(exc, InvalidInput) and ref.kind != "path":
        message = f"{where}: {shown} could not be fetched (unreachable)"
        refusal = InvalidInput(message, field=where, hint=_OPERATOR_HINT)
    else:
        return LoraLoadError(f"{where}: {shown} is missing on this server", hint=_OPERATOR_HINT)
    return _operator_fault(refusal.message) if ref.from_catalog else refusal
