"""`AsyncClient`: `Client`'s methods as coroutines, over `httpx.AsyncClient`. Same behaviour, same errors."""

from __future__ import annotations

import asyncio
import builtins
import inspect
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import httpx

from reangle.client._base import (
    STREAM_BREAKS,
    USER_AGENT,
    ProgressCallback,
    WaitState,
    api_path,
    auth_headers,
    check,
    check_api,
    connection_error,
    idempotency_headers,
    parse,
    polled_events,
    query,
    server_root,
)
from reangle.client._client import Client
from reangle.client._errors import APIConnectionError, PermissionDeniedError, RateLimitError, ServerError
from reangle.client._inputs import (
    CAMERA_MODEL,
    TEXT_TO_IMAGE_MODEL,
    FileInput,
    ImageInput,
    LoraInput,
    TimeLimitsInput,
    as_image_list,
    batch_images,
    check_finite,
    check_set_prompts,
    edit_input,
    file_to_upload,
    generate_input,
    image_set_fields,
    job_body,
    orbit_input,
    prompt_extras,
    reference,
    submission_fields,
    upload_file,
    with_image_refs,
)
from reangle.client._models import (
    Asset,
    Batch,
    CameraPrompt,
    Health,
    Job,
    JobEvent,
    JobPage,
    Model,
    OutputAsset,
    WebhookSecret,
    _CameraPromptList,
    _ModelList,
)
from reangle.client._sse import SSEDecoder, decode_job_event


class AsyncClient:
    """A reangle server, asynchronously; see `Client` for the arguments and each method.

    `on_progress` callbacks may be plain functions or coroutine functions (their result is awaited).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 60,
        transport: httpx.AsyncBaseTransport | None = None,
        poll_interval: float = 1.0,
    ) -> None:
        self.base_url = server_root(base_url)
        self._auth = auth_headers(api_key)
        self._timeout = timeout
        self._poll_interval = poll_interval
        self._input_schemas: dict[str, dict[str, Any]] = {}
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout, transport=transport, headers={"User-Agent": USER_AGENT}
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    # assets

    async def upload(self, file: FileInput) -> Asset:
        name, content, mime = upload_file(file)
        return parse(await self._send("POST", "/v1/assets", files={"file": (name, content, mime)}), Asset)

    async def upload_url(self, url: str) -> Asset:
        return parse(await self._send("POST", "/v1/assets", json={"url": url}), Asset)

    async def get_asset(self, asset_id: str) -> Asset:
        return parse(await self._send("GET", api_path("v1", "assets", asset_id)), Asset)

    async def download(
        self, asset: Asset | OutputAsset | str, path: str | os.PathLike[str] | None = None
    ) -> bytes:
        """The file behind a signed URL (no API key is sent with it), also written to `path` when given; an
        Asset whose link was refused (403: it expired) gets a fresh one (`get_asset`), tried once."""
        url = asset if isinstance(asset, str) else asset.url
        try:
            content = await self._get_file(url)
        except PermissionDeniedError:
            if isinstance(asset, str):
                raise
            # the link expired (or was signed with another key): sign a fresh one, once
            content = await self._get_file((await self.get_asset(asset.id)).url)
        if path is not None:
            Path(path).write_bytes(content)
        return content

    # jobs

    async def submit(
        self,
        model: str,
        input: Mapping[str, Any],
        *,
        kind: str = "edit",
        priority: int | None = None,
        idempotency_key: str | None = None,
        webhook_url: str | None = None,
        webhook_events: Sequence[str] | None = None,
        time_limits: TimeLimitsInput | None = None,
    ) -> Job:
        """See `Client.submit`."""
        fields = submission_fields(
            webhook_url=webhook_url, webhook_events=webhook_events, time_limits=time_limits
        )
        return await self._submit(
            model, input, kind=kind, priority=priority, idempotency_key=idempotency_key, fields=fields
        )

    async def get(self, job_id: str) -> Job:
        return parse(await self._send("GET", api_path("v1", "jobs", job_id)), Job)

    async def list(
        self, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> JobPage:
        params = query(status=status, limit=limit, cursor=cursor)
        return parse(await self._send("GET", "/v1/jobs", params=params), JobPage)

    async def iter_jobs(
        self, status: str | None = None, *, page_size: int | None = None
    ) -> AsyncIterator[Job]:
        cursor = None
        while True:
            page = await self.list(status=status, limit=page_size, cursor=cursor)
            for job in page.data:
                yield job
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def cancel(self, job_id: str) -> Job:
        return parse(await self._send("POST", api_path("v1", "jobs", job_id, "cancel")), Job)

    async def events(self, job_id: str) -> AsyncIterator[JobEvent]:
        """See `Client.events`."""
        state = WaitState(job_id, None, self._poll_interval)
        while True:
            stream = self._stream(job_id, httpx.Timeout(self._timeout, read=None))
            try:
                async for event in stream:
                    state.poll_succeeded()
                    yield event
                    if isinstance(event, Job) and event.is_terminal:
                        return
            except RateLimitError:  # too_many_streams: the key holds all the streams it may
                break
            except (APIConnectionError, ServerError) as exc:
                state.poll_failed(exc)
            finally:
                await stream.aclose()
            await asyncio.sleep(state.poll_delay())
        async for event in self._poll_events(state):
            yield event

    async def wait(
        self, job_id: str, *, timeout: float | None = None, on_progress: ProgressCallback | None = None
    ) -> Job:
        state = WaitState(job_id, timeout, self._poll_interval)
        while True:
            if state.use_stream and (job := await self._follow(state, on_progress)) is not None:
                return job
            job = await self._poll(state, on_progress)
            if job is not None and job.is_terminal:
                return job
            state.check_deadline()
            await asyncio.sleep(state.poll_delay())

    async def edit(
        self,
        images: ImageInput | Sequence[ImageInput],
        *,
        prompt: str = "",
        horizontal_angle: float | None = None,
        vertical_angle: float | None = None,
        zoom: float | None = None,
        azimuth: float | None = None,
        elevation: float | None = None,
        distance: float | None = None,
        model: str = CAMERA_MODEL,
        seed: int | None = None,
        num_outputs: int | None = None,
        rewrite_prompt: bool | None = None,
        loras: Sequence[LoraInput] | None = None,
        priority: int | None = None,
        idempotency_key: str | None = None,
        webhook_url: str | None = None,
        webhook_events: Sequence[str] | None = None,
        time_limits: TimeLimitsInput | None = None,
        wait: bool = True,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        **options: Any,
    ) -> Job:
        camera = {
            "horizontal_angle": horizontal_angle,
            "vertical_angle": vertical_angle,
            "zoom": zoom,
            "azimuth": azimuth,
            "elevation": elevation,
            "distance": distance,
        }
        extras = prompt_extras(rewrite_prompt=rewrite_prompt, loras=loras)
        options = {"seed": seed, "num_outputs": num_outputs, **extras, **options}
        check_finite({**camera, **options}, "input")  # before any upload
        fields = submission_fields(
            webhook_url=webhook_url, webhook_events=webhook_events, time_limits=time_limits
        )
        refs = await self._image_refs(as_image_list(images))
        body = edit_input(refs, prompt=prompt, camera=camera, options=options)
        job = await self._submit(
            model, body, kind="edit", priority=priority, idempotency_key=idempotency_key, fields=fields
        )
        return await self._finish(job, wait=wait, timeout=timeout, on_progress=on_progress)

    async def orbit(
        self,
        image: ImageInput,
        *,
        azimuths: Sequence[float] | None = None,
        elevation: float | None = None,
        distance: float | None = None,
        poses: Sequence[Mapping[str, float]] | None = None,
        prompt: str = "",
        model: str = CAMERA_MODEL,
        seed: int | None = None,
        rewrite_prompt: bool | None = None,
        loras: Sequence[LoraInput] | None = None,
        priority: int | None = None,
        idempotency_key: str | None = None,
        webhook_url: str | None = None,
        webhook_events: Sequence[str] | None = None,
        time_limits: TimeLimitsInput | None = None,
        wait: bool = True,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        **options: Any,
    ) -> Job:
        options = {"seed": seed, **prompt_extras(rewrite_prompt=rewrite_prompt, loras=loras), **options}
        path = {"azimuths": azimuths, "elevation": elevation, "distance": distance, "poses": poses}
        check_finite({**path, **options}, "input")  # before any upload
        fields = submission_fields(
            webhook_url=webhook_url, webhook_events=webhook_events, time_limits=time_limits
        )
        (ref,) = await self._image_refs([image])
        body = orbit_input(
            ref,
            azimuths=azimuths,
            elevation=elevation,
            distance=distance,
            poses=poses,
            prompt=prompt,
            options=options,
        )
        job = await self._submit(
            model, body, kind="orbit", priority=priority, idempotency_key=idempotency_key, fields=fields
        )
        return await self._finish(job, wait=wait, timeout=timeout, on_progress=on_progress)

    async def generate(
        self,
        prompt: str,
        *,
        model: str = TEXT_TO_IMAGE_MODEL,
        images: ImageInput | Sequence[ImageInput] | None = None,
        size: str | None = None,
        num_outputs: int | None = None,
        seed: int | None = None,
        negative_prompt: str | None = None,
        image_set: bool | None = None,
        set_prompts: Sequence[str] | None = None,
        rewrite_prompt: bool | None = None,
        loras: Sequence[LoraInput] | None = None,
        priority: int | None = None,
        idempotency_key: str | None = None,
        webhook_url: str | None = None,
        webhook_events: Sequence[str] | None = None,
        time_limits: TimeLimitsInput | None = None,
        wait: bool = True,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        **options: Any,
    ) -> Job:
        """See `Client.generate`."""
        check_set_prompts(set_prompts, num_outputs=num_outputs, image_set=image_set)
        wants_set = image_set is not None or set_prompts is not None
        schema = await self.input_schema(model) if wants_set else {}
        set_fields = image_set_fields(model, schema, image_set=image_set, set_prompts=set_prompts)
        check_finite(options, "input")  # before any upload
        fields = submission_fields(
            webhook_url=webhook_url, webhook_events=webhook_events, time_limits=time_limits
        )
        refs = None if images is None else await self._image_refs(as_image_list(images))
        extras = prompt_extras(rewrite_prompt=rewrite_prompt, loras=loras)
        body = generate_input(
            prompt,
            images=refs,
            size=size,
            num_outputs=num_outputs,
            seed=seed,
            negative_prompt=negative_prompt,
            set_fields=set_fields,
            options={**extras, **options},
        )
        job = await self._submit(
            model, body, kind="edit", priority=priority, idempotency_key=idempotency_key, fields=fields
        )
        return await self._finish(job, wait=wait, timeout=timeout, on_progress=on_progress)

    # batches

    async def batch(
        self,
        model: str,
        inputs: Sequence[Mapping[str, Any]],
        *,
        webhook_url: str | None = None,
        webhook_events: Sequence[str] | None = None,
        time_limits: TimeLimitsInput | None = None,
    ) -> Batch:
        """See `Client.batch`."""
        for index, item in enumerate(inputs):
            check_finite(item, f"items.{index}.input")
        fields = submission_fields(
            webhook_url=webhook_url, webhook_events=webhook_events, time_limits=time_limits
        )
        items = with_image_refs(inputs, await self._image_refs(batch_images(inputs)))
        body = {"model": model, "items": [{"input": item} for item in items], **fields}
        return parse(await self._send("POST", "/v1/batches", json=body), Batch)

    async def get_batch(self, batch_id: str) -> Batch:
        return parse(await self._send("GET", api_path("v1", "batches", batch_id)), Batch)

    # the server

    async def models(self) -> builtins.list[Model]:
        return parse(await self._send("GET", "/v1/models"), _ModelList).data

    async def get_model(self, model_id: str) -> Model:
        return parse(await self._send("GET", api_path("v1", "models", model_id)), Model)

    async def input_schema(self, model_id: str) -> dict[str, Any]:
        """See `Client.input_schema`."""
        if model_id not in self._input_schemas:
            self._input_schemas[model_id] = (await self.get_model(model_id)).input_schema
        return self._input_schemas[model_id]

    async def poses(self) -> builtins.list[CameraPrompt]:
        return parse(await self._send("GET", "/v1/poses"), _CameraPromptList).data

    async def health(self) -> Health:
        return parse(await self._send("GET", "/healthz"), Health)

    async def webhook_secret(self) -> WebhookSecret:
        """See `Client.webhook_secret`."""
        return parse(await self._send("GET", "/v1/webhook-secret"), WebhookSecret)

    # plumbing

    async def _submit(
        self,
        model: str,
        input: Mapping[str, Any],
        *,
        kind: str,
        priority: int | None,
        idempotency_key: str | None,
        fields: Mapping[str, Any],
    ) -> Job:
        body = job_body(model, input, kind=kind, priority=priority, fields=fields)
        headers = idempotency_headers(idempotency_key)
        return parse(await self._send("POST", "/v1/jobs", json=body, headers=headers), Job)

    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = self._auth | kwargs.pop("headers", {})
        try:
            response = await self._http.request(method, url, headers=headers, **kwargs)
            return check_api(response, has_key=bool(self._auth))
        except httpx.TransportError as exc:
            raise connection_error(exc) from exc

    async def _get_file(self, url: str) -> bytes:
        try:
            response = await self._http.get(url, follow_redirects=True)
        except httpx.TransportError as exc:
            raise connection_error(exc) from exc
        return check(response).content

    async def _image_refs(self, images: Sequence[ImageInput]) -> builtins.list[str]:
        """The references the API takes: local files uploaded, once every image was checked (a missing file
        fails before anything is sent)."""
        files = [file_to_upload(image) for image in images]
        refs = []
        for image, file in zip(images, files, strict=True):
            refs.append(reference(image) if file is None else (await self.upload(file)).id)
        return refs

    async def _finish(
        self, job: Job, *, wait: bool, timeout: float | None, on_progress: ProgressCallback | None
    ) -> Job:
        if not wait:
            return job
        if not job.is_terminal:
            job = await self.wait(job.id, timeout=timeout, on_progress=on_progress)
        return job.raise_for_status()

    async def _stream(
        self, job_id: str, timeout: httpx.Timeout, tick: Callable[[], None] | None = None
    ) -> AsyncGenerator[JobEvent, None]:
        headers = self._auth | {"Accept": "text/event-stream"}
        url = api_path("v1", "jobs", job_id, "events")
        request = self._http.build_request("GET", url, headers=headers, timeout=timeout)
        try:
            response = await self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise connection_error(exc) from exc
        try:
            if not response.is_success:
                await response.aread()
                check_api(response, has_key=bool(self._auth))  # raises: the answer is an error
            decoder = SSEDecoder()
            async for line in response.aiter_lines():
                if tick is not None:
                    tick()
                sse = decoder.feed(line)
                event = decode_job_event(sse) if sse else None
                if event is not None:
                    yield event
        except httpx.TransportError as exc:
            raise connection_error(exc) from exc
        finally:
            await response.aclose()

    async def _follow(self, state: WaitState, on_progress: ProgressCallback | None) -> Job | None:
        events = 0
        stream = _until_broken(
            self._stream(state.job_id, state.stream_timeout(self._timeout), state.check_deadline), state
        )
        try:
            async for event in stream:
                events += 1
                await _report(on_progress, event)
                if isinstance(event, Job):
                    state.seen(event)
                    if event.is_terminal:
                        return event
        finally:
            await stream.aclose()
        state.stream_ended(events)
        return None

    async def _poll_events(self, state: WaitState) -> AsyncIterator[JobEvent]:
        while True:
            before = state.job
            if (job := await self._poll(state, None)) is not None:
                for event in polled_events(before, job):
                    yield event
                if job.is_terminal:
                    return
            await asyncio.sleep(state.poll_delay())

    async def _poll(self, state: WaitState, on_progress: ProgressCallback | None) -> Job | None:
        try:
            job = await self.get(state.job_id)
        except (APIConnectionError, ServerError) as exc:
            state.poll_failed(exc)
            return None
        state.poll_succeeded()
        if state.seen(job):
            await _report(on_progress, job)
        return job


async def _until_broken(
    events: AsyncGenerator[JobEvent, None], state: WaitState
) -> AsyncGenerator[JobEvent, None]:
    """The events until the stream breaks; errors raised by whoever consumes them still propagate."""
    try:
        async for event in events:
            yield event
    except RateLimitError:  # too_many_streams
        state.streams_refused()
    except STREAM_BREAKS:
        return
    finally:
        await events.aclose()


async def _report(on_progress: ProgressCallback | None, event: JobEvent) -> None:
    if on_progress is not None:
        result = on_progress(event)
        if inspect.isawaitable(result):
            await result


def _documented_as_the_sync_client() -> None:
    """Each public method says what `Client`'s twin says (`help(AsyncClient.edit)`): the two are kept method
    for method, and the words are written once, on `Client`."""
    for name, method in vars(AsyncClient).items():
        twin = getattr(Client, name, None)
        if not name.startswith("_") and callable(method) and twin is not None and twin.__doc__:
            method.__doc__ = twin.__doc__


_documented_as_the_sync_client()
