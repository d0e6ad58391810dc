"""A local stand-in for DashScope's Wan 2.7 image async API, real HTTP on 127.0.0.1 in a thread.

It implements the documented flow: `POST /api/v1/services/aigc/image-generation/generation` (bearer key and
`X-DashScope-Async: enable` required, the body checked as the vendor checks it), `GET /api/v1/tasks/{id}`
(PENDING -> RUNNING -> an outcome, one step per poll, so that tests wait on conditions and not on time),
`POST /api/v1/tasks/{id}/cancel` (PENDING tasks only), and the result images it serves itself as real PNGs.
Every error answer has the vendor's `{code, message, request_id}` shape. `Behavior` injects the failures.
"""

from __future__ import annotations

import io
import json
import random
import re
import threading
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from PIL import Image

CREATE_PATH = "/api/v1/services/aigc/image-generation/generation"
MODELS = ("wan2.7-image", "wan2.7-image-pro")
RESULT_SIZE = (64, 48)
Outcome = Literal["succeed", "fail", "never", "moderate", "expire", "oversized", "not_image"]


@dataclass
class Behavior:
    """What the stand-in does; tests set it before the client runs."""

    api_key: str = "sk-test"
    pending_polls: int = 1  # polls answered PENDING, then...
    running_polls: int = 1  # ...polls answered RUNNING, then the outcome
    outcome: Outcome = "succeed"
    fail_code: str = "InternalError.Algo"
    fail_message: str = "Algorithm failed to generate the image."
    throttle_creates: int = 0  # answer 429 Throttling.RateQuota to this many creates first
    retry_after: str | None = None  # the Retry-After header sent with each 429
    server_error_creates: int = 0  # answer 500 InternalError to this many creates first
    drop_polls: int = 0  # close this many polls' connections without an answer first
    moderated_word: str = "forbidden"  # a prompt containing it is refused at creation


@dataclass
class Task:
    id: str
    n: int
    sequential: bool
    size: str
    outcome: Outcome
    pending_polls: int
    running_polls: int
    polls: int = 0
    canceled: bool = False

    def status(self) -> str:
        if self.canceled:
            return "CANCELED"
        if self.polls <= self.pending_polls:
            return "PENDING"
        if self.polls <= self.pending_polls + self.running_polls or self.outcome == "never":
            return "RUNNING"
        return {"succeed": "SUCCEEDED", "oversized": "SUCCEEDED", "not_image": "SUCCEEDED"}.get(
            self.outcome, "UNKNOWN" if self.outcome == "expire" else "FAILED"
        )


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class VendorError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class DashScopeStandIn:
    def __init__(self, behavior: Behavior | None = None) -> None:
        self.behavior = behavior or Behavior()
        self.seen: list[Seen] = []
        self.tasks: dict[str, Task] = {}
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def reset(self, behavior: Behavior) -> None:
        """Start over with `behavior`: no request seen, no task (for a stand-in shared by several tests)."""
        with self.lock:
            self.behavior = behavior
            self.seen.clear()
            self.tasks.clear()

    def count(self, method: str, path_start: str) -> int:
        with self.lock:
            return sum(1 for s in self.seen if s.method == method and s.path.startswith(path_start))

    def creates(self) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.method == "POST" and s.path == CREATE_PATH]

    def advance(self) -> None:
        """Every task waiting in PENDING or RUNNING moves to its next status at its next poll (for tasks
        created with `pending_polls` or `running_polls` too large to pass on their own)."""
        with self.lock:
            for task in self.tasks.values():
                status = task.status()
                if status == "PENDING":
                    task.pending_polls = task.polls
                elif status == "RUNNING":
                    task.running_polls = task.polls - task.pending_polls

    def finish(self) -> None:
        """Every task waiting in PENDING or RUNNING reaches its outcome at its next poll."""
        with self.lock:
            for task in self.tasks.values():
                if task.status() in ("PENDING", "RUNNING"):
                    task.pending_polls, task.running_polls = task.polls, 0

    def statuses(self) -> list[str]:
        """The status of every task created so far, in creation order (without polling them)."""
        with self.lock:
            return [task.status() for task in self.tasks.values()]

    def expire_results(self) -> None:
        """The vendor's 24 hours have passed: every task id and result URL is gone."""
        with self.lock:
            self.tasks.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # the vendor's routes, called with the lock held

    def create(self, headers: dict[str, str], raw: bytes) -> dict[str, Any]:
        b = self.behavior
        self._check_key(headers)
        if headers.get("x-dashscope-async") != "enable":
            raise VendorError(403, "AccessDenied", "current user api does not support synchronous calls")
        if b.throttle_creates > 0:
            b.throttle_creates -= 1
            extra = {"Retry-After": b.retry_after} if b.retry_after is not None else {}
            raise VendorError(429, "Throttling.RateQuota", "Requests rate limit exceeded.", extra)
        if b.server_error_creates > 0:
            b.server_error_creates -= 1
            raise VendorError(500, "InternalError", "An internal error has occured, please try again later.")
        body = _json_body(raw)
        text, n, sequential, size = _validated(body)
        if b.moderated_word in text:
            raise VendorError(400, "DataInspectionFailed", "Input data may contain inappropriate content.")
        task = Task(uuid.uuid4().hex, n, sequential, size, b.outcome, b.pending_polls, b.running_polls)
        self.tasks[task.id] = task
        return {"output": {"task_id": task.id, "task_status": "PENDING"}}

    def poll(self, headers: dict[str, str], task_id: str) -> dict[str, Any]:
        self._check_key(headers)
        task = self.tasks.get(task_id)
        if task is None:
            return {"output": {"task_id": task_id, "task_status": "UNKNOWN"}}
        task.polls += 1
        status = task.status()
        output: dict[str, Any] = {"task_id": task_id, "task_status": status}
        answer: dict[str, Any] = {"output": output}
        if status == "FAILED":
            moderated = task.outcome == "moderate"
            output["code"] = "DataInspectionFailed" if moderated else self.behavior.fail_code
            output["message"] = (
                "Output data may contain inappropriate content." if moderated else self.behavior.fail_message
            )
        elif status == "SUCCEEDED":
            urls = [f"{self.base_url}/results/{task_id}/{k}.png" for k in range(task.n)]
            if task.sequential:  # an image set: one message holding every image
                content = [{"type": "image", "image": url} for url in urls]
                output["choices"] = [_choice(content)]
            else:
                output["choices"] = [_choice([{"type": "image", "image": url}]) for url in urls]
            output["finished"] = True
            answer["usage"] = {"image_count": task.n, "size": task.size}
        return answer

    def cancel(self, headers: dict[str, str], task_id: str) -> dict[str, Any]:
        self._check_key(headers)
        task = self.tasks.get(task_id)
        if task is None or task.status() != "PENDING":
            raise VendorError(
                400,
                "UnsupportedOperation",
                "Failed to cancel the task, please confirm if the task is in PENDING status.",
            )
        task.canceled = True
        return {}

    def result(self, task_id: str, index: int) -> tuple[bytes, str]:
        task = self.tasks.get(task_id)
        if task is None or index >= task.n:
            raise VendorError(404, "NotFound", "no such object")
        if task.outcome == "not_image":
            return b"<html>this is not an image</html>", "text/html"
        if task.outcome == "oversized":  # incompressible noise: about 480 kB of real PNG
            noise = random.Random(index).randbytes(400 * 400 * 3)
            return _png(Image.frombytes("RGB", (400, 400), noise), level=0), "image/png"
        color = (40 * index % 256, 200, 255 - 30 * index % 256)
        return _png(Image.new("RGB", RESULT_SIZE, color)), "image/png"

    def _check_key(self, headers: dict[str, str]) -> None:
        if headers.get("authorization") != f"Bearer {self.behavior.api_key}":
            raise VendorError(401, "InvalidApiKey", "Invalid API-key provided.")


def _handler(standin: DashScopeStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def _serve(self, method: str) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            with standin.lock:
                standin.seen.append(Seen(method, self.path, headers, _maybe_json(raw)))
                try:
                    reply = self._route(method, headers, raw)
                except VendorError as exc:
                    body = {"code": exc.code, "message": exc.message, "request_id": str(uuid.uuid4())}
                    reply = (exc.status, json.dumps(body).encode(), "application/json", exc.headers)
            if reply is None:  # a dropped connection: no status line at all
                self.close_connection = True
                return
            status, data, content_type, extra = reply
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _route(
            self, method: str, headers: dict[str, str], raw: bytes
        ) -> tuple[int, bytes, str, dict[str, str]] | None:
            path = self.path
            if method == "POST" and path == CREATE_PATH:
                return _ok(standin.create(headers, raw))
            task = re.fullmatch(r"/api/v1/tasks/([^/]+)(/cancel)?", path)
            if task and method == "POST" and task[2]:
                return _ok(standin.cancel(headers, task[1]))
            if task and method == "GET" and not task[2]:
                if standin.behavior.drop_polls > 0:
                    standin.behavior.drop_polls -= 1
                    return None
                return _ok(standin.poll(headers, task[1]))
            image = re.fullmatch(r"/results/([^/]+)/(\d+)\.png", path)
            if image and method == "GET":
                data, content_type = standin.result(image[1], int(image[2]))
                return 200, data, content_type, {}
            raise VendorError(404, "NotFound", f"no route for {method} {path}")

    return Handler


def _validated(body: Any) -> tuple[str, int, bool, str]:
    """Check a create body as the vendor does: (prompt, n, enable_sequential, size) or InvalidParameter."""

    def invalid(message: str) -> VendorError:
        return VendorError(400, "InvalidParameter", message)

    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    model = body.get("model")
    if model not in MODELS:
        raise invalid(f"Model not exist: {model!r}.")
    messages = body.get("input", {}).get("messages") if isinstance(body.get("input"), dict) else None
    if not isinstance(messages, list) or len(messages) != 1 or not isinstance(messages[0], dict):
        raise invalid("input.messages must hold exactly one user message.")
    content = messages[0].get("content")
    if messages[0].get("role") != "user" or not isinstance(content, list):
        raise invalid("input.messages[0] must be a user message with a content list.")
    texts = [item["text"] for item in content if isinstance(item, dict) and "text" in item]
    images = [item["image"] for item in content if isinstance(item, dict) and "image" in item]
    if len(texts) != 1 or not isinstance(texts[0], str) or not 0 < len(texts[0]) <= 5000:
        raise invalid("The text of the message must be one string of 1 to 5000 characters.")
    if len(images) > 9:
        raise invalid("At most 9 images are accepted in input.messages content.")
    for image in images:
        if not isinstance(image, str) or not image.startswith(("http://", "https://", "data:image/")):
            raise invalid("Each image must be a URL or a data:image/...;base64 string.")
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict):
        raise invalid("parameters must be an object.")
    for flag in ("watermark", "thinking_mode", "enable_sequential"):
        if flag in parameters and not isinstance(parameters[flag], bool):
            raise invalid(f"The parameter {flag} must be a boolean.")
    sequential = bool(parameters.get("enable_sequential", False))
    n = parameters.get("n", 12 if sequential else 1)
    limit = 12 if sequential else 4
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= limit:
        raise invalid(f"The parameter n should be in [1, {limit}], got {n!r}.")
    size = parameters.get("size", "2K")
    _check_size(size, model=model, text_only=not images and not sequential)
    seed = parameters.get("seed")
    if seed is not None and (not isinstance(seed, int) or not 0 <= seed <= 2**31 - 1):
        raise invalid("The parameter seed should be in [0, 2147483647].")
    return texts[0], n, sequential, size


def _check_size(size: Any, *, model: str, text_only: bool) -> None:
    if size in ("1K", "2K") or (size == "4K" and model == "wan2.7-image-pro" and text_only):
        return
    match = re.fullmatch(r"(\d+)\*(\d+)", size) if isinstance(size, str) else None
    if match:
        width, height = int(match[1]), int(match[2])
        if 768 * 768 <= width * height <= 2048 * 2048 and max(width, height) <= 8 * min(width, height):
            return
    raise VendorError(400, "InvalidParameter", f"The size {size!r} is not supported for {model}.")


def _choice(content: list[dict[str, str]]) -> dict[str, Any]:
    return {"finish_reason": "stop", "message": {"role": "assistant", "content": content}}


def _ok(payload: dict[str, Any]) -> tuple[int, bytes, str, dict[str, str]]:
    answer = {"request_id": str(uuid.uuid4()), **payload}
    return 200, json.dumps(answer).encode(), "application/json", {}


def _json_body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise VendorError(400, "InvalidParameter", "The request body is not valid JSON.") from None


def _maybe_json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw


def _png(image: Image.Image, level: int = 6) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=level)
    return buffer.getvalue()
