"""Compatibility: the real scenario-sdk 2.4.0 client against a running reangle server (fake engine).

The client runs with strict response validation, so a response missing a field the SDK's models require fails
the call. Its api_key is a free label; its api_secret carries the reangle API key.
"""

from __future__ import annotations

import base64
import hashlib
import io
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import scenario_sdk
from PIL import Image
from scenario_sdk import Scenario
from scenario_sdk.types.job_retrieve_response import Job

from tests.dialects.conftest import API_KEY, OTHER_KEY, RunningServer, png, png_base64

CAMERA = "model_qwen-edit-multiangle-2511"
INSTRUCTION = "model_qwen-image-edit-2511"
TEXT_TO_IMAGE = "model_qwen-image-2512"
TERMINAL = {"success", "failure", "canceled"}
JOB_TIMEOUT_S = 30.0
#: the fake engine's output for a 96x64 input: the server's default 1 MP area at 3:2, in multiples of 16
OUTPUT_SIZE = (1248, 832)

MakeClient = Callable[..., Scenario]


@pytest.fixture(scope="module")
def make_client(server: RunningServer) -> MakeClient:
    def make(
        api_key: str | None = "any-label", api_secret: str | None = API_KEY, bearer_auth: str | None = None
    ) -> Scenario:
        return Scenario(
            base_url=f"{server.url}/scenario/v1",
            api_key=api_key,
            api_secret=api_secret,
            bearer_auth=bearer_auth,
            max_retries=0,
            _strict_response_validation=True,
        )

    return make


@pytest.fixture(scope="module")
def client(make_client: MakeClient) -> Scenario:
    return make_client()


@pytest.fixture(scope="module")
def asset_id(client: Scenario) -> str:
    return client.assets.upload(name="in.png", image=png_base64()).asset.id


def wait(client: Scenario, job_id: str) -> Job:
    """Poll like a Scenario user does (the Python SDK has no wait helper)."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        job = client.jobs.retrieve(job_id).job
        if job.status in TERMINAL:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {JOB_TIMEOUT_S} s")


def run(client: Scenario, body: dict[str, Any], model: str = CAMERA) -> Job:
    return wait(client, client.generate.run_model(model, body=body).job.job_id)


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.fixture(scope="module")
def camera_job(client: Scenario, asset_id: str) -> Job:
    return run(client, {"images": [asset_id], "horizontalAngle": 90, "verticalAngle": 30, "seed": 7})


def test_upload_gives_an_asset_with_an_absolute_expiring_url(client: Scenario, server: RunningServer) -> None:
    asset = client.assets.upload(name="in.png", image="data:image/png;base64," + png_base64()).asset
    assert asset.id.startswith("asset_")
    assert asset.url.startswith(server.url + "/")
    assert "expires=" in asset.url
    assert (asset.source, asset.kind, asset.status, asset.mime_type) == (
        "uploaded",
        "image",
        "success",
        "image/png",
    )
    assert (asset.metadata.width, asset.metadata.height) == (96, 64)
    assert asset.properties.size == len(png())
    assert httpx.get(asset.url).content == png()  # no auth header, as the SDK's users download


def test_an_upload_keeps_its_name_and_shows_its_asset_as_a_later_read_does(client: Scenario) -> None:
    uploaded = client.assets.upload(name="my photo.png", image=png_base64()).asset
    assert uploaded.metadata.name == "my photo.png"
    assert client.assets.retrieve(uploaded.id).asset.metadata.model_dump() == uploaded.metadata.model_dump()
    [listed] = [asset for asset in client.assets.list().assets if asset.id == uploaded.id]
    assert listed.metadata.name == "my photo.png"


def test_a_refused_input_is_named_by_the_body_key_sent(server: RunningServer) -> None:
    response = httpx.post(
        f"{server.url}/scenario/v1/generate/custom/model_qwen-edit-multiangle-2511",
        headers={"Authorization": f"Bearer {API_KEY}"},
        json={"images": [png_base64(), "asset_unknown"], "horizontalAngle": 90},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "images.1: no asset asset_unknown (unknown, expired, or another key's)"


def test_an_asset_name_that_is_not_a_text_is_named_so(server: RunningServer) -> None:
    response = httpx.post(
        f"{server.url}/scenario/v1/assets",
        headers={"Authorization": f"Bearer {API_KEY}"},
        json={"name": 5, "image": png_base64()},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "name must be a text (the file's name), not a number"


def test_an_upload_given_a_url_says_it_takes_the_bytes(client: Scenario) -> None:
    with pytest.raises(scenario_sdk.BadRequestError) as caught:
        client.assets.upload(name="a.png", image="https://example.com/a.png")
    assert caught.value.body["error"] == (
        "image: not base64 image data or a data URL (uploads are not fetched from URLs)"
    )


def test_a_long_asset_name_is_a_bad_request(client: Scenario) -> None:
    with pytest.raises(scenario_sdk.BadRequestError) as caught:
        client.assets.upload(name="x" * 256, image=png_base64())
    assert caught.value.body == {
        "error": "name has 256 characters; at most 255",
        "code": "invalid_input",
        "hint": "send the file's own name, such as my-photo.png",
    }
    assert client.assets.upload(name="x" * 255, image=png_base64()).asset.metadata.name == "x" * 255


def test_an_asset_name_with_a_control_character_is_a_bad_request(client: Scenario) -> None:
    with pytest.raises(scenario_sdk.BadRequestError) as caught:
        client.assets.upload(name="in\n.png", image=png_base64())
    assert caught.value.body["error"] == "name has a control character: 'in\\n.png'"


def test_submit_answers_a_queued_custom_job_echoing_the_body(client: Scenario, asset_id: str) -> None:
    body = {"images": [asset_id], "horizontalAngle": 45, "zoom": 8}
    job = client.generate.run_model(CAMERA, body=body).job
    assert (job.status, job.job_type, job.progress) == ("queued", "custom", 0)
    assert job.job_id.startswith("job_")
    assert job.metadata.input == {
        **body,
        "verticalAngle": 0,
        "loraScale": 1.5,
        "numOutputs": 1,
        "numInferenceSteps": 28,
        "guidanceScale": 4.5,
        "acceleration": "none",
    }
    assert wait(client, job.job_id).status == "success"


def test_camera_edit_succeeds_with_asset_ids(client: Scenario, camera_job: Job) -> None:
    assert camera_job.status == "success"
    assert camera_job.progress == 1
    assert [change.status for change in camera_job.status_history] == ["queued", "in-progress", "success"]
    assert camera_job.metadata.asset_ids is not None
    assert len(camera_job.metadata.asset_ids) == 1
    assert camera_job.metadata.error is None


def test_result_asset_downloads_as_png(client: Scenario, camera_job: Job, server: RunningServer) -> None:
    assert camera_job.metadata.asset_ids
    asset = client.assets.retrieve(camera_job.metadata.asset_ids[0]).asset
    assert (asset.source, asset.metadata.type, asset.mime_type) == ("img2img", "img2img", "image/png")
    assert asset.metadata.parent_job_id == camera_job.job_id
    assert asset.metadata.api_model_id == CAMERA
    assert asset.metadata.seed == "7"
    assert asset.url.startswith(server.url + "/")
    data = httpx.get(asset.url).content
    image = decode(data)
    assert (image.format, image.size) == ("PNG", OUTPUT_SIZE)
    assert asset.properties.size == len(data)

    link = client.assets.download.request(asset.id)
    assert link.mime_type == "image/png"
    assert httpx.get(link.url).content == data


def test_download_in_another_format(client: Scenario, camera_job: Job) -> None:
    assert camera_job.metadata.asset_ids
    link = client.assets.download.request(camera_job.metadata.asset_ids[0], target_format="jpeg")
    assert link.mime_type == "image/jpeg"
    image = decode(httpx.get(link.url).content)
    assert (image.format, image.size) == ("JPEG", OUTPUT_SIZE)


def test_a_format_asked_for_again_is_the_same_asset_not_one_more(client: Scenario, asset_id: str) -> None:
    listed = {asset.id for asset in client.assets.list()}
    links = [client.assets.download.request(asset_id, target_format="webp") for _ in range(3)]
    as_jpeg = client.assets.download.request(asset_id, target_format="jpeg")
    added = {asset.id for asset in client.assets.list()} - listed
    assert len(added) == 2  # one per format
    ids = {urlsplit(link.url).path.rsplit("/", 1)[1] for link in links}
    assert len(ids) == 1
    assert added == ids | {urlsplit(as_jpeg.url).path.rsplit("/", 1)[1]}
    assert decode(httpx.get(links[0].url).content).format == "WEBP"


def test_lightning_preset_with_two_outputs(client: Scenario, asset_id: str) -> None:
    job = run(client, {"images": [asset_id], "numOutputs": 2, "acceleration": "high", "seed": 11})
    assert job.status == "success"
    assert job.metadata.input is not None
    assert "numInferenceSteps" not in job.metadata.input  # the preset chooses its own steps
    assert job.metadata.asset_ids is not None
    assert len(set(job.metadata.asset_ids)) == 2
    seeds = [client.assets.retrieve(asset).asset.metadata.seed for asset in job.metadata.asset_ids]
    assert seeds == ["11", "12"]


def test_instruction_model_with_a_data_url_image(client: Scenario) -> None:
    body = {
        "images": ["data:image/png;base64," + png_base64()],
        "prompt": "add a hat",
        "numInferenceSteps": 3,
    }
    job = run(client, body, INSTRUCTION)
    assert job.status == "success"
    assert job.metadata.input is not None
    images = job.metadata.input["images"]
    assert isinstance(images, list)
    assert str(images[0]).startswith("asset_")  # the data URL became an asset


def test_text_to_image_needs_no_image_and_gets_generation_defaults(client: Scenario) -> None:
    submitted = client.generate.run_model(
        TEXT_TO_IMAGE, body={"prompt": "a lighthouse at dusk", "seed": 3}
    ).job
    assert submitted.metadata.input == {
        "prompt": "a lighthouse at dusk",
        "imageSetMode": False,
        "numOutputs": 1,
        "numInferenceSteps": 50,  # a generation's recipe, not an edit's 40
        "guidanceScale": 4,
        "acceleration": "none",
        "seed": 3,
    }
    job = wait(client, submitted.job_id)
    assert job.status == "success", job.metadata.error
    assert job.metadata.asset_ids is not None
    assert len(job.metadata.asset_ids) == 1
    asset = client.assets.retrieve(job.metadata.asset_ids[0]).asset  # made from a prompt alone
    assert (asset.source, asset.metadata.type) == ("txt2img", "txt2img")
    assert (asset.metadata.parent_job_id, asset.metadata.api_model_id) == (job.job_id, TEXT_TO_IMAGE)


def test_text_to_image_set_takes_more_outputs_than_a_plain_request(client: Scenario) -> None:
    body = {
        "prompt": "a lighthouse",
        "imageSetMode": True,
        "numOutputs": 6,
        "numInferenceSteps": 2,
        "images": [],
    }
    job = run(client, body, TEXT_TO_IMAGE)
    assert job.status == "success", job.metadata.error
    assert job.metadata.asset_ids is not None
    assert len(set(job.metadata.asset_ids)) == 6


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (
            {"numOutputs": 9, "imageSetMode": True},
            "numOutputs must be between 1 and 8 in image set mode, got 9",
        ),
        (
            {"numOutputs": 5},
            "numOutputs must be between 1 and 4 without imageSetMode (up to 8 with it), got 5",
        ),
    ],
)
def test_text_to_image_output_limits_are_scenario_bad_requests(
    client: Scenario, body: dict[str, Any], words: str
) -> None:
    with pytest.raises(scenario_sdk.BadRequestError) as caught:
        client.generate.run_model(TEXT_TO_IMAGE, body={"prompt": "a lighthouse", **body})
    assert caught.value.status_code == 400
    assert caught.value.body == {"error": words, "code": "invalid_input"}


def test_engine_failure_surfaces_as_failure(client: Scenario, asset_id: str) -> None:
    job = run(client, {"images": [asset_id], "prompt": "fake:fail", "numInferenceSteps": 4})
    assert job.status == "failure"
    assert job.metadata.error is not None
    assert "failed on purpose" in job.metadata.error
    assert not job.metadata.asset_ids
    assert job.status_history[-1].status == "failure"


def test_cancel_through_the_job_action(client: Scenario, asset_id: str) -> None:
    slow = {"images": [asset_id], "numInferenceSteps": 50}  # 50 steps of 0.02 s
    running = client.generate.run_model(CAMERA, body=slow).job
    waiting = client.generate.run_model(CAMERA, body=slow).job  # behind `running` on the one runner
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while client.jobs.retrieve(running.job_id).job.status != "in-progress":
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.02)

    assert client.jobs.trigger_action(waiting.job_id, action="cancel").job.status == "canceled"
    canceled = client.jobs.trigger_action(running.job_id, action="cancel").job
    assert canceled.status == "canceled"
    assert [change.status for change in canceled.status_history] == ["queued", "in-progress", "canceled"]
    for job_id in (running.job_id, waiting.job_id):
        job = client.jobs.retrieve(job_id).job
        assert job.status == "canceled"
        assert not job.metadata.asset_ids
    # canceling again answers the job as it stands
    assert client.jobs.trigger_action(running.job_id, action="cancel").job.status == "canceled"


def test_cancel_after_success_answers_the_finished_job(client: Scenario, camera_job: Job) -> None:
    assert client.jobs.trigger_action(camera_job.job_id, action="cancel").job.status == "success"


def test_list_jobs_pages_and_filters(client: Scenario, camera_job: Job, asset_id: str) -> None:
    other = run(client, {"images": [asset_id], "seed": 9})  # two jobs at least, whatever ran before
    page = client.jobs.list(page_size=1)
    assert len(page.jobs) == 1
    assert page.next_pagination_token
    every = [job.job_id for job in client.jobs.list(page_size=2)]  # the SDK follows the tokens
    assert {camera_job.job_id, other.job_id} <= set(every)
    assert len(every) == len(set(every))
    succeeded = list(client.jobs.list(status="success", page_size=100))
    assert succeeded
    assert {job.status for job in succeeded} == {"success"}
    assert list(client.jobs.list(type="upscale")) == []
    assert list(client.jobs.list(status="warming-up")) == []  # a status reangle never reports
    with pytest.raises(scenario_sdk.BadRequestError):
        client.jobs.list(pagination_token="not-a-token")


def test_list_jobs_by_date_author_and_workflow(client: Scenario, camera_job: Job, asset_id: str) -> None:
    """An incremental poller's filters: only what is newer than its last look, never the whole history."""
    created = datetime.fromisoformat(camera_job.created_at)
    before = (created - timedelta(seconds=1)).isoformat()
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat().replace("+00:00", "Z")
    assert list(client.jobs.list(created_after=later, page_size=100)) == []
    assert list(client.jobs.list(updated_after=later, status="success", page_size=100)) == []
    since_before = [job.job_id for job in client.jobs.list(created_after=before, page_size=1)]
    assert camera_job.job_id in since_before  # the SDK follows the tokens until the floor is passed
    newer = run(client, {"images": [asset_id], "seed": 8})
    after_first = datetime.fromisoformat(camera_job.updated_at).isoformat()
    fresh = [job.job_id for job in client.jobs.list(updated_after=after_first, page_size=100)]
    assert newer.job_id in fresh
    assert camera_job.job_id not in fresh
    assert list(client.jobs.list(workflow_id="wf_anything")) == []  # reangle runs no workflows
    assert list(client.jobs.list(author_id="someone-else")) == []
    assert camera_job.job_id in [job.job_id for job in client.jobs.list(author_id=camera_job.author_id)]
    with pytest.raises(scenario_sdk.BadRequestError) as caught:
        client.jobs.list(created_after="notadate")
    assert "createdAfter must be an ISO 8601 date" in caught.value.body["error"]


def test_dry_run_estimates_without_a_job(client: Scenario, asset_id: str) -> None:
    before = len(list(client.jobs.list(page_size=100)))
    raw = client.generate.with_raw_response.run_model(CAMERA, body={"images": [asset_id]}, dry_run="true")
    assert raw.status_code == 269
    assert raw.http_response.json() == {"creativeUnitsCost": 0, "creativeUnitsDiscount": 0}
    assert len(list(client.jobs.list(page_size=100))) == before
    with pytest.raises(scenario_sdk.BadRequestError) as caught:  # not taken for a dry run
        client.generate.run_model(CAMERA, body={"images": [asset_id]}, dry_run="bogus")
    assert caught.value.body["error"] == "dryRun must be true or false, got 'bogus'"
    assert len(list(client.jobs.list(page_size=100))) == before


@pytest.mark.parametrize(
    ("body", "word"),
    [
        ({"zoom": 50}, "zoom"),
        ({"acceleration": "turbo"}, "acceleration"),
        ({"horizontal_angle": 90}, "horizontal_angle"),
        ({"numOutputs": 9}, "numOutputs"),
        ({"images": ["asset_0123456789abcdef01234567"]}, "no asset"),
        ({"images": None}, "images"),
        ({"seed": 1e30}, "seed must be between 0 and 2147483647, got 1e+30"),
    ],
)
def test_bad_input_is_a_bad_request(client: Scenario, asset_id: str, body: dict[str, Any], word: str) -> None:
    with pytest.raises(scenario_sdk.BadRequestError) as caught:
        client.generate.run_model(CAMERA, body={"images": [asset_id], **body})
    assert caught.value.status_code == 400
    assert isinstance(caught.value.body, dict)
    assert word in caught.value.body["error"]
    assert caught.value.body["code"] == "invalid_input"


def test_unknown_model_is_not_found(client: Scenario, asset_id: str) -> None:
    with pytest.raises(scenario_sdk.NotFoundError):
        client.generate.run_model("model_flux-1-dev", body={"images": [asset_id]})
    with pytest.raises(scenario_sdk.NotFoundError):
        client.models.retrieve("model_flux-1-dev")


def test_a_base_url_without_the_version_is_a_not_found_that_says_where_to_point(
    server: RunningServer,
) -> None:
    wrong = Scenario(base_url=f"{server.url}/scenario", api_key="label", api_secret=API_KEY, max_retries=0)
    with pytest.raises(scenario_sdk.NotFoundError) as caught:
        wrong.jobs.list()
    assert caught.value.body == {
        "error": "no route GET /scenario/jobs; point the client at http://HOST/scenario/v1",
        "code": "not_found",
    }


def test_a_route_scenario_has_and_this_server_does_not_serve_says_so_not_to_move_the_base_url(
    client: Scenario,
) -> None:
    with pytest.raises(scenario_sdk.NotFoundError) as caught:
        client.uploads.create(
            file_name="a.png", content_type="image/png", file_size=100, kind="image", parts=1
        )
    assert caught.value.body == {
        "error": "no route POST /scenario/v1/uploads: this server does not serve it (see /docs)",
        "code": "not_found",
    }


def test_wrong_secret_is_an_authentication_error(make_client: MakeClient) -> None:
    with pytest.raises(scenario_sdk.AuthenticationError) as wrong:
        make_client(api_key="any-label", api_secret="not-a-key").models.retrieve(CAMERA)
    assert wrong.value.body["error"] == "this API key is not valid"
    # the key must be the secret, not the user name: the error says so
    with pytest.raises(scenario_sdk.AuthenticationError) as swapped:
        make_client(api_key=API_KEY, api_secret="label").models.retrieve(CAMERA)
    assert swapped.value.body["error"] == (
        "this API key is not valid: the key was sent as the label, the first part of Basic auth"
    )


def test_a_key_sent_as_the_label_with_no_secret_is_named_so(server: RunningServer) -> None:
    basic = base64.b64encode(f"{API_KEY}:".encode()).decode()
    response = httpx.get(f"{server.url}/scenario/v1/jobs", headers={"Authorization": f"Basic {basic}"})
    assert response.status_code == 401
    assert response.json()["error"] == (
        "this API key is not valid: the key was sent as the label, the first part of Basic auth"
    )
    nothing = base64.b64encode(b"label:").decode()
    response = httpx.get(f"{server.url}/scenario/v1/jobs", headers={"Authorization": f"Basic {nothing}"})
    assert (response.status_code, response.json()["error"]) == (401, "an API key is required")


def test_missing_credentials_are_401_in_scenario_shape(server: RunningServer) -> None:
    response = httpx.get(f"{server.url}/scenario/v1/jobs")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    assert response.json()["code"] == "unauthorized"


def test_bearer_auth_works(make_client: MakeClient, camera_job: Job, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SCENARIO_SDK_API_KEY", "SCENARIO_SDK_API_SECRET"):
        monkeypatch.delenv(name, raising=False)
    bearer = make_client(api_key=None, api_secret=None, bearer_auth=API_KEY)
    assert bearer.api_key is None  # so the SDK sends Bearer, not Basic
    assert bearer.jobs.retrieve(camera_job.job_id).job.status == "success"


def test_another_key_sees_neither_jobs_nor_assets(make_client: MakeClient, camera_job: Job) -> None:
    other = make_client(api_key="someone", api_secret=OTHER_KEY)
    with pytest.raises(scenario_sdk.NotFoundError):
        other.jobs.retrieve(camera_job.job_id)
    assert camera_job.metadata.asset_ids
    with pytest.raises(scenario_sdk.NotFoundError):
        other.assets.retrieve(camera_job.metadata.asset_ids[0])
    assert camera_job.job_id not in [job.job_id for job in other.jobs.list(page_size=100)]


def test_get_bulk_answers_this_keys_assets_in_the_order_asked(
    client: Scenario, make_client: MakeClient, camera_job: Job, asset_id: str
) -> None:
    assert camera_job.metadata.asset_ids
    output_id = camera_job.metadata.asset_ids[0]
    others = make_client(api_key="someone", api_secret=OTHER_KEY)
    foreign_id = others.assets.upload(name="theirs.png", image=png_base64()).asset.id
    asked = [output_id, "asset_unknown", foreign_id, asset_id, output_id]
    assets = client.assets.get_bulk(asset_ids=asked).assets
    assert [asset.id for asset in assets] == [output_id, asset_id]
    assert assets[0].metadata.parent_job_id == camera_job.job_id
    assert (assets[1].source, assets[1].metadata.type) == ("uploaded", "uploaded")
    with pytest.raises(scenario_sdk.BadRequestError):
        client.assets.get_bulk(asset_ids=["asset_x"] * 201)


def test_list_assets_pages_newest_first_through_the_sdk(
    client: Scenario, make_client: MakeClient, camera_job: Job
) -> None:
    assert camera_job.metadata.asset_ids
    output_id = camera_job.metadata.asset_ids[0]
    uploads = [client.assets.upload(name=f"{n}.png", image=png_base64()).asset.id for n in range(3)]
    others = make_client(api_key="someone", api_secret=OTHER_KEY)
    foreign_id = others.assets.upload(name="theirs.png", image=png_base64()).asset.id

    first = client.assets.list(page_size=2)
    assert [asset.id for asset in first.assets] == uploads[:0:-1]  # the newest two, newest first
    assert first.next_pagination_token
    listed = list(client.assets.list(page_size=2))  # the SDK follows the tokens to the end
    ids = [asset.id for asset in listed]
    assert ids[:3] == uploads[::-1]
    assert len(ids) == len(set(ids))
    assert output_id in ids
    assert foreign_id not in ids
    assert [asset.created_at for asset in listed] == sorted(
        (asset.created_at for asset in listed), reverse=True
    )
    output = next(asset for asset in listed if asset.id == output_id)
    assert (output.source, output.metadata.parent_job_id) == ("img2img", camera_job.job_id)
    theirs = [asset.id for asset in others.assets.list(page_size=100)]
    assert theirs[0] == foreign_id
    assert not set(theirs) & set(ids)


def test_list_assets_filters_on_type_model_author_and_dates(client: Scenario, camera_job: Job) -> None:
    assert camera_job.metadata.asset_ids
    output_id = camera_job.metadata.asset_ids[0]
    upload = client.assets.upload(name="filtered.png", image=png_base64()).asset

    outputs = [asset.id for asset in client.assets.list(type="img2img", page_size=1)]
    assert output_id in outputs
    assert upload.id not in outputs
    uploaded = list(client.assets.list(types=["uploaded"], page_size=100))
    assert upload.id in [asset.id for asset in uploaded]
    assert {asset.source for asset in uploaded} == {"uploaded"}
    both = [asset.id for asset in client.assets.list(types=["uploaded", "img2img"], page_size=100)]
    assert {output_id, upload.id} <= set(both)
    assert list(client.assets.list(type="upscale")) == []  # a Scenario type reangle never makes
    assert output_id in [asset.id for asset in client.assets.list(model_id=CAMERA, page_size=100)]
    generated = list(client.assets.list(model_id=TEXT_TO_IMAGE, page_size=100))
    assert output_id not in [asset.id for asset in generated]
    assert {asset.metadata.api_model_id for asset in generated} <= {TEXT_TO_IMAGE}
    assert list(client.assets.list(author_id="someone-else")) == []
    assert list(client.assets.list(collection_id="collection_any")) == []  # reangle has no collections
    assert list(client.assets.list(privacy="public")) == []  # every asset here is private to its key
    newest = client.assets.list(sort_by="updatedAt", sort_direction="desc", privacy="private", page_size=1)
    assert [asset.id for asset in newest.assets] == [upload.id]

    created = datetime.fromisoformat(upload.created_at)
    since = client.assets.list(created_after=(created - timedelta(seconds=1)).isoformat(), page_size=1)
    assert upload.id in [asset.id for asset in since]  # the SDK follows the tokens until the floor is passed
    assert list(client.assets.list(created_after=upload.created_at)) == []  # exclusive: it is the newest
    before = [asset.id for asset in client.assets.list(created_before=upload.created_at, page_size=100)]
    assert upload.id not in before
    assert output_id in before


@pytest.mark.parametrize(
    ("query", "word"),
    [
        ({"type": "photo"}, "type holds 'photo', not a Scenario asset type"),
        ({"types": "uploaded,nonsense"}, "types holds 'nonsense'"),
        ({"type": "uploaded", "types": "uploaded"}, '"type" and "types" cannot be used together'),
        ({"sortDirection": "asc"}, "sortDirection must be desc"),
        ({"sortBy": "name"}, "sortBy must be createdAt or updatedAt"),
        ({"privacy": "secret"}, "privacy must be one of"),
        ({"pageSize": "101"}, "pageSize"),
        ({"createdAfter": "yesterday"}, "createdAfter must be an ISO 8601 date"),
        ({"paginationToken": "not-a-token"}, "paginationToken is not one this server returned"),
        ({"paginationToken": "WzEsICJhXHUwMDAwIl0"}, "paginationToken is not one this server returned"),
    ],
)
def test_list_assets_refuses_unknown_filter_values_in_scenario_shape(
    client: Scenario, query: dict[str, str], word: str
) -> None:
    with pytest.raises(scenario_sdk.BadRequestError) as caught:
        client.assets.list(extra_query=query)
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["code"] == "invalid_input"
    assert word in body["error"]


def test_model_has_inputs_with_seed_defaults(client: Scenario) -> None:
    model = client.models.retrieve(CAMERA).model
    assert (model.id, model.type, model.status) == (CAMERA, "custom", "trained")
    assert model.inputs is not None
    inputs = {item.name: item for item in model.inputs}
    defaults = {
        name: inputs[name].default for name in ("zoom", "loraScale", "numInferenceSteps", "guidanceScale")
    }
    assert defaults == {"zoom": 5, "loraScale": 1.5, "numInferenceSteps": 28, "guidanceScale": 4.5}
    assert inputs["acceleration"].default == "none"
    assert inputs["acceleration"].allowed_values == ["none", "regular", "high"]
    assert inputs["images"].type == "file_array"
    assert inputs["images"].required is not None
    assert inputs["images"].required.always is True
    assert {model.id for model in client.models.list()} == {
        CAMERA,
        INSTRUCTION,
        "model_qwen-image-2512",
        "model_wan-2-7-image",
    }


def test_json_errors_even_for_bodies_that_are_not_json(server: RunningServer) -> None:
    response = httpx.post(
        f"{server.url}/scenario/v1/generate/custom/{CAMERA}",
        content=b"{not json",
        headers={"Authorization": "Basic " + base64.b64encode(f"x:{API_KEY}".encode()).decode()},
    )
    assert response.status_code == 400
    assert response.json() == {"error": "the request body is not valid JSON", "code": "invalid_input"}


@pytest.mark.parametrize("token", ["²", str(2**70), "abc"])
def test_a_foreign_pagination_token_is_a_bad_request_in_scenario_shape(
    server: RunningServer, token: str
) -> None:
    response = httpx.get(
        f"{server.url}/scenario/v1/jobs",
        params={"paginationToken": token},
        headers={"Authorization": "Basic " + base64.b64encode(f"x:{API_KEY}".encode()).decode()},
    )
    assert response.status_code == 400
    assert response.json() == {
        "error": "paginationToken is not one this server returned",
        "code": "invalid_input",
    }


@pytest.mark.parametrize(
    "authorization",
    [b"Basic \xe9\xe9\xe9", b"Basic " + base64.b64encode(b"x:\xff\xfe"), b"Basic ====", b"Digest abc"],
    ids=["not ASCII", "not UTF-8 inside", "not base64", "another scheme"],
)
def test_malformed_credentials_are_401_in_scenario_shape(server: RunningServer, authorization: bytes) -> None:
    response = httpx.get(f"{server.url}/scenario/v1/jobs", headers={"Authorization": authorization})
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"


def test_converting_an_asset_whose_file_was_lost_is_410_in_scenario_shape(
    client: Scenario, server: RunningServer
) -> None:
    data = png(50, 42)  # this test's own bytes, so its file is no other asset's
    uploaded = client.assets.upload(name="lost.png", image=base64.b64encode(data).decode()).asset.id
    digest = hashlib.sha256(data).hexdigest()
    (server.data_dir / "assets" / digest[:2] / digest).unlink()
    response = httpx.post(
        f"{server.url}/scenario/v1/assets/{uploaded}/download",
        json={"targetFormat": "jpeg"},
        headers={"Authorization": "Basic " + base64.b64encode(f"x:{API_KEY}".encode()).decode()},
    )
    assert response.status_code == 410
    body = response.json()
    assert body["code"] == "gone"
    assert str(server.data_dir) not in body["error"]


def test_dry_run_api_estimates_without_a_job(client: Scenario, asset_id: str) -> None:
    before = len(list(client.jobs.list(page_size=100)))
    raw = client.generate.with_raw_response.run_model(CAMERA, body={"images": [asset_id]}, dry_run="api")
    assert raw.status_code == 269
    assert raw.http_response.json() == {"creativeUnitsCost": 0, "creativeUnitsDiscount": 0}
    assert len(list(client.jobs.list(page_size=100))) == before
    with pytest.raises(scenario_sdk.BadRequestError) as caught:  # a dry run checks the body as a run does
        client.generate.run_model(CAMERA, body={"zoom": 50, "images": [asset_id]}, dry_run="api")
    assert "zoom" in caught.value.body["error"]
    with pytest.raises(scenario_sdk.BadRequestError) as caught:
        client.generate.run_model(CAMERA, body={"images": [asset_id]}, dry_run="bogus")
    assert "api" in caught.value.body["hint"]
