"""`Client`: the native reangle API (/v1) over httpx, one method per endpoint, plus the `edit` and `orbit`
helpers that upload, submit and wait. `AsyncClient` (in _async_client.py) has the same methods as coroutines.
"""

from __future__ import annotations

import builtins
import os
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import closing
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


class Client:
    """A reangle server. `base_url` is its root (http://host:8000); `api_key` is sent as a Bearer token,
    blanks around it dropped (`InvalidAPIKeyError` for a key that holds a character a header cannot carry).

    `timeout` bounds each HTTP request (seconds); how long a call waits for its job is the call's own
    `timeout` (None: until the job ends). `transport` replaces httpx's network transport (tests pass an
    `httpx.MockTransport`). `poll_interval` is how often `wait` asks for the job when the event stream is not
    available.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 60,
        transport: httpx.BaseTransport | None = None,
        poll_interval: float = 1.0,
    ) -> None:
        self.base_url = server_root(base_url)
        self._auth = auth_headers(api_key)
        self._timeout = timeout
        self._poll_interval = poll_interval
        self._input_schemas: dict[str, dict[str, Any]] = {}
        self._http = httpx.Client(
            base_url=self.base_url, timeout=timeout, transport=transport, headers={"User-Agent": USER_AGENT}
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections to the server (leaving a `with` block does): the client is not used after."""
        self._http.close()

    # assets

    def upload(self, file: FileInput) -> Asset:
        """Upload an image (a local path or its bytes) as a multipart form."""
        name, content, mime = upload_file(file)
        return parse(self._send("POST", "/v1/assets", files={"file": (name, content, mime)}), Asset)

    def upload_url(self, url: str) -> Asset:
        """Have the server fetch an image from an http(s) URL and keep it as an asset."""
        return parse(self._send("POST", "/v1/assets", json={"url": url}), Asset)

    def get_asset(self, asset_id: str) -> Asset:
        """The asset, with a freshly signed URL."""
        return parse(self._send("GET", api_path("v1", "assets", asset_id)), Asset)

    def download(self, asset: Asset | OutputAsset | str, path: str | os.PathLike[str] | None = None) -> bytes:
        """The file behind a signed URL (or an asset's URL), also written to `path` when given.

        The URL is signed, so no API key is sent with it. When an Asset's link was refused (403: it expired),
        a fresh one is asked for (`get_asset`) and tried once.
        """
        url = asset if isinstance(asset, str) else asset.url
        try:
            content = self._get_file(url)
        except PermissionDeniedError:
            if isinstance(asset, str):
                raise
            # the link expired (or was signed with another key): sign a fresh one, once
            content = self._get_file(self.get_asset(asset.id).url)
        if path is not None:
            Path(path).write_bytes(content)
        return content

    # jobs

    def submit(
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
        """Queue a job; returns at once with the job as queued. Resending an `idempotency_key` returns the
        job first created with it instead of a new one.

        `webhook_url` has the server POST the job there (signed: see `webhook_secret`) when it ends, or also
        at each status change and progress with `webhook_events=["completed", "progress"]`. `time_limits`
        (`TimeLimits(run_s=..., total_s=...)` or a mapping with those keys, in seconds) ends the job failed,
        code "timed_out", once it runs or lives longer; ValueError, before anything is sent, for a limit that
        is not a positive, finite number. None leaves each out.
        """
        fields = submission_fields(
            webhook_url=webhook_url, webhook_events=webhook_events, time_limits=time_limits
        )
        return self._submit(
            model, input, kind=kind, priority=priority, idempotency_key=idempotency_key, fields=fields
        )

    def get(self, job_id: str) -> Job:
        """The job as it is now (`NotFoundError` for an unknown id, or another key's)."""
        return parse(self._send("GET", api_path("v1", "jobs", job_id)), Job)

    def list(self, status: str | None = None, limit: int | None = None, cursor: str | None = None) -> JobPage:
        """One page of this key's jobs, newest first; see `iter_jobs` to walk all of them."""
        params = query(status=status, limit=limit, cursor=cursor)
        return parse(self._send("GET", "/v1/jobs", params=params), JobPage)

    def iter_jobs(self, status: str | None = None, *, page_size: int | None = None) -> Iterator[Job]:
        """Every job (with this status), following the pages' cursors."""
        cursor = None
        while True:
            page = self.list(status=status, limit=page_size, cursor=cursor)
            yield from page.data
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def cancel(self, job_id: str) -> Job:
        """Cancel a job: at once while queued, at the next step while it runs. Returns the job as it is then
        (processing, until its next step), or as it is when it was canceled already; `ConflictError` when it
        ended otherwise (succeeded or failed)."""
        return parse(self._send("POST", api_path("v1", "jobs", job_id, "cancel")), Job)

    def events(self, job_id: str) -> Iterator[JobEvent]:
        """The job's events as they happen (a `Job` per status change, a `ProgressEvent` per step), until it
        ends. The first is always the job as it is now. A stream that ends or breaks before the job does (a
        server restarting) is opened again, and starts again with the job as it is then; a server away (no
        connection, 5xx) for 10 minutes raises its error. When the key holds as many event streams as the
        server allows (429), the job is polled instead: the same events, without steps, at `poll_interval`."""
        state = WaitState(job_id, None, self._poll_interval)
        while True:
            try:
                with closing(self._stream(job_id, httpx.Timeout(self._timeout, read=None))) as stream:
                    for event in stream:
                        state.poll_succeeded()
                        yield event
                        if isinstance(event, Job) and event.is_terminal:
                            return
            except RateLimitError:  # too_many_streams: the key holds all the streams it may
                break
            except (APIConnectionError, ServerError) as exc:
                state.poll_failed(exc)
            time.sleep(state.poll_delay())
        yield from self._poll_events(state)

    def wait(
        self, job_id: str, *, timeout: float | None = None, on_progress: ProgressCallback | None = None
    ) -> Job:
        """Block until the job ends and return it, whatever its final status.

        Follows the event stream, calling `on_progress` with each event. When the stream breaks, it asks for
        the job and goes on; without a stream, or when the key holds as many event streams as the server
        allows (429), it polls. A server away (restarting) is waited for, for up to 10 minutes; then its
        error is raised. Raises `WaitTimeout` after `timeout` seconds, leaving the job running.
        """
        state = WaitState(job_id, timeout, self._poll_interval)
        while True:
            if state.use_stream and (job := self._follow(state, on_progress)) is not None:
                return job
            job = self._poll(state, on_progress)
            if job is not None and job.is_terminal:
                return job
            state.check_deadline()
            time.sleep(state.poll_delay())

    def edit(
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
        """Edit 1-3 images: the camera fields move the camera, `prompt` adds an instruction.

        Each camera axis takes one field of a pair (both is a BadRequestError), and lands on one of the
        model's 96 poses (docs/camera.md): `horizontal_angle` or `azimuth` (degrees, any value; clockwise
        seen from above, 90 is the subject's right side; snapped to 0, 45, ..., 315), `vertical_angle` or
        `elevation` (degrees, -90..90; snapped to -30, 0, 30, 60), `zoom` (0 wide shot .. 10 close-up) or
        `distance` (a factor: 0.6 close-up, 1.0 medium shot, 1.8 wide shot). An axis given by neither keeps
        the model's default: a front view, at eye level, a medium shot, unless its catalog entry says
        otherwise.

        Local paths, bytes and PIL images (as PNG) are uploaded first; asset ids, http(s) URLs, data URLs
        and base64 are passed on. FileNotFoundError, before anything is sent, for a string that is none of
        these and no local file. `rewrite_prompt` has a vision-language model that sees the images make your
        words precise first (never the camera phrase; `job.rewrite` says what it made of them; False is sent
        as False, None leaves the model's default); `loras` adds LoRAs of your own on top of the model's
        (`Lora(url=..., scale=...)`, or mappings with one of url, path, id and a scale). Other input fields
        (`acceleration`, `num_inference_steps`, `output_format`, ...) go in `options`. `webhook_url`,
        `webhook_events` and `time_limits` are the job's, as for `submit` (`timeout` is how long this call
        waits; `time_limits` how long the server lets the job take). With `wait`, returns the finished job
        or raises `JobFailed` / `JobCanceled` (a job past its time limits fails, code "timed_out").
        """
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
        refs = self._image_refs(as_image_list(images))
        body = edit_input(refs, prompt=prompt, camera=camera, options=options)
        job = self._submit(
            model, body, kind="edit", priority=priority, idempotency_key=idempotency_key, fields=fields
        )
        return self._finish(job, wait=wait, timeout=timeout, on_progress=on_progress)

    def orbit(
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
        """One image seen from each azimuth (default: the 8 views) at one elevation (default 0) and distance
        (default 1.0), or from each of `poses` in order (a path: mappings with the camera edit's fields, e.g.
        `{"azimuth": 90, "elevation": 30}` or `{"horizontal_angle": 45, "zoom": 8}`), plus a turntable and a
        contact sheet. Outputs have role "view" (with a `pose`), "turntable", "contact_sheet".
        `rewrite_prompt`, `loras`, the webhook and `time_limits` as for `edit`.
        """
        options = {"seed": seed, **prompt_extras(rewrite_prompt=rewrite_prompt, loras=loras), **options}
        path = {"azimuths": azimuths, "elevation": elevation, "distance": distance, "poses": poses}
        check_finite({**path, **options}, "input")  # before any upload
        fields = submission_fields(
            webhook_url=webhook_url, webhook_events=webhook_events, time_limits=time_limits
        )
        (ref,) = self._image_refs([image])
        body = orbit_input(
            ref,
            azimuths=azimuths,
            elevation=elevation,
            distance=distance,
            poses=poses,
            prompt=prompt,
            options=options,
        )
        job = self._submit(
            model, body, kind="orbit", priority=priority, idempotency_key=idempotency_key, fields=fields
        )
        return self._finish(job, wait=wait, timeout=timeout, on_progress=on_progress)

    def generate(
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
        """Images from a prompt (text-to-image, `qwen-image-2512` by default).

        `size` is "1K", "2K" or "WxH"; `num_outputs` how many images (the server's default: 1). `image_set`
        makes a coherent set of one subject instead of independent images: `num_outputs` shots, or one per
        entry of `set_prompts` (what each image adds to the prompt; giving them implies `image_set`, and a
        `num_outputs` given beside them must equal their number: ValueError before anything is sent).
        `image_set` is sent in the field the model's input schema names (`image_set`, or Wan 2.7's
        `image_set_mode`; read once per client with `input_schema`); ValueError when the model makes no
        image sets. Booleans given as False are sent as False (a model's default may be True); None leaves
        the server's default. `negative_prompt` works with true CFG only (`guidance_scale` above 1, or
        `acceleration="none"`). `rewrite_prompt` has a vision-language model make the prompt precise first
        (`job.rewrite` says what it made of it); `loras` adds LoRAs of your own (`Lora(url=..., scale=...)`
        or mappings).

        `model="wan-2.7-image"` runs Wan 2.7 through the server's DashScope key: `images` (0-9, uploaded
        first when local) turns it into an edit of those, and `thinking_mode=False` (in `options`) turns its
        planning off. Other input fields (`aspect_ratio`, `acceleration`, `output_format`, ...) go in
        `options`. The webhook and `time_limits` as for `edit`. With `wait`, returns the finished job or
        raises `JobFailed` / `JobCanceled`.
        """
        check_set_prompts(set_prompts, num_outputs=num_outputs, image_set=image_set)
        wants_set = image_set is not None or set_prompts is not None
        schema = self.input_schema(model) if wants_set else {}
        set_fields = image_set_fields(model, schema, image_set=image_set, set_prompts=set_prompts)
        check_finite(options, "input")  # before any upload
        fields = submission_fields(
            webhook_url=webhook_url, webhook_events=webhook_events, time_limits=time_limits
        )
        refs = None if images is None else self._image_refs(as_image_list(images))
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
        job = self._submit(
            model, body, kind="edit", priority=priority, idempotency_key=idempotency_key, fields=fields
        )
        return self._finish(job, wait=wait, timeout=timeout, on_progress=on_progress)

    # batches

    def batch(
        self,
        model: str,
        inputs: Sequence[Mapping[str, Any]],
        *,
        webhook_url: str | None = None,
        webhook_events: Sequence[str] | None = None,
        time_limits: TimeLimitsInput | None = None,
    ) -> Batch:
        """Queue one edit job per input and return the batch at once (follow it with `get_batch`, or `wait` on
        each job). An input's `images` take what `edit` takes: local paths, bytes and PIL images are uploaded
        first (every file checked before anything is sent). The webhook and time limits (as for `submit`) are
        every job's: each job's events are sent on their own."""
        for index, item in enumerate(inputs):
            check_finite(item, f"items.{index}.input")
        fields = submission_fields(
            webhook_url=webhook_url, webhook_events=webhook_events, time_limits=time_limits
        )
        items = with_image_refs(inputs, self._image_refs(batch_images(inputs)))
        body = {"model": model, "items": [{"input": item} for item in items], **fields}
        return parse(self._send("POST", "/v1/batches", json=body), Batch)

    def get_batch(self, batch_id: str) -> Batch:
        """The batch with each of its jobs as it is now."""
        return parse(self._send("GET", api_path("v1", "batches", batch_id)), Batch)

    # the server

    def models(self) -> builtins.list[Model]:
        """The models the server runs, each with its input JSON Schema."""
        return parse(self._send("GET", "/v1/models"), _ModelList).data

    def get_model(self, model_id: str) -> Model:
        """One model the server runs, with its input JSON Schema."""
        return parse(self._send("GET", api_path("v1", "models", model_id)), Model)

    def input_schema(self, model_id: str) -> dict[str, Any]:
        """The JSON Schema of the model's input (its `get_model` description), asked once per client and kept:
        `generate` reads from it what the model calls its image-set fields."""
        if model_id not in self._input_schemas:
            self._input_schemas[model_id] = self.get_model(model_id).input_schema
        return self._input_schemas[model_id]

    def poses(self) -> builtins.list[CameraPrompt]:
        """The camera poses the Multiple-Angles LoRA knows, with their prompts."""
        return parse(self._send("GET", "/v1/poses"), _CameraPromptList).data

    def health(self) -> Health:
        """The server's health: engine, device, queue depth, workers (`/healthz`; no key needed)."""
        return parse(self._send("GET", "/healthz"), Health)

    def webhook_secret(self) -> WebhookSecret:
        """The secret (`whsec_...`) this key's webhooks are signed with, to verify them (Standard Webhooks),
        and during the 24 h after a rotation the one it replaced (`previous`)."""
        return parse(self._send("GET", "/v1/webhook-secret"), WebhookSecret)

    # plumbing

    def _submit(
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
        return parse(self._send("POST", "/v1/jobs", json=body, headers=headers), Job)

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = self._auth | kwargs.pop("headers", {})
        try:
            return check_api(
                self._http.request(method, url, headers=headers, **kwargs), has_key=bool(self._auth)
            )
        except httpx.TransportError as exc:
            raise connection_error(exc) from exc

    def _get_file(self, url: str) -> bytes:
        try:
            response = self._http.get(url, follow_redirects=True)
        except httpx.TransportError as exc:
            raise connection_error(exc) from exc
        return check(response).content

    def _image_refs(self, images: Sequence[ImageInput]) -> builtins.list[str]:
        """The references the API takes: local files uploaded, once every image was checked (a missing file
        fails before anything is sent)."""
        files = [file_to_upload(image) for image in images]
        refs = []
        for image, file in zip(images, files, strict=True):
            refs.append(reference(image) if file is None else self.upload(file).id)
        return refs

    def _finish(
        self, job: Job, *, wait: bool, timeout: float | None, on_progress: ProgressCallback | None
    ) -> Job:
        if not wait:
            return job
        if not job.is_terminal:
            job = self.wait(job.id, timeout=timeout, on_progress=on_progress)
        return job.raise_for_status()

    def _stream(
        self, job_id: str, timeout: httpx.Timeout, tick: Callable[[], None] | None = None
    ) -> Generator[JobEvent, None, None]:
        """The job's typed events; `tick` runs at each line (for deadlines). Unknown events are skipped."""
        headers = self._auth | {"Accept": "text/event-stream"}
        url = api_path("v1", "jobs", job_id, "events")
        request = self._http.build_request("GET", url, headers=headers, timeout=timeout)
        try:
            response = self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise connection_error(exc) from exc
        try:
            if not response.is_success:
                response.read()
                check_api(response, has_key=bool(self._auth))  # raises: the answer is an error
            decoder = SSEDecoder()
            for line in response.iter_lines():
                if tick is not None:
                    tick()
                sse = decoder.feed(line)
                event = decode_job_event(sse) if sse else None
                if event is not None:
                    yield event
        except httpx.TransportError as exc:
            raise connection_error(exc) from exc
        finally:
            response.close()

    def _follow(self, state: WaitState, on_progress: ProgressCallback | None) -> Job | None:
        """Follow the event stream until the job ends (its final state) or the stream ends or breaks."""
        events = 0
        stream = self._stream(state.job_id, state.stream_timeout(self._timeout), state.check_deadline)
        with closing(_until_broken(stream, state)) as events_until_broken:
            for event in events_until_broken:
                events += 1
                if on_progress is not None:
                    on_progress(event)
                if isinstance(event, Job):
                    state.seen(event)
                    if event.is_terminal:
                        return event
        state.stream_ended(events)
        return None

    def _poll_events(self, state: WaitState) -> Iterator[JobEvent]:
        while True:
            before = state.job
            if (job := self._poll(state, None)) is not None:
                yield from polled_events(before, job)
                if job.is_terminal:
                    return
            time.sleep(state.poll_delay())

    def _poll(self, state: WaitState, on_progress: ProgressCallback | None) -> Job | None:
        try:
            job = self.get(state.job_id)
        except (APIConnectionError, ServerError) as exc:
            state.poll_failed(exc)
            return None
        state.poll_succeeded()
        if state.seen(job) and on_progress is not None:
            on_progress(job)
        return job


def _until_broken(events: Iterator[JobEvent], state: WaitState) -> Generator[JobEvent, None, None]:
    """The events until the stream breaks; errors raised by whoever consumes them still propagate."""
    try:
        yield from events
    except RateLimitError:  # too_many_streams
        state.streams_refused()
    except STREAM_BREAKS:
        return
