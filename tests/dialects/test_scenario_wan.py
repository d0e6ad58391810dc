"""Scenario's `model_wan-2-7-image` end to end: the real scenario-sdk client (strict response validation)
against a real `reangle serve` whose DashScope endpoint is the local stand-in (tests/dashscope_standin.py).

The server builds its DashScope clients from its settings, so it polls at the vendor's default pace (the
first poll at once, then after 2 s): the stand-in's tasks answer their outcome at the first poll unless a
test holds them, and only the tests that hold a task pay for a second poll.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import scenario_sdk
from PIL import Image
from scenario_sdk import Scenario
from scenario_sdk.types.job_retrieve_response import Job

from tests.dashscope_standin import RESULT_SIZE, Behavior, DashScopeStandIn
from tests.dialects.conftest import API_KEY, RunningServer, png, png_base64, start_server, stop_server

WAN = "model_wan-2-7-image"
CAMERA = "model_qwen-edit-multiangle-2511"
VENDOR_KEY = "sk-scenario-test"
TERMINAL = {"success", "failure", "canceled"}
JOB_TIMEOUT_S = 20.0
HELD = 10**6
PROMPT = "A flower shop with a wooden door"


@pytest.fixture(scope="module")
def standin() -> Iterator[DashScopeStandIn]:
    server = DashScopeStandIn()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def fresh_behavior(standin: DashScopeStandIn) -> None:
    """Each test starts from a stand-in that answers a task's outcome at its first poll."""
    standin.reset(Behavior(api_key=VENDOR_KEY, pending_polls=0, running_polls=0))


def _server(
    tmp_path_factory: pytest.TempPathFactory, name: str, env: dict[str, str]
) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp(name), env=env)
    yield running
    stop_server(running)


def wan_env(standin: DashScopeStandIn) -> dict[str, str]:
    return {
        "REANGLE_DASHSCOPE_API_KEY": VENDOR_KEY,
        "REANGLE_DASHSCOPE_BASE_URL": standin.base_url,
        "REANGLE_ALLOW_PRIVATE_URLS": "true",  # the stand-in's result URLs are on 127.0.0.1
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, standin: DashScopeStandIn) -> Iterator[RunningServer]:
    yield from _server(tmp_path_factory, "wan-server", wan_env(standin))


@pytest.fixture(scope="module")
def keyless_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    yield from _server(tmp_path_factory, "wan-keyless-server", {})


def scenario_client(server: RunningServer) -> Scenario:
    return Scenario(
        base_url=f"{server.url}/scenario/v1",
        api_key="any-label",
        api_secret=API_KEY,
        max_retries=0,
        _strict_response_validation=True,
    )


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Scenario:
    return scenario_client(server)


def upload(client: Scenario, width: int = 256, height: int = 256) -> str:
    return client.assets.upload(name="in.png", image=png_base64(width, height)).asset.id


def wait(client: Scenario, job_id: str) -> Job:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        job = client.jobs.retrieve(job_id).job
        if job.status in TERMINAL:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {JOB_TIMEOUT_S} s")


def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def run(client: Scenario, body: dict[str, Any], model: str = WAN) -> Job:
    return wait(client, client.generate.run_model(model, body=body).job.job_id)


def downloaded(url: str) -> Image.Image:
    image = Image.open(io.BytesIO(httpx.get(url).raise_for_status().content))
    image.load()
    return image


def sent_body(standin: DashScopeStandIn) -> dict[str, Any]:
    body = standin.creates()[-1].body
    assert isinstance(body, dict)
    return body


# -- jobs ----------------------------------------------------------------------------------------------------


def test_text_to_image_results_are_reangles_own_assets(client: Scenario, standin: DashScopeStandIn) -> None:
    job = run(client, {"prompt": PROMPT, "size": "1K", "numOutputs": 2, "seed": 5})
    assert job.status == "success", job.metadata.error
    assert [change.status for change in job.status_history] == ["queued", "in-progress", "success"]
    assert job.metadata.input is not None
    assert job.metadata.input.get("images", []) == []  # echoed as [] today; absent would be better
    assert {key: value for key, value in job.metadata.input.items() if key != "images"} == {
        "prompt": PROMPT,
        "size": "1K",
        "numOutputs": 2,
        "imageSetMode": False,
        "thinkingMode": True,
        "seed": 5,
    }
    assert job.metadata.asset_ids is not None
    assert len(set(job.metadata.asset_ids)) == 2
    parameters = sent_body(standin)["parameters"]
    assert parameters == {"size": "1K", "n": 2, "watermark": False, "thinking_mode": True, "seed": 5}

    standin.expire_results()  # the vendor's result URLs are gone (they live 24 h)
    for asset_id in job.metadata.asset_ids:
        asset = client.assets.retrieve(asset_id).asset
        assert (asset.source, asset.metadata.type, asset.mime_type) == ("txt2img", "txt2img", "image/png")
        assert asset.metadata.parent_job_id == job.job_id
        assert asset.metadata.api_model_id == WAN
        assert asset.metadata.seed == "5"
        image = downloaded(asset.url)
        assert (image.format, image.size) == ("PNG", RESULT_SIZE)
        link = client.assets.download.request(asset_id, target_format="jpeg")
        assert (link.mime_type, downloaded(link.url).format) == ("image/jpeg", "JPEG")


def test_editing_with_two_images_sends_them_as_data_urls(client: Scenario, standin: DashScopeStandIn) -> None:
    first, second = upload(client, 256, 256), upload(client, 320, 240)
    job = run(client, {"prompt": "Put the cup of image 2 on the table of image 1", "images": [first, second]})
    assert job.status == "success", job.metadata.error
    assert job.metadata.input is not None
    assert job.metadata.input["images"] == [first, second]
    content = sent_body(standin)["input"]["messages"][0]["content"]
    assert content[0] == {"text": "Put the cup of image 2 on the table of image 1"}
    sent = [item["image"] for item in content[1:]]
    assert [url.split(",")[0] for url in sent] == ["data:image/png;base64"] * 2
    assert [base64.b64decode(url.split(",", 1)[1]) for url in sent] == [png(256, 256), png(320, 240)]
    # the vendor takes thinking_mode for text-to-image only
    assert "thinking_mode" not in sent_body(standin)["parameters"]
    assert job.metadata.asset_ids
    edited = client.assets.retrieve(job.metadata.asset_ids[0]).asset  # an edit: made from images
    assert (edited.source, edited.metadata.type) == ("img2img", "img2img")


def test_image_set_of_six(client: Scenario, standin: DashScopeStandIn) -> None:
    job = run(client, {"prompt": "A comic strip of a cat's day", "numOutputs": 6, "imageSetMode": True})
    assert job.status == "success", job.metadata.error
    assert job.metadata.asset_ids is not None
    assert len(set(job.metadata.asset_ids)) == 6
    parameters = sent_body(standin)["parameters"]
    assert (parameters["n"], parameters["enable_sequential"]) == (6, True)


def test_vendor_throttling_is_retried(client: Scenario, standin: DashScopeStandIn) -> None:
    standin.behavior.throttle_creates = 2
    standin.behavior.retry_after = "0"  # the vendor's Retry-After is honoured
    job = run(client, {"prompt": PROMPT})
    assert job.status == "success", job.metadata.error
    assert len(standin.creates()) == 3


@pytest.mark.parametrize(
    ("behavior", "prompt", "words"),
    [
        ({}, "a forbidden picture", ["content moderation", "DataInspectionFailed"]),
        ({"outcome": "moderate"}, PROMPT, ["content moderation", "Output data"]),
        ({"outcome": "fail"}, PROMPT, ["InternalError.Algo", "Algorithm failed"]),
        ({"api_key": "sk-someone-else"}, PROMPT, ["DashScope setup was refused", "InvalidApiKey"]),
    ],
)
def test_vendor_failures_are_failed_jobs_with_the_reason(
    client: Scenario, standin: DashScopeStandIn, behavior: dict[str, Any], prompt: str, words: list[str]
) -> None:
    for name, value in behavior.items():
        setattr(standin.behavior, name, value)
    job = run(client, {"prompt": prompt})
    assert job.status == "failure"
    assert job.metadata.error is not None
    for word in words:
        assert word in job.metadata.error
    assert not job.metadata.asset_ids
    assert len(standin.creates()) == 1  # a vendor error is never sent again


def test_the_wrong_vendor_key_tells_the_operator_what_to_fix(
    client: Scenario, standin: DashScopeStandIn
) -> None:
    standin.behavior.api_key = "sk-someone-else"
    job_id = client.generate.run_model(WAN, body={"prompt": PROMPT}).job.job_id
    wait(client, job_id)
    raw = client.jobs.with_raw_response.retrieve(job_id).http_response.json()
    assert "REANGLE_DASHSCOPE_API_KEY" in raw["job"]["metadata"]["hint"]


def test_cancel_while_pending_cancels_the_vendor_task(client: Scenario, standin: DashScopeStandIn) -> None:
    standin.behavior.pending_polls = HELD
    job_id = client.generate.run_model(WAN, body={"prompt": PROMPT}).job.job_id
    until(lambda: standin.count("GET", "/api/v1/tasks/") >= 1, "the task was never polled")
    canceled = client.jobs.trigger_action(job_id, action="cancel").job
    assert canceled.status == "canceled"
    assert wait(client, job_id).status == "canceled"
    assert standin.statuses()[-1] == "CANCELED"


def test_remote_jobs_run_together_while_a_local_job_runs(client: Scenario, standin: DashScopeStandIn) -> None:
    standin.behavior.pending_polls = HELD
    remote = [client.generate.run_model(WAN, body={"prompt": PROMPT, "seed": k}).job.job_id for k in range(3)]
    local = run(client, {"images": [upload(client, 96, 64)], "numInferenceSteps": 4}, CAMERA)
    # the camera edit ran on the fake engine while three vendor tasks were waiting
    assert local.status == "success"
    assert standin.statuses() == ["PENDING"] * 3
    assert {client.jobs.retrieve(job_id).job.status for job_id in remote} == {"in-progress"}
    standin.finish()
    assert [wait(client, job_id).status for job_id in remote] == ["success"] * 3


def test_a_server_killed_while_its_task_runs_follows_that_task_after_a_restart(
    tmp_path: Path, standin: DashScopeStandIn
) -> None:
    standin.behavior.running_polls = HELD
    env = wan_env(standin) | {"REANGLE_DASHSCOPE_POLL_INTERVAL_S": "0.1"}
    first = start_server(tmp_path, env=env)
    try:
        job_id = scenario_client(first).generate.run_model(WAN, body={"prompt": PROMPT}).job.job_id
        until(lambda: standin.statuses() == ["RUNNING"], "the vendor task never ran")
    finally:
        first.process.kill()  # kill -9: no graceful hand-back
        first.process.wait(timeout=15)
    standin.finish()  # the vendor finished the task while the server was down

    second = start_server(tmp_path, env=env)
    try:
        job = wait(scenario_client(second), job_id)
    finally:
        stop_server(second)
    assert job.status == "success"
    assert len(standin.creates()) == 1  # the task was followed again, not created (and billed) twice
    assert standin.statuses() == ["SUCCEEDED"]


# -- refused at submit ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"size": "3K"}, ["size", "1K, 2K or WxH"]),
        ({"size": "4096x4096"}, ["size", "2048x2048"]),
        ({"numOutputs": 9}, ["numOutputs", "without imageSetMode"]),
        ({"numOutputs": 13, "imageSetMode": True}, ["numOutputs", "12"]),
        ({"imageSetMode": "yes"}, ["imageSetMode", "true or false"]),
        ({"seed": -1}, ["seed"]),
        ({"images": ["asset_0123456789abcdef01234567"] * 10}, ["images", "0 to 9"]),
        ({"negativePrompt": "blur"}, ["negativePrompt", "unknown input"]),
        ({"prompt": None}, ["prompt", "required"]),
    ],
)
def test_bad_fields_are_400_naming_the_field(
    client: Scenario, standin: DashScopeStandIn, body: dict[str, Any], words: list[str]
) -> None:
    with pytest.raises(scenario_sdk.BadRequestError) as caught:
        client.generate.run_model(WAN, body={"prompt": PROMPT, **body})
    assert caught.value.status_code == 400
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["code"] == "invalid_input"
    for word in words:
        assert word in caught.value.body["error"]
    assert standin.creates() == []


def test_an_input_image_under_the_vendors_minimum_is_400(client: Scenario) -> None:
    with pytest.raises(scenario_sdk.BadRequestError) as caught:
        client.generate.run_model(WAN, body={"prompt": PROMPT, "images": [upload(client, 96, 64)]})
    assert isinstance(caught.value.body, dict)
    assert "images.0" in caught.value.body["error"]
    assert "240" in caught.value.body["error"]


# -- without a DashScope key ---------------------------------------------------------------------------------


def test_without_a_key_the_model_is_listed_unavailable_with_the_reason(keyless_server: RunningServer) -> None:
    answer = httpx.get(
        f"{keyless_server.url}/v1/models/wan-2.7-image", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    model = answer.raise_for_status().json()
    assert model["available"] is False
    assert "REANGLE_DASHSCOPE_API_KEY" in model["unavailable_reason"]
    listed = {model.id: model for model in scenario_client(keyless_server).models.list()}
    wan = listed[WAN]
    assert wan.tags == ["unavailable"]
    assert wan.short_description is not None
    assert "Unavailable on this server: set REANGLE_DASHSCOPE_API_KEY" in wan.short_description
    assert listed[CAMERA].tags == []  # the local models run


def test_without_a_key_a_job_is_a_400_in_scenarios_shape(keyless_server: RunningServer) -> None:
    client = scenario_client(keyless_server)
    with pytest.raises(scenario_sdk.BadRequestError) as caught:
        client.generate.run_model(WAN, body={"prompt": PROMPT})
    assert caught.value.status_code == 400
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["code"] == "invalid_input"
    assert "unavailable" in caught.value.body["error"]
    assert "REANGLE_DASHSCOPE_API_KEY" in caught.value.body["error"]
    assert list(client.jobs.list(page_size=10)) == []
