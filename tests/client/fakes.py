"""FakeServer: a fake of the reangle HTTP API for the SDK and CLI tests. It is NOT the real server.

It keeps jobs and assets in memory and answers through `httpx.MockTransport`, implementing just enough of the
documented /v1 API (auth, errors, assets, jobs, events, batches, models, poses, health, webhook secret). Jobs
never run: a job moves one step each time its event stream is read further (or, with `advance_on_get`, at each
GET), and ends as `outcome` says. Signed download URLs point at a separate fake host that wants no API key.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from reangle.catalog import entry_inputs
from reangle.core.jobs import JobKind
from reangle.core.models import TASK_INPUTS, shipped_catalog

API = "http://reangle.test"
FILES_HOST = "files.reangle.test"
API_KEY = "sk-test"
WEBHOOK_SECRET = "whsec_ZmFrZSBzZWNyZXQ="
TERMINAL = ("succeeded", "failed", "canceled")
#: The models the fake accepts: the camera and instruction editors, text-to-image and Wan 2.7 image.
MODELS = ("qwen-edit-multiangle-2511", "qwen-image-edit-2511", "qwen-image-2512", "wan-2.7-image")
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class EventStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body produced lazily, readable by both the sync and the async client."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self._chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk


def error(status: int, code: str, message: str, hint: str | None = None, **headers: str) -> httpx.Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if hint:
        body["hint"] = hint
    return httpx.Response(status, json={"error": body}, headers=headers)


class FakeServer:
    """A fake reangle server (in memory, through httpx.MockTransport); see the module docstring.

    Knobs the tests turn:
    - `outcome`: how new jobs end: "succeeded", "failed", "canceled", or "never" (they stay queued).
    - `stream_mode`: "ok"; "break" (the stream fails with a read error after one step); "missing" (404, as
      a server without event streams); "heartbeat" (after the first event, only keep-alive comments, forever);
      "close" (the stream ends after the first event); "interrupt" (Ctrl-C arrives while the client reads);
      "too_many" (429 too_many_streams, as for a key that holds its most event streams).
    - `advance_on_get`: each GET of a job moves it one step.
    - `failing_gets`: that many GETs of a job are answered 503 first (a restarting server).
    - `failing_streams`: that many event stream requests are answered 503 first.
    - `refusal`: when set, every job submission is answered 422 invalid_input with this message (as the
      real server refuses a field: "input.num_outputs: ...").
    - `job_error`: the message of jobs that end "failed".
    - `check_uploads`: uploads that are not PNG, JPEG or WebP are refused 400, worded as the real server
      words it ("file is not an image ...").
    - `queue_full`: when set, every job submission is answered 429 with this many seconds in Retry-After.
    - `cancel_at_next_step`: canceling a processing job only asks for it (the answer still says
      processing), as the real server does for a job on the GPU.
    """

    def __init__(self, *, api_key: str | None = API_KEY, steps: int = 4) -> None:
        self.api_key = api_key
        self.steps = steps
        self.outcome = "succeeded"
        self.stream_mode = "ok"
        self.advance_on_get = False
        self.failing_gets = 0
        self.failing_streams = 0
        self.refusal: str | None = None
        self.job_error = "CUDA out of memory"
        self.check_uploads = False
        self.queue_full: int | None = None
        self.cancel_at_next_step = False
        self.requests: list[httpx.Request] = []
        self.assets: dict[str, dict[str, Any]] = {}
        self.blobs: dict[str, bytes] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, list[str]] = {}
        self._idempotency: dict[str, str] = {}
        self._ids = itertools.count(1)
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., httpx.Response]]] = [
            ("POST", re.compile(r"/v1/assets"), self._upload),
            ("GET", re.compile(r"/v1/assets/(?P<asset_id>[^/]+)"), self._get_asset),
            ("POST", re.compile(r"/v1/jobs"), self._submit),
            ("GET", re.compile(r"/v1/jobs"), self._list),
            ("GET", re.compile(r"/v1/jobs/(?P<job_id>[^/]+)"), self._get_job),
            ("POST", re.compile(r"/v1/jobs/(?P<job_id>[^/]+)/cancel"), self._cancel),
            ("GET", re.compile(r"/v1/jobs/(?P<job_id>[^/]+)/events"), self._events),
            ("POST", re.compile(r"/v1/batches"), self._submit_batch),
            ("GET", re.compile(r"/v1/batches/(?P<batch_id>[^/]+)"), self._get_batch),
            ("GET", re.compile(r"/v1/models"), self._models),
            ("GET", re.compile(r"/v1/models/(?P<model_id>[^/]+)"), self._get_model),
            ("GET", re.compile(r"/v1/poses"), self._poses),
            ("GET", re.compile(r"/healthz"), self._health),
            ("GET", re.compile(r"/v1/webhook-secret"), self._webhook_secret),
        ]

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def requests_to(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == path]

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.host == FILES_HOST:
            return self._download(request)
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return error(401, "unauthorized", "missing or unknown API key")
        for method, pattern, route in self._routes:
            match = pattern.fullmatch(request.url.path)
            if match and request.method == method:
                return route(request, **match.groupdict())
        return error(404, "not_found", f"no route {request.method} {request.url.path}")

    # assets

    def add_asset(self, content: bytes, mime_type: str = "image/png") -> dict[str, Any]:
        asset_id = f"asset_{next(self._ids)}"
        self.blobs[asset_id] = content
        self.assets[asset_id] = {
            "id": asset_id,
            "url": f"http://{FILES_HOST}/{asset_id}?sig=s3cr3t",
            "mime_type": mime_type,
            "width": 64,
            "height": 48,
            "bytes": len(content),
            "created_at": _time(len(self.assets)),
            "expires_at": _time(3600),
        }
        return self.assets[asset_id]

    def _upload(self, request: httpx.Request) -> httpx.Response:
        if request.headers["content-type"].startswith("multipart/form-data"):
            part = _multipart_file(request)
            if part is None:
                return error(400, "invalid_input", "no `file` field in the form")
            content, mime_type = part
            if self.check_uploads and not content.startswith((b"\x89PNG", b"\xff\xd8\xff", b"RIFF")):
                return error(400, "invalid_input", "file is not an image (expected PNG, JPEG or WebP)")
        else:
            body = json.loads(request.content)
            if "data" in body:
                content, mime_type = base64.b64decode(body["data"].split(",")[-1]), "image/png"
            else:
                content, mime_type = f"fetched {body['url']}".encode(), "image/jpeg"
        return httpx.Response(201, json=self.add_asset(content, mime_type))

    def _get_asset(self, _request: httpx.Request, asset_id: str) -> httpx.Response:
        if asset_id not in self.assets:
            return error(404, "not_found", f"no asset {asset_id}")
        return httpx.Response(200, json=self.assets[asset_id])

    def _download(self, request: httpx.Request) -> httpx.Response:
        asset_id = request.url.path.strip("/")
        if request.url.params.get("sig") != "s3cr3t" or asset_id not in self.blobs:
            return httpx.Response(403, text="bad signature")
        return httpx.Response(200, content=self.blobs[asset_id])

    # jobs

    def _submit(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        key = request.headers.get("idempotency-key")
        if key in self._idempotency:
            return httpx.Response(202, json=_public(self.jobs[self._idempotency[key]]))
        if body.get("model") not in MODELS:
            return error(404, "model_not_found", f"unknown model {body.get('model')!r}")
        if not isinstance(body.get("input"), dict):
            return error(422, "invalid_input", "input: field required")
        if self.refusal is not None:
            return error(422, "invalid_input", self.refusal)
        if self.queue_full is not None:
            return error(
                429,
                "queue_full",
                "the queue is full",
                f"retry in {self.queue_full} s",
                **{"Retry-After": str(self.queue_full)},
            )
        job = self.add_job(body["model"], body["input"], kind=body.get("kind", "edit"))
        job["priority"] = body.get("priority", 0)
        job["time_limits"] = _time_limits(body)
        if key:
            self._idempotency[key] = job["id"]
        return httpx.Response(202, json=_public(job))

    def add_job(self, model: str, input: dict[str, Any], *, kind: str = "edit") -> dict[str, Any]:
        job_id = f"job_{next(self._ids)}"
        self.jobs[job_id] = {
            "id": job_id,
            "model": model,
            "kind": kind,
            "status": "queued",
            "progress": 0.0,
            "attempt": 1,
            "priority": 0,
            "created_at": _time(len(self.jobs)),
            "started_at": None,
            "finished_at": None,
            "input": input,
            "output": None,
            "error": None,
            "timings": {},
            "batch_id": None,
            "a_field_from_the_future": {"kept": True},
            "_step": 0,
            "_outcome": self.outcome,
        }
        return self.jobs[job_id]

    def _get_job(self, _request: httpx.Request, job_id: str) -> httpx.Response:
        if self.failing_gets > 0:
            self.failing_gets -= 1
            return error(503, "unavailable", "the server is restarting")
        if job_id not in self.jobs:
            return error(404, "not_found", f"no job {job_id}")
        if self.advance_on_get:
            self.advance(self.jobs[job_id])
        return httpx.Response(200, json=_public(self.jobs[job_id]))

    def _list(self, request: httpx.Request) -> httpx.Response:
        status = request.url.params.get("status")
        jobs = [job for job in reversed(self.jobs.values()) if status in (None, job["status"])]
        start = int(request.url.params.get("cursor", "0"))
        limit = int(request.url.params.get("limit", "20"))
        page = jobs[start : start + limit]
        next_cursor = str(start + limit) if start + limit < len(jobs) else None
        return httpx.Response(200, json={"data": [_public(job) for job in page], "next_cursor": next_cursor})

    def _cancel(self, _request: httpx.Request, job_id: str) -> httpx.Response:
        if job_id not in self.jobs:
            return error(404, "not_found", f"no job {job_id}")
        job = self.jobs[job_id]
        if job["status"] == "processing" and self.cancel_at_next_step:
            return httpx.Response(200, json=_public(job))
        if job["status"] not in TERMINAL:
            job.update(status="canceled", finished_at=_time(60))
        return httpx.Response(200, json=_public(job))

    def advance(self, job: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """Move the job one step on; returns the events that step makes."""
        if job["status"] in TERMINAL or job["_outcome"] == "never":
            return []
        events: list[tuple[str, dict[str, Any]]] = []
        if job["status"] == "queued":
            job.update(status="processing", started_at=_time(10))
            events.append(("status", _public(job)))
        job["_step"] += 1
        job["progress"] = job["_step"] / self.steps
        events.append(("progress", {"progress": job["progress"], "step": job["_step"], "steps": self.steps}))
        if job["_step"] == self.steps:
            self._finish(job)
            events.append(("status", _public(job)))
        return events

    def _finish(self, job: dict[str, Any]) -> None:
        job.update(status=job["_outcome"], finished_at=_time(20), timings={"inference_s": 1.5})
        if job["_outcome"] == "failed":
            job["error"] = {
                "code": "engine_error",
                "message": self.job_error,
                "hint": "try a smaller size",
            }
        elif job["_outcome"] == "succeeded":
            job["output"] = {"assets": self._outputs(job)}

    def _outputs(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        def output(k: int, role: str, mime_type: str, **extra: Any) -> dict[str, Any]:
            asset = self.add_asset(f"{job['id']} {role} {k}".encode(), mime_type)
            keys = ("id", "url", "width", "height", "mime_type")
            return {key: asset[key] for key in keys} | {"seed": 7 + k, "role": role} | extra

        mime_type = "image/" + job["input"].get("output_format", "png")
        words = job["input"].get("prompt", "")
        rewrite = _fake_rewrite(words) if job["input"].get("rewrite_prompt") else None
        if rewrite is not None:
            words = rewrite["prompt"]
        camera = "<sks> " if job["model"] == "qwen-edit-multiangle-2511" else ""
        plan = {"prompt": camera + words, "steps": 4}  # a real server's, shortened
        if rewrite is not None:
            plan["rewrite"] = rewrite
        if job["kind"] != "orbit":
            count = len(job["input"].get("set_prompts") or []) or job["input"].get("num_outputs", 1)
            return [output(k, "image", mime_type, plan=plan) for k in range(count)]
        views = [
            output(k, "view", mime_type, pose=pose, plan=plan)
            for k, pose in enumerate(self._orbit_poses(job["input"]))
        ]
        return [*views, output(0, "turntable", "image/webp"), output(0, "contact_sheet", "image/png")]

    @staticmethod
    def _orbit_poses(orbit: dict[str, Any]) -> list[dict[str, Any]]:
        """The views' poses as a server reports them (unsnapped here: the fake does no camera math)."""
        if "poses" in orbit:
            return [
                {"azimuth_deg": p.get("azimuth", 0), "elevation_deg": p.get("elevation", 0), "distance": 1.0}
                for p in orbit["poses"]
            ]
        azimuths = orbit.get("azimuths", [0, 45, 90, 135, 180, 225, 270, 315])
        elevation, distance = orbit.get("elevation", 0), orbit.get("distance", 1.0)
        return [{"azimuth_deg": a, "elevation_deg": elevation, "distance": distance} for a in azimuths]

    def _events(self, _request: httpx.Request, job_id: str) -> httpx.Response:
        if self.failing_streams > 0:
            self.failing_streams -= 1
            return error(503, "unavailable", "the server is restarting")
        if self.stream_mode == "missing" or job_id not in self.jobs:
            return error(404, "not_found", f"no events for {job_id}")
        if self.stream_mode == "too_many":
            message = "this API key has 1 event streams open; each key may have 1"
            return error(429, "too_many_streams", message, "retry in 5 s", **{"Retry-After": "5"})
        headers = {"content-type": "text/event-stream"}
        return httpx.Response(200, headers=headers, stream=EventStream(self._event_chunks(self.jobs[job_id])))

    def _event_chunks(self, job: dict[str, Any]) -> Iterator[bytes]:
        yield _sse("status", _public(job))
        if self.stream_mode == "interrupt":
            raise KeyboardInterrupt
        if self.stream_mode == "heartbeat":
            while True:
                time.sleep(0.02)
                yield b": keep-alive\n\n"
        if self.stream_mode == "close":
            return
        while job["status"] not in TERMINAL and job["_outcome"] != "never":
            for name, data in self.advance(job):
                yield _sse(name, data)
            if self.stream_mode == "break":
                raise httpx.ReadError("connection reset by the fake")

    # batches and the rest

    def _submit_batch(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        batch_id = f"batch_{next(self._ids)}"
        jobs = [self.add_job(body["model"], item["input"]) for item in body["items"]]
        for job in jobs:
            job.update(batch_id=batch_id, time_limits=_time_limits(body))
        self.batches[batch_id] = [job["id"] for job in jobs]
        return httpx.Response(202, json={"id": batch_id, "jobs": [_public(job) for job in jobs]})

    def _get_batch(self, _request: httpx.Request, batch_id: str) -> httpx.Response:
        if batch_id not in self.batches:
            return error(404, "not_found", f"no batch {batch_id}")
        jobs = [_public(self.jobs[job_id]) for job_id in self.batches[batch_id]]
        return httpx.Response(200, json={"id": batch_id, "jobs": jobs})

    def _models(self, _request: httpx.Request) -> httpx.Response:
        schema = {"type": "object", "properties": {"images": {"type": "array"}}, "required": ["images"]}
        data = [{"id": "qwen-edit-multiangle-2511", "description": "camera edits", "input_schema": schema}]
        return httpx.Response(200, json={"data": data})

    def _get_model(self, _request: httpx.Request, model_id: str) -> httpx.Response:
        """A model of MODELS with the input schema the real server shows for it (the shipped catalog's)."""
        if model_id not in MODELS:
            return error(404, "not_found", f"no model {model_id}; see GET /v1/models")
        entry = shipped_catalog().get(model_id)
        assert entry is not None
        schema = entry_inputs(entry, TASK_INPUTS[entry.task])[JobKind.EDIT].model_json_schema()
        return httpx.Response(200, json={"id": model_id, "description": "", "input_schema": schema})

    def _poses(self, _request: httpx.Request) -> httpx.Response:
        pose = {
            "azimuth": "right side view",
            "azimuth_deg": 90,
            "elevation": "eye-level shot",
            "elevation_deg": 0,
            "distance": "medium shot",
            "prompt": "<sks> right side view eye-level shot medium shot",
        }
        return httpx.Response(200, json={"data": [pose]})

    def _health(self, _request: httpx.Request) -> httpx.Response:
        body = {"status": "ok", "engine": "fake", "demo": True, "device": "cpu", "queue_depth": 0}
        return httpx.Response(200, json=body)

    def _webhook_secret(self, _request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"secret": WEBHOOK_SECRET, "previous": None})


def _time_limits(body: dict[str, Any]) -> dict[str, Any] | None:
    """A submission's time limits as the job JSON shows them: both keys, or None without any."""
    limits = body.get("time_limits")
    return None if not limits else {"run_s": limits.get("run_s"), "total_s": limits.get("total_s")}


def _fake_rewrite(words: str) -> dict[str, Any]:
    """A rewrite as a server records it: words with "[refuse]" are kept, as a refusal; others are made more
    precise."""
    if "[refuse]" in words:
        return {
            "original_prompt": words,
            "prompt": words,
            "rewritten": False,
            "fallback_reason": "refused",
            "detail": "the fake refuses [refuse]",
            "seconds": 0.25,
        }
    precise = f"{words} (precisely)"
    return {
        "original_prompt": words,
        "prompt": precise,
        "rewritten": True,
        "fallback_reason": None,
        "seconds": 0.5,
    }


def _public(job: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in job.items() if not key.startswith("_")}


def _time(seconds: float) -> str:
    return (_EPOCH + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _multipart_file(request: httpx.Request) -> tuple[bytes, str] | None:
    """(content, content type) of the form's `file` part, read the plain way a server would."""
    boundary = request.headers["content-type"].split("boundary=")[1].encode()
    for part in request.content.split(b"--" + boundary):
        head, _, content = part.partition(b"\r\n\r\n")
        if b'name="file"' in head:
            mime = re.search(rb"Content-Type: ([^\r\n]+)", head, re.IGNORECASE)
            return content.removesuffix(b"\r\n"), mime.group(
                1
            ).decode() if mime else "application/octet-stream"
    return None
