from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reangle.client import (
    AuthenticationError,
    Client,
    Job,
    JobCanceled,
    JobFailed,
    NotFoundError,
    TimeLimits,
    TimeLimitsInput,
    WebhookSecret,
)
from tests.client.fakes import API, API_KEY, WEBHOOK_SECRET, FakeServer

PNG = b"\x89PNG\r\n\x1a\n" + b"pretend pixels"
JPEG = b"\xff\xd8\xff\xe0" + b"pretend jpeg"


@pytest.fixture
def fake() -> FakeServer:
    return FakeServer()


@pytest.fixture
def client(fake: FakeServer) -> Iterator[Client]:
    with Client(API, API_KEY, transport=fake.transport(), poll_interval=0.01) as client:
        yield client


def sent_json(fake: FakeServer, method: str, path: str) -> dict[str, object]:
    (request,) = fake.requests_to(method, path)
    body: dict[str, object] = json.loads(request.content)
    return body


def test_upload_sends_the_bytes_as_a_multipart_file(fake: FakeServer, client: Client) -> None:
    asset = client.upload(PNG)
    (request,) = fake.requests_to("POST", "/v1/assets")
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert b'name="file"; filename="image.png"' in request.content
    assert b"Content-Type: image/png" in request.content
    assert PNG in request.content
    assert fake.blobs[asset.id] == PNG
    assert (asset.bytes, asset.mime_type, asset.width) == (len(PNG), "image/png", 64)


def test_upload_reads_a_path_and_names_the_file_after_it(
    fake: FakeServer, client: Client, tmp_path: Path
) -> None:
    photo = tmp_path / "holiday photo.jpg"
    photo.write_bytes(JPEG)
    asset = client.upload(str(photo))
    assert fake.blobs[asset.id] == JPEG
    assert asset.mime_type == "image/jpeg"
    (request,) = fake.requests_to("POST", "/v1/assets")
    assert b'filename="holiday photo.jpg"' in request.content


def test_upload_of_a_missing_file_raises_before_any_request(fake: FakeServer, client: Client) -> None:
    with pytest.raises(FileNotFoundError):
        client.upload("/no/such/photo.png")
    assert fake.requests == []


def test_upload_url_and_get_asset(fake: FakeServer, client: Client) -> None:
    asset = client.upload_url("https://example.com/cat.jpg")
    assert sent_json(fake, "POST", "/v1/assets") == {"url": "https://example.com/cat.jpg"}
    again = client.get_asset(asset.id)
    assert again.id == asset.id
    assert again.url.startswith("http://files.reangle.test/")


def test_submit_sends_model_input_kind_priority_and_the_idempotency_key(
    fake: FakeServer, client: Client
) -> None:
    first = client.submit(
        "qwen-edit-multiangle-2511", {"images": ["asset_x"]}, priority=5, idempotency_key="k-1"
    )
    second = client.submit("qwen-edit-multiangle-2511", {"images": ["asset_x"]}, idempotency_key="k-1")
    requests = fake.requests_to("POST", "/v1/jobs")
    assert [r.headers.get("idempotency-key") for r in requests] == ["k-1", "k-1"]
    assert json.loads(requests[0].content) == {
        "model": "qwen-edit-multiangle-2511",
        "input": {"images": ["asset_x"]},
        "kind": "edit",
        "priority": 5,
    }
    assert second.id == first.id
    assert (first.status, first.priority, first.is_terminal) == ("queued", 5, False)
    assert len(fake.jobs) == 1


def test_submit_without_a_key_sends_no_idempotency_header(fake: FakeServer, client: Client) -> None:
    client.submit("qwen-edit-multiangle-2511", {"images": ["asset_x"]})
    (request,) = fake.requests_to("POST", "/v1/jobs")
    assert "idempotency-key" not in request.headers


def test_jobs_keep_fields_the_sdk_does_not_know(client: Client) -> None:
    job = client.submit("qwen-edit-multiangle-2511", {"images": ["asset_x"]})
    assert job.model_extra == {"a_field_from_the_future": {"kept": True}}


def test_get_cancel_and_a_missing_job(fake: FakeServer, client: Client) -> None:
    job = client.submit("qwen-edit-multiangle-2511", {"images": ["asset_x"]})
    assert client.get(job.id).status == "queued"
    canceled = client.cancel(job.id)
    assert (canceled.status, canceled.is_terminal) == ("canceled", True)
    assert fake.jobs[job.id]["status"] == "canceled"
    with pytest.raises(NotFoundError, match="no job job_404"):
        client.get("job_404")


def test_ids_are_escaped_into_one_path_segment(fake: FakeServer, client: Client) -> None:
    with pytest.raises(NotFoundError):
        client.get("../assets/asset_1")
    assert fake.requests[-1].url.raw_path == b"/v1/jobs/..%2Fassets%2Fasset_1"


def test_list_and_iter_jobs_follow_the_cursors(fake: FakeServer, client: Client) -> None:
    ids = [client.submit("qwen-edit-multiangle-2511", {"images": [f"a{k}"]}).id for k in range(5)]
    page = client.list(limit=2)
    assert [job.id for job in page.data] == ids[::-1][:2]
    assert page.next_cursor == "2"
    fake.requests.clear()
    assert [job.id for job in client.iter_jobs(page_size=2)] == ids[::-1]
    cursors = [r.url.params.get("cursor") for r in fake.requests_to("GET", "/v1/jobs")]
    assert cursors == [None, "2", "4"]
    assert all(r.url.params["limit"] == "2" for r in fake.requests_to("GET", "/v1/jobs"))


def test_list_filters_by_status(fake: FakeServer, client: Client) -> None:
    queued = client.submit("qwen-edit-multiangle-2511", {"images": ["a"]})
    canceled = client.cancel(client.submit("qwen-edit-multiangle-2511", {"images": ["b"]}).id)
    assert [job.id for job in client.list(status="canceled").data] == [canceled.id]
    assert [job.id for job in client.iter_jobs("queued")] == [queued.id]


def test_download_uses_the_signed_url_without_the_api_key(
    fake: FakeServer, client: Client, tmp_path: Path
) -> None:
    asset = client.upload(PNG)
    target = tmp_path / "copy.png"
    assert client.download(asset, target) == PNG
    assert target.read_bytes() == PNG
    (request,) = [r for r in fake.requests if r.url.host == "files.reangle.test"]
    assert "authorization" not in request.headers
    assert client.download(asset.url) == PNG


def test_edit_uploads_local_images_and_passes_references_through(
    fake: FakeServer, client: Client, tmp_path: Path
) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(PNG)
    existing = fake.add_asset(b"already there")
    job = client.edit(
        [photo, JPEG, existing["id"]],
        horizontal_angle=90,
        zoom=8,
        prompt="make it dusk",
        seed=3,
        acceleration="regular",
    )
    submitted = sent_json(fake, "POST", "/v1/jobs")
    uploaded = [asset_id for asset_id, blob in fake.blobs.items() if blob in (PNG, JPEG)]
    assert submitted["model"] == "qwen-edit-multiangle-2511"
    assert submitted["kind"] == "edit"
    assert submitted["input"] == {
        "images": [*uploaded, existing["id"]],
        "horizontal_angle": 90,
        "zoom": 8,
        "prompt": "make it dusk",
        "seed": 3,
        "acceleration": "regular",
    }
    assert job.status == "succeeded"
    assert [asset.role for asset in job.assets] == ["image"]
    assert client.download(job.assets[0]) == f"{job.id} image 0".encode()


def test_edit_passes_urls_and_data_urls_as_they_are(fake: FakeServer, client: Client) -> None:
    images = [
        "https://example.com/a.png",
        "data:image/png;base64,iVBORw0KGgo=",
        "asset_not_a_file",
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC",
    ]
    client.edit(images, wait=False)
    assert sent_json(fake, "POST", "/v1/jobs")["input"] == {"images": images}
    assert fake.requests_to("POST", "/v1/assets") == []


def test_edit_without_waiting_returns_the_queued_job(fake: FakeServer, client: Client) -> None:
    job = client.edit("asset_1", wait=False, num_outputs=2)
    assert job.status == "queued"
    assert fake.requests_to("GET", f"/v1/jobs/{job.id}/events") == []


def test_edit_raises_job_failed_with_the_jobs_error(fake: FakeServer, client: Client) -> None:
    fake.outcome = "failed"
    with pytest.raises(JobFailed) as caught:
        client.edit("asset_1", horizontal_angle=45)
    exc = caught.value
    assert (exc.code, exc.message, exc.hint) == ("engine_error", "CUDA out of memory", "try a smaller size")
    assert exc.job.status == "failed"
    assert str(exc) == f"job {exc.job.id} failed: engine_error: CUDA out of memory (try a smaller size)"


def test_edit_raises_job_canceled(fake: FakeServer, client: Client) -> None:
    fake.outcome = "canceled"
    with pytest.raises(JobCanceled, match="was canceled") as caught:
        client.edit("asset_1")
    assert caught.value.job.status == "canceled"


def test_orbit_submits_an_orbit_job_and_returns_views_turntable_and_contact_sheet(
    fake: FakeServer, client: Client
) -> None:
    job = client.orbit(PNG, azimuths=[0, 90, 180], elevation=30, seed=1, output_format="webp")
    submitted = sent_json(fake, "POST", "/v1/jobs")
    assert submitted["kind"] == "orbit"
    assert submitted["input"] == {
        "image": next(iter(fake.blobs)),
        "azimuths": [0, 90, 180],
        "elevation": 30,
        "seed": 1,
        "output_format": "webp",
    }
    views = job.assets_with_role("view")
    assert [(view.pose.azimuth_deg, view.pose.elevation_deg) for view in views if view.pose] == [
        (0, 30),
        (90, 30),
        (180, 30),
    ]
    assert [asset.mime_type for asset in views] == ["image/webp"] * 3
    assert [asset.role for asset in job.assets[3:]] == ["turntable", "contact_sheet"]


def test_orbit_along_poses_sends_the_path_alone(fake: FakeServer, client: Client) -> None:
    path = [{"azimuth": 90, "elevation": 30}, {"horizontal_angle": 180, "zoom": 8}]
    job = client.orbit("asset_1", poses=path, seed=3)
    submitted = sent_json(fake, "POST", "/v1/jobs")
    assert submitted["input"] == {"image": "asset_1", "poses": path, "seed": 3}
    assert [view.pose.azimuth_deg for view in job.assets_with_role("view") if view.pose] == [90, 0]


def test_orbit_along_poses_passes_a_clashing_elevation_on_for_the_server_to_refuse(
    fake: FakeServer, client: Client
) -> None:
    client.orbit("asset_1", poses=[{"azimuth": 90}], elevation=30)
    assert sent_json(fake, "POST", "/v1/jobs")["input"] == {
        "image": "asset_1",
        "poses": [{"azimuth": 90}],
        "elevation": 30,
    }


def test_batches(fake: FakeServer, client: Client) -> None:
    batch = client.batch(
        "qwen-edit-multiangle-2511", [{"images": ["asset_a"]}, {"images": ["asset_b"], "azimuth": 90}]
    )
    assert len(batch.jobs) == 2
    assert {job.batch_id for job in batch.jobs} == {batch.id}
    assert [job.input for job in client.get_batch(batch.id).jobs] == [
        {"images": ["asset_a"]},
        {"images": ["asset_b"], "azimuth": 90},
    ]


def test_a_batch_uploads_local_images_first_and_passes_references_through(
    fake: FakeServer, client: Client, tmp_path: Path
) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(PNG)
    batch = client.batch(
        "qwen-edit-multiangle-2511",
        [
            {"images": photo, "azimuth": 90},
            {"images": ["asset_b", JPEG]},
            {"prompt": "no images"},
            {"images": None},
        ],
    )
    png_id, jpeg_id = (
        [asset_id for asset_id, blob in fake.blobs.items() if blob == data] for data in (PNG, JPEG)
    )
    assert [item["input"] for item in sent_json(fake, "POST", "/v1/batches")["items"]] == [
        {"images": png_id, "azimuth": 90},
        {"images": ["asset_b", *jpeg_id]},
        {"prompt": "no images"},
        {"images": None},
    ]
    assert len(batch.jobs) == 4


def test_a_batch_with_a_missing_file_sends_nothing(fake: FakeServer, client: Client, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        client.batch("m", [{"images": [PNG]}, {"images": [tmp_path / "missing.png"]}])
    assert fake.requests == []


def test_models_poses_and_health(client: Client) -> None:
    (model,) = client.models()
    assert model.id == "qwen-edit-multiangle-2511"
    assert model.input_schema["required"] == ["images"]
    (pose,) = client.poses()
    assert (pose.azimuth_deg, pose.prompt) == (90, "<sks> right side view eye-level shot medium shot")
    health = client.health()
    assert (health.status, health.engine, health.demo, health.queue_depth) == ("ok", "fake", True, 0)


def test_without_a_key_no_authorization_header_is_sent() -> None:
    fake = FakeServer(api_key=None)
    with Client(API, transport=fake.transport()) as client:
        client.health()
    assert "authorization" not in fake.requests[0].headers


def test_a_wrong_key_is_an_authentication_error(fake: FakeServer) -> None:
    with Client(API, "sk-wrong", transport=fake.transport()) as client, pytest.raises(AuthenticationError):
        client.list()


@pytest.mark.parametrize("base_url", [API, API + "/", API + "/v1", API + "/v1/"])
def test_the_base_url_may_end_with_a_slash_or_v1(base_url: str) -> None:
    fake = FakeServer()
    with Client(base_url, API_KEY, transport=fake.transport()) as client:
        client.list()
        client.health()
    assert [r.url.path for r in fake.requests] == ["/v1/jobs", "/healthz"]


def test_raise_for_status_returns_a_succeeded_job() -> None:
    job = Job.model_validate(
        {"id": "j", "model": "m", "status": "succeeded", "created_at": "2026-01-01T00:00:00Z"}
    )
    assert job.raise_for_status() is job
    assert job.assets == []


# webhooks and time limits

HOOK = "https://example.com/hooks/reangle"
#: The webhook and time limits as keywords of every submitting method, and the body fields they make.
SUBMISSION: dict[str, Any] = {
    "webhook_url": HOOK,
    "webhook_events": ("completed", "progress"),
    "time_limits": TimeLimits(run_s=30, total_s=600),
}
SENT = {
    "webhook_url": HOOK,
    "webhook_events": ["completed", "progress"],
    "time_limits": {"run_s": 30, "total_s": 600},
}


def test_submit_sends_the_webhook_and_time_limits_and_reads_the_limits_back(
    fake: FakeServer, client: Client
) -> None:
    job = client.submit("qwen-edit-multiangle-2511", {"images": ["asset_x"]}, **SUBMISSION)
    assert sent_json(fake, "POST", "/v1/jobs") == {
        "model": "qwen-edit-multiangle-2511",
        "input": {"images": ["asset_x"]},
        "kind": "edit",
        **SENT,
    }
    assert job.time_limits == TimeLimits(run_s=30, total_s=600)
    assert client.get(job.id).time_limits == TimeLimits(run_s=30, total_s=600)


@pytest.mark.parametrize(
    ("limits", "sent"),
    [
        (TimeLimits(run_s=0.5), {"run_s": 0.5}),
        ({"total_s": 60}, {"total_s": 60}),
        ({"run_s": 10, "total_s": None}, {"run_s": 10}),
    ],
)
def test_time_limits_are_a_time_limits_or_a_mapping_and_send_only_what_is_given(
    fake: FakeServer, client: Client, limits: TimeLimitsInput, sent: dict[str, float]
) -> None:
    client.submit("qwen-edit-multiangle-2511", {"images": ["asset_x"]}, time_limits=limits)
    assert sent_json(fake, "POST", "/v1/jobs")["time_limits"] == sent


def test_without_them_no_webhook_or_time_limit_field_is_sent(fake: FakeServer, client: Client) -> None:
    job = client.edit("asset_1", azimuth=90, time_limits=TimeLimits(), wait=False)
    assert set(sent_json(fake, "POST", "/v1/jobs")) == {"model", "input", "kind"}
    assert job.time_limits is None


@pytest.mark.parametrize(
    "helper",
    [
        lambda client, extra: client.edit("asset_1", azimuth=90, **extra),
        lambda client, extra: client.orbit("asset_1", azimuths=[0, 90], **extra),
        lambda client, extra: client.generate("a fox", **extra),
    ],
    ids=["edit", "orbit", "generate"],
)
def test_edit_orbit_and_generate_send_the_webhook_and_time_limits(
    fake: FakeServer, client: Client, helper: Callable[[Client, dict[str, Any]], Job]
) -> None:
    job = helper(client, SUBMISSION)
    body = sent_json(fake, "POST", "/v1/jobs")
    assert {name: body[name] for name in SENT} == SENT
    assert job.status == "succeeded"
    assert job.time_limits == TimeLimits(run_s=30, total_s=600)


def test_a_batch_gives_every_job_the_webhook_and_time_limits(fake: FakeServer, client: Client) -> None:
    batch = client.batch(
        "qwen-edit-multiangle-2511", [{"images": ["asset_a"]}, {"images": ["asset_b"]}], **SUBMISSION
    )
    assert sent_json(fake, "POST", "/v1/batches") == {
        "model": "qwen-edit-multiangle-2511",
        "items": [{"input": {"images": ["asset_a"]}}, {"input": {"images": ["asset_b"]}}],
        **SENT,
    }
    assert [job.time_limits for job in batch.jobs] == [TimeLimits(run_s=30, total_s=600)] * 2


@pytest.mark.parametrize(
    ("limits", "problem"),
    [
        (
            {"run_s": 0},
            r"^time_limits\.run_s is 0: a time limit must be a positive, finite number of seconds",
        ),
        ({"total_s": -5}, r"^time_limits\.total_s is -5"),
        ({"run_s": math.nan}, r"^time_limits\.run_s is nan"),
        ({"total_s": math.inf}, r"^time_limits\.total_s is inf"),
        ({"run": 10}, r"^time_limits: unknown run; give run_s and/or total_s"),
    ],
)
def test_a_bad_time_limit_is_a_value_error_before_anything_is_uploaded(
    fake: FakeServer, client: Client, tmp_path: Path, limits: dict[str, float], problem: str
) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(PNG)
    with pytest.raises(ValueError, match=problem):
        client.edit(photo, azimuth=90, time_limits=limits)
    assert fake.requests == []


def test_time_limits_are_checked_before_anything_is_sent(fake: FakeServer, client: Client) -> None:
    with pytest.raises(ValueError, match=r"time_limits\.run_s is 0"):
        client.edit(PNG, azimuth=90, time_limits=TimeLimits(run_s=0))
    with pytest.raises(TypeError, match=r"time_limits\.total_s must be a number of seconds, not str"):
        client.edit(PNG, azimuth=90, time_limits=TimeLimits(total_s="60"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"time_limits\.run_s is 1000000.0: the server takes at most a week"):
        client.generate("a fox", time_limits={"run_s": 1e6})
    assert fake.requests == []  # refused here, not after the upload
    TimeLimits(run_s=7 * 24 * 3600).check()


def test_time_limits_read_back_are_taken_as_the_server_shows_them() -> None:
    bare = {"id": "j", "model": "m", "status": "queued", "created_at": "2026-01-01T00:00:00Z"}
    longer = Job.model_validate(bare | {"time_limits": {"total_s": 8 * 24 * 3600}})  # another server's limits
    assert longer.time_limits == TimeLimits(total_s=8 * 24 * 3600)


def test_webhook_events_need_a_url_and_a_list(fake: FakeServer, client: Client) -> None:
    with pytest.raises(ValueError, match="webhook_events needs webhook_url"):
        client.orbit(PNG, webhook_events=["progress"])
    with pytest.raises(TypeError, match=r"a list of event names, such as \['progress'\], not a text"):
        client.generate("a fox", webhook_url=HOOK, webhook_events="progress")
    assert fake.requests == []


def test_a_job_without_time_limits_in_its_json_has_none() -> None:
    bare = {"id": "j", "model": "m", "status": "queued", "created_at": "2026-01-01T00:00:00Z"}
    assert Job.model_validate(bare).time_limits is None
    shown = Job.model_validate(bare | {"time_limits": {"run_s": 5, "total_s": None, "from_the_future": 1}})
    assert shown.time_limits == TimeLimits(run_s=5)
    assert shown.model_dump(mode="json")["time_limits"] == {"run_s": 5, "total_s": None}


def test_webhook_secret(fake: FakeServer, client: Client) -> None:
    assert client.webhook_secret() == WebhookSecret(secret=WEBHOOK_SECRET, previous=None)
    assert [r.url.path for r in fake.requests] == ["/v1/webhook-secret"]
