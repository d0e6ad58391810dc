"""The DashScope client against the local stand-in (tests/dashscope_standin.py) over real HTTP on
127.0.0.1, and the Scenario field translation on its own. Waits are on conditions (poll counts), and no
assert is on wall-clock time."""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import socket
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from PIL import Image

from reangle.core.wan_image import body_from_scenario
from reangle.errors import (
    Canceled,
    Conflict,
    EngineError,
    InvalidImage,
    InvalidInput,
    ReangleError,
    TooLarge,
    Unavailable,
)
from reangle.remote.dashscope import (
    ABANDONED,
    DashScopeClient,
    DashScopeConfig,
    StopCheck,
    TaskResult,
    TaskUpdate,
)
from reangle.remote.dashscope_errors import DashScopeAPIError, field_named_in, to_reangle
from reangle.remote.errors import ContentRefused, ProviderConfigError
from reangle.store.url_fetch import FetchPolicy
from tests.conftest import image_bytes, make_image
from tests.dashscope_standin import CREATE_PATH, RESULT_SIZE, Behavior, DashScopeStandIn

KEY = "sk-test"
PROMPT = "A flower shop with a wooden door"


@pytest.fixture
def standin() -> Iterator[DashScopeStandIn]:
    server = DashScopeStandIn(Behavior(api_key=KEY))
    yield server
    server.close()


@pytest.fixture
def config(standin: DashScopeStandIn) -> DashScopeConfig:
    """Short intervals injected through the config: the tests wait on the stand-in's steps, not on time."""
    return DashScopeConfig(
        api_key=KEY,
        base_url=standin.base_url,
        request_timeout_s=5.0,
        poll_interval_s=0.01,
        max_poll_interval_s=0.03,
        task_timeout_s=20.0,
        max_retries=3,
        retry_base_s=0.01,
        retry_max_wait_s=0.05,
        stop_check_s=0.01,
        download=FetchPolicy(allow_private=True, timeout_s=5.0),  # the stand-in lives on loopback
    )


def generate(
    config: DashScopeConfig,
    body: dict[str, Any],
    *,
    updates: list[TaskUpdate] | None = None,
    should_stop: StopCheck | None = None,
    created: list[str] | None = None,
    task_id: str | None = None,
) -> TaskResult:
    async def run() -> TaskResult:
        async with DashScopeClient(config) as client:
            return await client.generate(
                body,
                on_status=None if updates is None else updates.append,
                on_created=None if created is None else created.append,
                should_stop=should_stop,
                task_id=task_id,
            )

    return asyncio.run(run())


def created_task(config: DashScopeConfig, polls: int = 0) -> str:
    """A task made as an earlier run of a job made it (then interrupted), polled `polls` times."""

    async def run() -> str:
        async with DashScopeClient(config) as client:
            task_id = await client.create_task(scenario())
            for _ in range(polls):
                await client.get_task(task_id)
            return task_id

    return asyncio.run(run())


def fails(error: type[ReangleError], config: DashScopeConfig, body: dict[str, Any], **kw: Any) -> Any:
    with pytest.raises(error) as caught:
        generate(config, body, **kw)
    return caught.value


def vendor_cause(exc: BaseException) -> DashScopeAPIError:
    assert isinstance(exc.__cause__, DashScopeAPIError), exc.__cause__
    return exc.__cause__


def scenario(**fields: Any) -> dict[str, Any]:
    return body_from_scenario({"prompt": PROMPT, **fields})


@functools.cache
def png(width: int = 256, height: int = 256) -> bytes:
    image = Image.new("RGB", (width, height), (30, 120, 200))
    image.paste((250, 200, 20), (width // 4, height // 4, width // 2, height // 2))
    return image_bytes(image, "PNG")


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


# -- success -------------------------------------------------------------------------------------------------


def test_text_to_image_with_n_images(standin: DashScopeStandIn, config: DashScopeConfig) -> None:
    updates: list[TaskUpdate] = []
    result = generate(config, scenario(numOutputs=3, size="1K", seed=7), updates=updates)

    assert [u.status for u in updates] == ["PENDING", "RUNNING", "SUCCEEDED"]
    assert {u.task_id for u in updates} == {result.task_id}
    assert len(result.images) == 3
    for k, image in enumerate(result.images):
        decoded = Image.open(io.BytesIO(image.data))
        assert decoded.format == "PNG"
        assert decoded.size == RESULT_SIZE
        assert (image.mime_type, image.width, image.height) == ("image/png", *RESULT_SIZE)
        assert image.url.endswith(f"/results/{result.task_id}/{k}.png")
    assert len({image.data for image in result.images}) == 3  # three different images, in order
    assert result.usage == {"image_count": 3, "size": "1K"}

    (create,) = standin.creates()
    assert create.headers["x-dashscope-async"] == "enable"
    assert create.headers["authorization"] == f"Bearer {KEY}"
    assert create.body["model"] == "wan2.7-image"
    assert create.body["input"]["messages"] == [{"role": "user", "content": [{"text": PROMPT}]}]
    assert create.body["parameters"] == {
        "size": "1K",
        "n": 3,
        "watermark": False,
        "thinking_mode": True,
        "seed": 7,
    }


def test_image_set_with_reference_images(standin: DashScopeStandIn, config: DashScopeConfig) -> None:
    jpeg = image_bytes(make_image(320, 240), "JPEG")
    body = scenario(
        images=[png(), data_url(jpeg, "image/jpeg")],
        imageSetMode=True,
        numOutputs=5,
        size="1536x1024",
        thinkingMode=True,  # Scenario's default; the vendor has no thinking mode for image sets
    )
    result = generate(config, body)

    assert len(result.images) == 5
    assert all(Image.open(io.BytesIO(image.data)).size == RESULT_SIZE for image in result.images)
    (create,) = standin.creates()
    content = create.body["input"]["messages"][0]["content"]
    assert content[0] == {"text": PROMPT}
    assert [item["image"][:22] for item in content[1:]] == [
        "data:image/png;base64,",
        "data:image/jpeg;base64",
    ]
    assert base64.b64decode(content[2]["image"].split(",", 1)[1]) == jpeg
    assert create.body["parameters"] == {
        "size": "1536*1024",
        "n": 5,
        "watermark": False,
        "enable_sequential": True,
    }


def test_a_connection_dropped_while_polling_is_retried(
    standin: DashScopeStandIn, config: DashScopeConfig
) -> None:
    standin.behavior.drop_polls = 2
    result = generate(config, scenario())
    assert len(result.images) == 1
    assert standin.count("GET", "/api/v1/tasks/") == 2 + 3  # two dropped, then PENDING, RUNNING, SUCCEEDED


# -- retries -------------------------------------------------------------------------------------------------


def test_throttling_is_retried_then_succeeds(standin: DashScopeStandIn, config: DashScopeConfig) -> None:
    standin.behavior.throttle_creates = 2
    result = generate(config, scenario())
    assert len(result.images) == 1
    assert len(standin.creates()) == 3
    assert len(standin.tasks) == 1


def test_throttling_past_the_retries_is_unavailable_with_retry_after(
    standin: DashScopeStandIn, config: DashScopeConfig
) -> None:
    standin.behavior.throttle_creates = 100
    standin.behavior.retry_after = "0.02"
    error = fails(Unavailable, config, scenario())
    assert len(standin.creates()) == config.max_retries + 1
    assert error.retry_after_s >= 1
    assert "Throttling.RateQuota" in error.message
    assert "after 4 attempts" in error.message
    assert vendor_cause(error).status == 429


def test_retries_are_bounded_in_time(standin: DashScopeStandIn, config: DashScopeConfig) -> None:
    standin.behavior.throttle_creates = 100
    standin.behavior.retry_after = "0.1"  # each wait is 0.1 s; the budget allows three at most
    fails(Unavailable, replace(config, max_retries=50, retry_max_wait_s=1.0, retry_budget_s=0.35), scenario())
    assert 1 <= len(standin.creates()) <= 4  # far from the 51 attempts the count alone would allow


def test_a_server_error_is_retried_once(standin: DashScopeStandIn, config: DashScopeConfig) -> None:
    standin.behavior.server_error_creates = 1
    result = generate(config, scenario())
    assert len(result.images) == 1
    assert len(standin.creates()) == 2


def test_a_refused_connection_is_retried_then_unavailable(config: DashScopeConfig) -> None:
    with socket.socket() as sock:  # a port that nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    error = fails(Unavailable, replace(config, base_url=f"http://127.0.0.1:{port}"), scenario())
    assert "ConnectError" in error.message
    assert "after 4 attempts" in error.message


# -- vendor errors, mapped -----------------------------------------------------------------------------------


def test_a_bad_key_is_a_configuration_error(standin: DashScopeStandIn, config: DashScopeConfig) -> None:
    error = fails(ProviderConfigError, replace(config, api_key="sk-wrong"), scenario())
    assert isinstance(error, EngineError)
    assert "InvalidApiKey" in error.message
    assert "Invalid API-key provided." in error.message
    assert error.hint is not None
    assert "REANGLE_DASHSCOPE_API_KEY" in error.hint
    assert vendor_cause(error).request_id
    assert len(standin.creates()) == 1  # not retried


@pytest.mark.parametrize(
    "echoed",
    [
        "Invalid API-key provided: Bearer sk-SECRET1234",
        "Invalid API-key provided: sk-SECRET1234.",
        "header authorization=bearer SECRET1234 refused",
    ],
)
def test_credentials_a_vendor_message_echoes_never_reach_the_jobs_error(echoed: str) -> None:
    answer = httpx.Response(401, json={"code": "InvalidApiKey", "message": echoed, "request_id": "r-1"})
    error = to_reangle(DashScopeAPIError.from_response(answer), doing="creating a task")
    assert isinstance(error, ProviderConfigError)
    assert "SECRET1234" not in error.message
    assert "***" in error.message


def test_no_key_is_a_configuration_error_without_a_request(
    standin: DashScopeStandIn, config: DashScopeConfig
) -> None:
    fails(ProviderConfigError, replace(config, api_key=""), scenario())
    assert standin.seen == []


@pytest.mark.parametrize(
    ("parameters", "field", "said"),
    [
        ({"n": 9}, "numOutputs", "The parameter n should be in [1, 4]"),
        ({"size": "3K"}, "size", "The size '3K' is not supported"),
        ({"seed": -5}, "seed", "seed should be in"),
        ({"thinking_mode": "yes"}, "thinkingMode", "thinking_mode must be a boolean"),
    ],
)
def test_invalid_parameter_names_the_field(
    standin: DashScopeStandIn, config: DashScopeConfig, parameters: dict[str, Any], field: str, said: str
) -> None:
    body = scenario()
    body["parameters"].update(parameters)  # past our own checks, so that the vendor's are the ones met
    error = fails(InvalidInput, config, body)
    assert error.field == field
    assert "InvalidParameter" in error.message
    assert said in error.message
    assert vendor_cause(error).code == "InvalidParameter"
    assert len(standin.creates()) == 1


def test_content_moderation_of_the_prompt_is_a_refusal(
    standin: DashScopeStandIn, config: DashScopeConfig
) -> None:
    error = fails(ContentRefused, config, body_from_scenario({"prompt": "something forbidden"}))
    assert isinstance(error, InvalidInput)
    assert "DataInspectionFailed" in error.message
    assert "Input data may contain" in error.message
    assert len(standin.creates()) == 1
    assert standin.tasks == {}


def test_content_moderation_of_the_result_is_a_refusal(
    standin: DashScopeStandIn, config: DashScopeConfig
) -> None:
    standin.behavior.outcome = "moderate"
    error = fails(ContentRefused, config, scenario())
    assert "Output data may contain inappropriate content." in error.message


def test_a_failed_task_keeps_the_vendor_code_and_message(
    standin: DashScopeStandIn, config: DashScopeConfig
) -> None:
    standin.behavior.outcome = "fail"
    updates: list[TaskUpdate] = []
    error = fails(EngineError, config, scenario(), updates=updates)
    assert not isinstance(error, ProviderConfigError)
    assert "InternalError.Algo" in error.message
    assert "Algorithm failed to generate" in error.message
    assert vendor_cause(error).code == "InternalError.Algo"
    assert updates[-1].status == "FAILED"
    assert standin.count("GET", "/results/") == 0


def test_an_expired_task_is_unknown(standin: DashScopeStandIn, config: DashScopeConfig) -> None:
    standin.behavior.outcome = "expire"
    error = fails(EngineError, config, scenario())
    assert "UNKNOWN" in error.message
    assert "24 h" in error.message


def test_polling_an_id_the_vendor_never_had(standin: DashScopeStandIn, config: DashScopeConfig) -> None:
    async def run() -> None:
        async with DashScopeClient(config) as client:
            await client.wait("no-such-task")

    with pytest.raises(EngineError, match="UNKNOWN"):
        asyncio.run(run())


def test_a_task_that_never_finishes_times_out(standin: DashScopeStandIn, config: DashScopeConfig) -> None:
    standin.behavior.outcome = "never"
    updates: list[TaskUpdate] = []
    error = fails(Unavailable, replace(config, task_timeout_s=0.3), scenario(), updates=updates)
    assert "did not finish within 0.3 s (still RUNNING)" in error.message
    assert updates[-1].status == ABANDONED
    assert "may still finish" in updates[-1].detail
    assert standin.count("POST", "/api/v1/tasks/") == 0  # a RUNNING task cannot be canceled: not tried


# -- results -------------------------------------------------------------------------------------------------


def test_an_oversized_result_is_refused(standin: DashScopeStandIn, config: DashScopeConfig) -> None:
    standin.behavior.outcome = "oversized"
    small = replace(config, download=FetchPolicy(allow_private=True, timeout_s=5.0, max_bytes=200_000))
    error = fails(EngineError, small, scenario())
    assert "larger than the limit of 200000 bytes" in error.message
    assert isinstance(error.__cause__, TooLarge)
    assert standin.count("GET", "/results/") == 1  # not retried


def test_a_result_that_is_not_an_image_is_refused(standin: DashScopeStandIn, config: DashScopeConfig) -> None:
    standin.behavior.outcome = "not_image"
    error = fails(EngineError, config, scenario())
    assert "result image 0 is not a usable image" in error.message
    assert isinstance(error.__cause__, InvalidImage)


def test_result_urls_follow_the_ssrf_rules(standin: DashScopeStandIn, config: DashScopeConfig) -> None:
    strict = replace(config, download=FetchPolicy(timeout_s=5.0))  # the default policy: no loopback
    error = fails(EngineError, strict, scenario())
    assert "will not fetch" in error.message
    assert "loopback" in error.message
    assert standin.count("GET", "/results/") == 0


# -- cancel --------------------------------------------------------------------------------------------------


def test_cancel_while_pending_cancels_at_the_vendor(
    standin: DashScopeStandIn, config: DashScopeConfig
) -> None:
    standin.behavior.pending_polls = 10_000
    updates: list[TaskUpdate] = []
    error = fails(Canceled, config, scenario(), updates=updates, should_stop=lambda: bool(updates))
    assert "it was canceled at DashScope" in error.message
    assert [u.status for u in updates] == ["PENDING", "CANCELED"]
    (task,) = standin.tasks.values()
    assert task.canceled
    assert task.polls == 1  # the stop was seen before a second poll
    assert standin.count("POST", f"/api/v1/tasks/{task.id}/cancel") == 1


def test_cancel_while_running_stops_polling_and_says_so(
    standin: DashScopeStandIn, config: DashScopeConfig
) -> None:
    standin.behavior.pending_polls = 0
    standin.behavior.outcome = "never"
    updates: list[TaskUpdate] = []

    def running() -> bool:
        return any(u.status == "RUNNING" for u in updates)

    error = fails(Canceled, config, scenario(), updates=updates, should_stop=running)
    assert "was RUNNING" in error.message
    assert "may still finish and be billed" in error.message
    assert [u.status for u in updates] == ["RUNNING", ABANDONED]
    (task,) = standin.tasks.values()
    assert task.polls == 1
    assert not task.canceled
    assert standin.count("POST", "/api/v1/tasks/") == 0


def test_cancel_refused_by_the_vendor_is_reported(standin: DashScopeStandIn, config: DashScopeConfig) -> None:
    standin.behavior.pending_polls = 0
    standin.behavior.outcome = "never"

    async def run() -> None:
        async with DashScopeClient(config) as client:
            task_id = await client.create_task(scenario())
            await client.get_task(task_id)  # now RUNNING
            await client.cancel_task(task_id)

    with pytest.raises(Conflict, match="UnsupportedOperation"):
        asyncio.run(run())


def test_a_stop_before_creation_sends_nothing(standin: DashScopeStandIn, config: DashScopeConfig) -> None:
    fails(Canceled, config, scenario(), should_stop=lambda: True)
    assert standin.seen == []


def test_a_broken_status_hook_does_not_lose_the_task(
    standin: DashScopeStandIn, config: DashScopeConfig
) -> None:
    def hook(update: TaskUpdate) -> None:
        raise RuntimeError("hook bug")

    async def run() -> TaskResult:
        async with DashScopeClient(config) as client:
            return await client.generate(scenario(), on_status=hook)

    assert len(asyncio.run(run()).images) == 1


# -- a task created by an earlier run ------------------------------------------------------------------------


def test_the_new_task_is_reported_before_it_is_polled(
    standin: DashScopeStandIn, config: DashScopeConfig
) -> None:
    created: list[str] = []
    polls_when_reported: list[int] = []

    def record(task_id: str) -> None:
        created.append(task_id)
        polls_when_reported.append(standin.count("GET", "/api/v1/tasks/"))

    async def run() -> TaskResult:
        async with DashScopeClient(config) as client:
            return await client.generate(scenario(), on_created=record)

    result = asyncio.run(run())
    assert created == [result.task_id]
    assert polls_when_reported == [0]


@pytest.mark.parametrize(("polls", "was"), [(0, "PENDING"), (2, "RUNNING"), (3, "SUCCEEDED")])
def test_a_recorded_task_is_followed_and_no_other_is_created(
    standin: DashScopeStandIn, config: DashScopeConfig, polls: int, was: str
) -> None:
    task_id = created_task(config, polls)
    assert standin.statuses() == [was]
    created: list[str] = []
    updates: list[TaskUpdate] = []

    result = generate(config, scenario(), task_id=task_id, created=created, updates=updates)

    assert result.task_id == task_id
    assert len(result.images) == 1
    assert len(standin.creates()) == 1  # the earlier run's, only
    assert created == []
    assert updates[-1].status == "SUCCEEDED"


def test_a_recorded_task_canceled_before_it_ran_is_replaced_by_a_new_one(
    standin: DashScopeStandIn, config: DashScopeConfig
) -> None:
    """As a server stop leaves it: canceled while PENDING, so never run and never billed."""
    task_id = created_task(config)

    async def cancel() -> None:
        async with DashScopeClient(config) as client:
            await client.cancel_task(task_id)

    asyncio.run(cancel())
    created: list[str] = []
    result = generate(config, scenario(), task_id=task_id, created=created)

    assert result.task_id != task_id
    assert created == [result.task_id]
    assert len(standin.creates()) == 2
    assert standin.statuses() == ["CANCELED", "SUCCEEDED"]  # one task ran: one is billed


def test_a_recorded_task_the_vendor_no_longer_knows_fails_without_a_new_one(
    standin: DashScopeStandIn, config: DashScopeConfig
) -> None:
    task_id = created_task(config, polls=1)
    standin.expire_results()  # 24 h later: the vendor has forgotten the task
    created: list[str] = []

    error = fails(EngineError, config, scenario(), task_id=task_id, created=created)

    assert f"DashScope no longer knows task {task_id}" in error.message
    assert "UNKNOWN" in error.message
    assert "may have run and been billed, so no second task was created" in error.message
    assert error.hint == "submit the job again to have a new task created"
    assert len(standin.creates()) == 1
    assert created == []


def test_a_stop_while_following_a_recorded_pending_task_cancels_it_without_creating(
    standin: DashScopeStandIn, config: DashScopeConfig
) -> None:
    standin.behavior.pending_polls = 10_000
    task_id = created_task(config)
    error = fails(Canceled, config, scenario(), task_id=task_id, should_stop=lambda: True)
    assert "it was canceled at DashScope" in error.message
    assert standin.statuses() == ["CANCELED"]
    assert len(standin.creates()) == 1


def test_a_broken_created_hook_does_not_lose_the_task(
    standin: DashScopeStandIn, config: DashScopeConfig
) -> None:
    def hook(task_id: str) -> None:
        raise RuntimeError("hook bug")

    async def run() -> TaskResult:
        async with DashScopeClient(config) as client:
            return await client.generate(scenario(), on_created=hook)

    assert len(asyncio.run(run()).images) == 1


@pytest.mark.parametrize(
    ("base_url", "problem"),
    [
        ("dashscope-intl.aliyuncs.com", "no http:// or https:// scheme"),
        ("ftp://dashscope-intl.aliyuncs.com", "no http:// or https:// scheme"),
        ("https://", "no host"),
        ("https://:443", "no host"),
        ("https://dashscope.aliyuncs.com:port", "not a valid URL"),
        ("https://user:secret@dashscope.aliyuncs.com", "must not carry credentials"),
        ("https://dashscope.aliyuncs.com/?region=cn", "must not have a query"),
    ],
)
def test_an_unusable_base_url_is_refused_by_the_config(base_url: str, problem: str) -> None:
    with pytest.raises(ValueError, match="must be an http\\(s\\) URL of a host") as caught:
        DashScopeConfig(api_key=KEY, base_url=base_url)
    assert problem in str(caught.value)
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize(
    "base_url",
    ["https://dashscope.aliyuncs.com", "https://dashscope-intl.aliyuncs.com/", "http://127.0.0.1:8080"],
)
def test_usable_base_urls_are_accepted(base_url: str) -> None:
    assert DashScopeConfig(api_key=KEY, base_url=base_url).base_url == base_url


# -- Scenario fields -> vendor body --------------------------------------------------------------------------


def test_scenario_defaults() -> None:
    assert body_from_scenario({"prompt": PROMPT}) == {
        "model": "wan2.7-image",
        "input": {"messages": [{"role": "user", "content": [{"text": PROMPT}]}]},
        "parameters": {"size": "2K", "n": 1, "watermark": False, "thinking_mode": True},
    }


def test_scenario_nulls_are_defaults_and_the_model_is_chosen() -> None:
    fields = {"prompt": PROMPT, "images": None, "size": None, "numOutputs": None, "seed": None}
    body = body_from_scenario({**fields, "thinkingMode": False}, model="wan2.7-image-pro")
    assert body["model"] == "wan2.7-image-pro"
    assert body["parameters"] == {"size": "2K", "n": 1, "watermark": False, "thinking_mode": False}


def test_thinking_mode_is_only_sent_for_text_to_image() -> None:
    assert "thinking_mode" not in body_from_scenario({"prompt": PROMPT, "images": [png()]})["parameters"]
    assert "thinking_mode" not in body_from_scenario({"prompt": PROMPT, "imageSetMode": True})["parameters"]


def test_nine_images_and_twelve_set_outputs_are_accepted() -> None:
    body = body_from_scenario(
        {"prompt": PROMPT, "images": [png()] * 9, "imageSetMode": True, "numOutputs": 12}
    )
    assert len(body["input"]["messages"][0]["content"]) == 10
    assert body["parameters"]["n"] == 12


@pytest.mark.parametrize(
    ("fields", "field", "said"),
    [
        ({"prompt": ""}, "prompt", "prompt is required"),
        ({"prompt": None}, "prompt", "prompt is required"),
        ({"prompt": "x" * 5001}, "prompt", "5001 characters"),
        ({"images": [b"\x89PNG"] * 10}, "images", "at most 9"),
        ({"images": "data:image/png;base64,AAAA"}, "images", "must be a list"),
        ({"images": [b"not an image"]}, "images[0]", "not an image"),
        ({"images": ["https://example.com/a.png"]}, "images[0]", "bytes or a base64 data URL"),
        ({"images": ["data:image/png,rawtext"]}, "images[0]", "not a base64 one"),
        ({"images": ["data:image/png;base64,!!!"]}, "images[0]", "not valid base64"),
        ({"images": ["IMAGE", "SMALL"]}, "images[1]", "between 240 and 8000"),
        ({"images": ["WIDE"]}, "images[0]", "2000x240, wider than the supported 1:8 to 8:1"),
        ({"images": ["TALL"]}, "images[0]", "240x2000, taller than the supported 1:8 to 8:1"),
        ({"size": "3K"}, "size", "1K, 2K or WxH"),
        ({"size": 1024}, "size", "must be a string"),
        ({"size": "100x100"}, "size", "between 589,824 (768x768)"),
        ({"size": "4096x4096"}, "size", "2048x2048"),
        ({"size": "3000x300"}, "size", "wider than the supported 1:8 to 8:1"),
        ({"size": "300x3000"}, "size", "taller than the supported 1:8 to 8:1"),
        ({"numOutputs": 0}, "numOutputs", "between 1 and 4"),
        ({"numOutputs": 5}, "numOutputs", "up to 12 with it"),
        ({"numOutputs": 13, "imageSetMode": True}, "numOutputs", "between 1 and 12 in image set mode"),
        ({"numOutputs": "2"}, "numOutputs", "whole number"),
        ({"numOutputs": 1.5}, "numOutputs", "whole number"),
        ({"imageSetMode": "yes"}, "imageSetMode", "true or false"),
        ({"thinkingMode": 1}, "thinkingMode", "true or false"),
        ({"seed": -1}, "seed", "from 0 to 2147483647"),
        ({"seed": 2**31}, "seed", "from 0 to 2147483647"),
        ({"seed": True}, "seed", "whole number"),
        ({"numOutput": 2}, "numOutput", "unknown field 'numOutput'"),
    ],
)
def test_scenario_validation(fields: dict[str, Any], field: str, said: str) -> None:
    if isinstance(fields.get("images"), list):
        named = {"IMAGE": png(), "SMALL": png(100, 300), "WIDE": png(2000, 240), "TALL": png(240, 2000)}
        fields = {
            **fields,
            "images": [named.get(i, i) if isinstance(i, str) else i for i in fields["images"]],
        }
    with pytest.raises(InvalidInput) as caught:
        body_from_scenario({"prompt": PROMPT, **fields})
    assert caught.value.field == field
    assert said in caught.value.message


def test_whole_floats_are_whole_numbers() -> None:
    parameters = body_from_scenario({"prompt": PROMPT, "numOutputs": 2.0, "seed": 42.0})["parameters"]
    assert (parameters["n"], parameters["seed"]) == (2, 42)


def test_sizes_in_the_vendor_form() -> None:
    for given, sent in [("1k", "1K"), (" 2K ", "2K"), ("1024x1024", "1024*1024"), ("2048X1024", "2048*1024")]:
        assert body_from_scenario({"prompt": PROMPT, "size": given})["parameters"]["size"] == sent


# -- the error table -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status", "transient", "expected"),
    [
        ("InvalidApiKey", 401, False, ProviderConfigError),
        ("Arrearage", 400, False, ProviderConfigError),
        ("AccessDenied.Unpurchased", 403, False, ProviderConfigError),
        ("ModelNotFound", 404, False, ProviderConfigError),
        ("InvalidParameter", 400, False, InvalidInput),
        ("DataInspectionFailed", 400, False, ContentRefused),
        ("IPInfringementSuspect", 400, False, ContentRefused),
        ("Throttling.AllocationQuota", 429, True, Unavailable),
        ("InternalError", 500, True, Unavailable),
        ("InternalError.Algo", None, False, EngineError),
        ("UnsupportedOperation", 400, False, Conflict),
    ],
)
def test_vendor_codes_map_onto_reangle_errors(
    code: str, status: int | None, transient: bool, expected: type[ReangleError]
) -> None:
    error = DashScopeAPIError(code, "the vendor's words", status, "req-1", transient)
    mapped = to_reangle(error, doing="creating a task")
    assert type(mapped) is expected
    assert mapped.__cause__ is error
    assert code in mapped.message
    assert "the vendor's words" in mapped.message
    assert "req-1" in mapped.message


def test_fields_named_in_vendor_messages() -> None:
    assert field_named_in("The parameter n should be in [1, 4]") == "numOutputs"
    assert field_named_in("parameters.enable_sequential must be bool") == "imageSetMode"
    assert field_named_in("The image at index 2 is too small") == "images"
    assert field_named_in("Field required: input.messages[0].content[0].text") == "prompt"
    assert field_named_in("Something else went wrong") is None
    assert CREATE_PATH.startswith("/api/v1/")
