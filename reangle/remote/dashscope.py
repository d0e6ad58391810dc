"""An async client for DashScope's Wan 2.7 image API (Alibaba Model Studio), in the vendor's documented async
flow:

1. `POST {base_url}/api/v1/services/aigc/image-generation/generation` with `X-DashScope-Async: enable`
   creates a task (`output.task_id`, `PENDING`);
2. `GET {base_url}/api/v1/tasks/{task_id}` is polled, with a growing interval, until SUCCEEDED, FAILED,
   CANCELED or UNKNOWN (an expired id);
3. the result URLs (`output.choices[].message.content[].image`, kept 24 h by the vendor) are downloaded with
   reangle's SSRF rules and size cap (`reangle.store.url_fetch`) and checked as images.

A stop request between polls cancels the task at the vendor while it is PENDING (`POST
/api/v1/tasks/{task_id}/cancel`, the only state the vendor cancels) and otherwise stops following it, saying
so. A task created by an earlier run (reported through `on_created`, passed back as `task_id`) is followed
again instead of creating, and paying for, another one. Throttling, server errors and connection failures
are retried with exponential backoff, bounded in count and time; every other vendor error becomes a reangle
error (see `reangle.remote.dashscope_errors`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from reangle import __version__
from reangle.core.images import decode_image
from reangle.core.wan_image import DEFAULT_MODEL
from reangle.errors import Canceled, EngineError, InvalidInput, ReangleError, TooLarge, Unavailable
from reangle.remote.base_url import base_url_problem
from reangle.remote.dashscope_errors import DashScopeAPIError, sent_before_failing, to_reangle
from reangle.store.url_fetch import FetchPolicy, Resolver, checked_addresses, fetch_url

log = logging.getLogger(__name__)

CREATE_PATH = "/api/v1/services/aigc/image-generation/generation"
TASK_PATH = "/api/v1/tasks/{task_id}"
CANCEL_PATH = "/api/v1/tasks/{task_id}/cancel"
TERMINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN"})
#: Reported (never sent by the vendor) when reangle stops following a task the vendor would not cancel.
ABANDONED = "ABANDONED"
POLL_GROWTH = 1.5

#: Called on every change of a task's status, in order, from the event loop running the client.
StatusCallback = Callable[["TaskUpdate"], None]
#: Polled between requests and during waits; returning True stops the task (it raises `Canceled`).
StopCheck = Callable[[], bool]
#: Called with the id of a task as soon as DashScope has created it (to record it: see `generate`).
CreatedCallback = Callable[[str], None]


@dataclass(frozen=True, kw_only=True)
class DashScopeConfig:
    """Everything the client needs, passed in explicitly (the server builds it from its settings)."""

    api_key: str = field(repr=False)  # never in a log line or a traceback
    #: The region's endpoint; the vendor's paths (`/api/v1/...`) are appended to it.
    base_url: str = "https://dashscope-intl.aliyuncs.com"
    model: str = DEFAULT_MODEL
    request_timeout_s: float = 30.0  # one HTTP request to the API
    poll_interval_s: float = 2.0  # the first wait between polls; it grows by half each time...
    max_poll_interval_s: float = 10.0  # ...up to this
    task_timeout_s: float = 600.0  # from creation to a terminal status
    max_retries: int = 4  # retries of one call on a transient error (so at most 5 attempts)
    retry_base_s: float = 1.0  # the first backoff; it doubles with each retry (with jitter)...
    retry_max_wait_s: float = 30.0  # ...up to this, which also caps the vendor's Retry-After
    retry_budget_s: float = 90.0  # the most one call spends waiting to retry
    stop_check_s: float = 0.25  # how often a wait looks at the stop check
    #: How result images are fetched: SSRF rules, byte cap, deadline. allow_private only in tests.
    download: FetchPolicy = field(default_factory=FetchPolicy)
    resolver: Resolver | None = None  # DNS for result URLs; None is the system's

    def __post_init__(self) -> None:
        problem = base_url_problem(self.base_url)
        if problem is not None:
            raise ValueError(f"DashScope base_url must be an http(s) URL of a host: {problem}")
        positive = (self.request_timeout_s, self.poll_interval_s, self.task_timeout_s, self.stop_check_s)
        if min(positive) <= 0 or self.max_retries < 0 or self.retry_base_s < 0:
            raise ValueError(f"invalid {type(self).__name__}: timeouts and intervals must be positive")


@dataclass(frozen=True)
class TaskUpdate:
    task_id: str
    status: str  # PENDING, RUNNING, SUCCEEDED, FAILED, CANCELED, UNKNOWN (the vendor's), or ABANDONED
    detail: str = ""


@dataclass(frozen=True)
class ResultImage:
    data: bytes  # as the vendor made it (PNG), ready for the asset store
    mime_type: str
    width: int
    height: int
    url: str


@dataclass(frozen=True)
class TaskResult:
    task_id: str
    images: list[ResultImage]
    #: The vendor's `usage` (image_count, size, ...), for accounting.
    usage: dict[str, Any]
    request_id: str | None


class DashScopeClient:
    """One configured DashScope account. Use as `async with DashScopeClient(config) as client: ...`."""

    def __init__(self, config: DashScopeConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self._http = httpx.AsyncClient(
            base_url=config.base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {config.api_key}", "User-Agent": f"reangle/{__version__}"},
            timeout=httpx.Timeout(config.request_timeout_s),
            follow_redirects=False,
            transport=transport,
        )

    async def __aenter__(self) -> DashScopeClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def generate(
        self,
        body: Mapping[str, Any],
        *,
        on_status: StatusCallback | None = None,
        on_created: CreatedCallback | None = None,
        should_stop: StopCheck | None = None,
        task_id: str | None = None,
    ) -> TaskResult:
        """Create a task for `body` (see `reangle.core.wan_image`), wait for it and download its images.

        `on_created` hears the new task's id before it is first polled. Given the `task_id` of a task an
        earlier run created, that task is followed instead and none is created, unless DashScope answers
        CANCELED: it cancels only PENDING tasks, so that one never ran and was not billed (as when `wait` was
        interrupted by a server stop), and a new task is created for `body`. A task DashScope no longer knows
        (UNKNOWN: ids live 24 h) fails with an `EngineError` rather than being paid for twice."""
        if task_id is not None:
            payload = await self._resume(task_id, on_status, should_stop)
            if payload is not None:
                return await self.download(task_id, payload)
        if should_stop is not None and should_stop():
            raise Canceled("canceled before the DashScope task was created")
        task_id = await self.create_task(body, should_stop=should_stop)
        _created(on_created, task_id)
        payload = await self.wait(task_id, on_status=on_status, should_stop=should_stop)
        return await self.download(task_id, payload)

    async def _resume(
        self, task_id: str, on_status: StatusCallback | None, should_stop: StopCheck | None
    ) -> dict[str, Any] | None:
        """Follow a task an earlier run created: its SUCCEEDED answer, or None when it was canceled before
        it ran (so that a new one may be created)."""
        log.info("following DashScope task %s, created by an earlier run of the job", task_id)
        try:
            return await self.wait(task_id, on_status=on_status, should_stop=should_stop)
        except _CanceledAtVendor:
            log.info("DashScope task %s was canceled before it ran (not billed); creating a new one", task_id)
            return None
        except _UnknownTask as exc:
            raise EngineError(
                f"DashScope no longer knows task {task_id}, which this job created before the server "
                "stopped (UNKNOWN: task ids live 24 h); it may have run and been billed, so no second task "
                "was created",
                hint="submit the job again to have a new task created",
            ) from exc

    async def create_task(self, body: Mapping[str, Any], *, should_stop: StopCheck | None = None) -> str:
        if not self.config.api_key.strip():
            raise to_reangle(DashScopeAPIError("InvalidApiKey", "no API key is set"), doing="creating a task")
        payload = await self._call(
            "POST",
            CREATE_PATH,
            json=dict(body),
            headers={"X-DashScope-Async": "enable"},
            doing="creating a task",
            should_stop=should_stop,
        )
        task_id = _output(payload).get("task_id")
        if not isinstance(task_id, str) or not task_id:
            raise EngineError(f"DashScope created no task id (answer: {_shown(payload)})")
        log.info("DashScope task %s created (request %s)", task_id, payload.get("request_id"))
        return task_id

    async def get_task(self, task_id: str, *, should_stop: StopCheck | None = None) -> dict[str, Any]:
        """The task's current answer (`output.task_status`, `output.choices`, `usage`, ...)."""
        path = TASK_PATH.format(task_id=quote(task_id, safe=""))
        return await self._call("GET", path, doing=f"polling task {task_id}", should_stop=should_stop)

    async def cancel_task(self, task_id: str) -> None:
        """Cancel a PENDING task at the vendor; it refuses (a reangle error) once the task runs."""
        path = CANCEL_PATH.format(task_id=quote(task_id, safe=""))
        await self._call("POST", path, doing=f"canceling task {task_id}", should_stop=None)

    async def wait(
        self, task_id: str, *, on_status: StatusCallback | None = None, should_stop: StopCheck | None = None
    ) -> dict[str, Any]:
        """Poll until the task ends: its SUCCEEDED answer, or the reangle error for how it ended."""
        status: list[str] = []  # the last status seen, once there is one
        try:
            return await self._follow(task_id, status, on_status, should_stop)
        except asyncio.CancelledError:  # the server stops: the job's next run follows this task again
            await self._let_go_on_shutdown(task_id, status[-1] if status else "PENDING", on_status)
            raise

    async def _follow(
        self,
        task_id: str,
        seen: list[str],
        on_status: StatusCallback | None,
        should_stop: StopCheck | None,
    ) -> dict[str, Any]:
        config = self.config
        deadline = time.monotonic() + config.task_timeout_s
        interval = config.poll_interval_s
        status: str | None = None
        while True:
            try:
                payload = await self.get_task(task_id, should_stop=should_stop)
            except Canceled as exc:  # stopped while waiting to retry a poll
                outcome = await self._let_go(task_id, status or "PENDING", on_status)
                raise Canceled(f"canceled while DashScope task {task_id} was polled; {outcome}") from exc
            now_status = str(_output(payload).get("task_status") or "UNKNOWN").upper()
            if now_status != status:
                status = now_status
                seen[:] = [status]
                _notify(on_status, TaskUpdate(task_id, status))
            if status == "SUCCEEDED":
                return payload
            if status in TERMINAL_STATUSES:
                raise _ended(task_id, status, payload)
            left = deadline - time.monotonic()
            if left <= 0:
                outcome = await self._let_go(task_id, status, on_status)
                raise Unavailable(
                    f"DashScope task {task_id} did not finish within {config.task_timeout_s:g} s "
                    f"(still {status}); {outcome}",
                    retry_after_s=round(config.max_poll_interval_s) or 1,
                )
            if await self._pause(min(interval, left), should_stop):
                outcome = await self._let_go(task_id, status, on_status)
                raise Canceled(f"canceled while DashScope task {task_id} was {status}; {outcome}")
            interval = min(interval * POLL_GROWTH, max(config.max_poll_interval_s, config.poll_interval_s))

    async def download(self, task_id: str, payload: Mapping[str, Any]) -> TaskResult:
        """Fetch and check every image of a SUCCEEDED task's answer."""
        urls = result_urls(payload)
        if not urls:
            raise EngineError(f"DashScope task {task_id} succeeded without any image ({_shown(payload)})")
        fetches = [asyncio.ensure_future(self._fetch_image(task_id, url, k)) for k, url in enumerate(urls)]
        try:
            images = await asyncio.gather(*fetches)
        except BaseException:  # one failed (or we were canceled): the others are not left running
            for fetch in fetches:
                fetch.cancel()
            await asyncio.gather(*fetches, return_exceptions=True)
            raise
        usage = payload.get("usage")
        request_id = payload.get("request_id")
        return TaskResult(
            task_id=task_id,
            images=list(images),
            usage=dict(usage) if isinstance(usage, dict) else {},
            request_id=str(request_id) if request_id else None,
        )

    async def _let_go_on_shutdown(self, task_id: str, status: str, on_status: StatusCallback | None) -> None:
        """`wait` was cancelled (the server is stopping, and its job goes back to the queue): a PENDING task
        is canceled at the vendor, within one request's timeout, so that the job's next run finds it CANCELED
        and creates a new one without two being billed. A task already running is left to finish (and be
        billed), and the job's next run follows it again."""
        try:
            async with asyncio.timeout(self.config.request_timeout_s):
                await self._let_go(task_id, status, on_status)
        except (TimeoutError, ReangleError) as exc:
            log.warning("DashScope task %s left %s while stopping: %s", task_id, status, exc)

    async def _let_go(self, task_id: str, status: str, on_status: StatusCallback | None) -> str:
        """Stop following the task: cancel it at the vendor while it is PENDING. A sentence on the outcome."""
        if status == "PENDING":
            try:
                await self.cancel_task(task_id)
            except ReangleError as exc:
                outcome = f"DashScope did not cancel it ({exc.message}); it may still run and be billed"
            else:
                _notify(on_status, TaskUpdate(task_id, "CANCELED", "canceled at DashScope"))
                return "it was canceled at DashScope"
        else:
            outcome = (
                f"DashScope cancels only PENDING tasks, so this {status} one may still finish and be billed"
            )
        detail = f"reangle stopped polling it; {outcome}"
        _notify(on_status, TaskUpdate(task_id, ABANDONED, detail))
        log.warning("DashScope task %s left %s: %s", task_id, status, outcome)
        return detail

    async def _call(
        self,
        method: str,
        path: str,
        *,
        doing: str,
        should_stop: StopCheck | None,
        json: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """One API call, retried on transient errors: its JSON answer, or the mapped reangle error. A POST
        that may have reached the vendor before its connection failed is not repeated (it could bill twice).
        """
        started = time.monotonic()
        for attempt in range(self.config.max_retries + 1):
            try:
                response = await self._http.request(method, path, json=json, headers=headers)
            except httpx.TransportError as exc:
                sent = sent_before_failing(exc) and method != "GET"
                error = DashScopeAPIError.from_transport(exc, sent=sent)
                if sent:
                    raise Unavailable(
                        f"the connection to DashScope failed while {doing} ({error}); the request may have "
                        "reached it, so it was not repeated",
                        retry_after_s=5,
                    ) from exc
            else:
                if response.is_success:
                    return _json_object(response, doing)
                error = DashScopeAPIError.from_response(response)
            wait = self._backoff(attempt, error)
            spent = time.monotonic() - started
            if (
                not error.transient
                or attempt == self.config.max_retries
                or spent + wait > self.config.retry_budget_s
            ):
                raise to_reangle(error, doing=doing, retries=attempt) from error
            log.info("DashScope %s while %s; retry %d in %.2f s", error.code, doing, attempt + 1, wait)
            if await self._pause(wait, should_stop):
                raise Canceled(f"canceled while waiting to retry {doing} ({error})")
        raise AssertionError("unreachable")  # the last attempt always returns or raises

    def _backoff(self, attempt: int, error: DashScopeAPIError) -> float:
        config = self.config
        if error.retry_after_s is not None:
            return min(error.retry_after_s, config.retry_max_wait_s)
        exponential = min(config.retry_base_s * 2.0**attempt, config.retry_max_wait_s)
        return exponential * random.uniform(0.5, 1.0)  # jitter: many jobs do not retry in step

    async def _pause(self, seconds: float, should_stop: StopCheck | None) -> bool:
        """Sleep `seconds`, looking at the stop check along the way; True when it asked to stop."""
        deadline = time.monotonic() + seconds
        while True:
            if should_stop is not None and should_stop():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(left, self.config.stop_check_s))

    async def _fetch_image(self, task_id: str, url: str, k: int) -> ResultImage:
        """Result `k`, fetched under the download policy (retried when the fetch itself fails) and decoded."""
        config, name = self.config, f"result image {k}"
        try:
            await checked_addresses(url, config.download, field=name, resolver=config.resolver)
        except InvalidInput as exc:
            raise EngineError(
                f"DashScope task {task_id} gave a result URL reangle will not fetch: {exc}"
            ) from exc
        for attempt in range(config.max_retries + 1):
            try:
                data = await fetch_url(url, config.download, field=name, resolver=config.resolver)
                break
            except TooLarge as exc:
                raise EngineError(f"DashScope task {task_id}: {exc}") from exc
            except InvalidInput as exc:
                if attempt == config.max_retries:
                    raise Unavailable(f"could not download DashScope task {task_id}'s {name}: {exc}") from exc
                await asyncio.sleep(min(config.retry_base_s * 2.0**attempt, config.retry_max_wait_s))
        try:
            decoded = await asyncio.to_thread(decode_image, data, name=name)
        except InvalidInput as exc:
            raise EngineError(f"DashScope task {task_id}'s {name} is not a usable image: {exc}") from exc
        width, height = decoded.image.size
        return ResultImage(data=data, mime_type=decoded.mime_type, width=width, height=height, url=url)


def result_urls(payload: Mapping[str, Any]) -> list[str]:
    """The image URLs of a SUCCEEDED answer, in order: every `image` of every choice's message content."""
    urls: list[str] = []
    choices = _output(payload).get("choices")
    for choice in choices if isinstance(choices, list) else []:
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        for item in content if isinstance(content, list) else []:
            if isinstance(item, dict) and isinstance(item.get("image"), str):
                urls.append(item["image"])
    return urls


def _ended(task_id: str, status: str, payload: Mapping[str, Any]) -> ReangleError:
    """The reangle error for a task that ended without images."""
    output = _output(payload)
    request_id = payload.get("request_id")
    if status == "CANCELED":
        return _CanceledAtVendor(f"DashScope task {task_id} was canceled at DashScope")
    if status == "UNKNOWN":
        return _UnknownTask(
            f"DashScope does not know task {task_id} (UNKNOWN): its id expired (ids live 24 h) or never was"
        )
    error = DashScopeAPIError(
        str(output.get("code") or "TaskFailed"),
        str(output.get("message") or "no message"),
        request_id=str(request_id) if request_id else None,
    )
    return to_reangle(error, doing=f"running task {task_id}")


class _CanceledAtVendor(Canceled):
    """The task's status is CANCELED: it was canceled while PENDING, before it ran."""


class _UnknownTask(EngineError):
    """The task's status is UNKNOWN: DashScope has no such task (any more)."""


def _created(on_created: CreatedCallback | None, task_id: str) -> None:
    if on_created is None:
        return
    try:
        on_created(task_id)
    except Exception:  # the task is created (and may be billed): it is followed all the same
        log.exception("DashScope created-task hook failed on task %s", task_id)


def _notify(on_status: StatusCallback | None, update: TaskUpdate) -> None:
    if on_status is None:
        return
    try:
        on_status(update)
    except Exception:  # a broken hook must not lose a task that is running (and billed)
        log.exception("DashScope status hook failed on %s", update)


def _output(payload: Mapping[str, Any]) -> dict[str, Any]:
    output = payload.get("output")
    return output if isinstance(output, dict) else {}


def _json_object(response: httpx.Response, doing: str) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        raise EngineError(
            f"DashScope answered {doing} with something not a JSON object: {response.text[:200]!r}"
        )
    return payload


def _shown(payload: object) -> str:
    text = repr(payload)
    return text if len(text) <= 300 else text[:297] + "..."
