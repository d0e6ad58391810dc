"""The SDK's text-to-image (`generate`), `rewrite_prompt` and `loras` (with `Lora`), and the rewrite record
of a job, against the FakeServer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from reangle.client import (
    TEXT_TO_IMAGE_MODEL,
    WAN_IMAGE_MODEL,
    AsyncClient,
    Client,
    Job,
    Lora,
    ProgressEvent,
    PromptRewrite,
)
from tests.client.fakes import API, API_KEY, FakeServer

PNG = b"\x89PNG\r\n\x1a\n" + b"pretend pixels"


@pytest.fixture
def fake() -> FakeServer:
    return FakeServer()


@pytest.fixture
def client(fake: FakeServer) -> Iterator[Client]:
    with Client(API, API_KEY, transport=fake.transport(), poll_interval=0.01) as client:
        yield client


def submitted(fake: FakeServer, index: int = 0) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(fake.requests_to("POST", "/v1/jobs")[index].content)
    return body


def test_generate_submits_a_text_to_image_job_with_only_the_fields_given(
    fake: FakeServer, client: Client
) -> None:
    events: list[float] = []
    job = client.generate(
        "a lighthouse at dusk",
        size="1K",
        num_outputs=2,
        seed=5,
        negative_prompt="fog",
        guidance_scale=4.0,
        on_progress=lambda event: events.append(event.progress) if isinstance(event, ProgressEvent) else None,
    )
    assert submitted(fake) == {
        "model": TEXT_TO_IMAGE_MODEL,
        "kind": "edit",
        "input": {
            "prompt": "a lighthouse at dusk",
            "size": "1K",
            "num_outputs": 2,
            "seed": 5,
            "negative_prompt": "fog",
            "guidance_scale": 4.0,
        },
    }
    assert job.status == "succeeded"
    assert [asset.role for asset in job.assets] == ["image", "image"]
    assert events[-1] == 1.0
    assert job.rewrite is None
    assert client.download(job.assets[1]) == fake.blobs[job.assets[1].id]


def test_a_plain_generate_sends_the_prompt_alone(fake: FakeServer, client: Client) -> None:
    job = client.generate("a cat", wait=False)
    assert job.status == "queued"
    assert submitted(fake)["input"] == {"prompt": "a cat"}


def test_set_prompts_make_an_image_set(fake: FakeServer, client: Client) -> None:
    job = client.generate("a red bicycle", set_prompts=["from the front", "from above"], seed=3)
    assert submitted(fake)["input"] == {
        "prompt": "a red bicycle",
        "seed": 3,
        "image_set": True,
        "set_prompts": ["from the front", "from above"],
    }
    assert len(job.assets) == 2
    client.generate("a red bicycle", image_set=True, num_outputs=4)
    assert submitted(fake, 1)["input"] == {"prompt": "a red bicycle", "num_outputs": 4, "image_set": True}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"set_prompts": ["front", "back", "top"], "num_outputs": 2},
            "set_prompts has 3 texts, one image each, but num_outputs is 2; leave num_outputs out or "
            "make it 3",
        ),
        ({"set_prompts": []}, "set_prompts is empty"),
        ({"set_prompts": ["front"], "image_set": False}, "set_prompts make an image set"),
    ],
)
def test_set_prompts_that_disagree_are_refused_before_anything_is_sent(
    fake: FakeServer, client: Client, arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        client.generate("a cat", images=[PNG], **arguments)
    assert fake.requests == []


def test_a_single_text_as_set_prompts_is_refused_rather_than_split_into_letters(
    fake: FakeServer, client: Client
) -> None:
    with pytest.raises(TypeError, match="set_prompts must be a list of texts"):
        client.generate("a cat", set_prompts="from the front")
    assert fake.requests == []


def test_set_prompts_that_agree_with_num_outputs_are_sent(fake: FakeServer, client: Client) -> None:
    client.generate("a cat", set_prompts=["front", "back"], num_outputs=2)
    assert submitted(fake)["input"] == {
        "prompt": "a cat",
        "num_outputs": 2,
        "image_set": True,
        "set_prompts": ["front", "back"],
    }


def test_the_image_set_field_comes_from_the_models_schema_read_once_per_client(
    fake: FakeServer, client: Client
) -> None:
    client.generate("a cat", model=WAN_IMAGE_MODEL, image_set=True, num_outputs=2)
    client.generate("a dog", model=WAN_IMAGE_MODEL, image_set=False)
    assert submitted(fake, 0)["input"] == {"prompt": "a cat", "num_outputs": 2, "image_set_mode": True}
    assert submitted(fake, 1)["input"] == {"prompt": "a dog", "image_set_mode": False}
    assert len(fake.requests_to("GET", f"/v1/models/{WAN_IMAGE_MODEL}")) == 1
    assert "thinking_mode" in client.input_schema(WAN_IMAGE_MODEL)["properties"]
    assert len(fake.requests_to("GET", f"/v1/models/{WAN_IMAGE_MODEL}")) == 1


@pytest.mark.parametrize(
    ("model", "arguments", "message"),
    [
        ("qwen-edit-multiangle-2511", {"image_set": True}, "makes no image sets"),
        (WAN_IMAGE_MODEL, {"set_prompts": ["front"]}, "takes no set_prompts"),
    ],
)
def test_an_image_set_a_model_cannot_make_is_refused_before_a_job_is_queued(
    fake: FakeServer, client: Client, model: str, arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=f"model {model} {message}"):
        client.generate("a cat", model=model, **arguments)
    assert fake.requests_to("POST", "/v1/jobs") == []


def test_image_set_false_for_a_model_without_sets_sends_no_set_field(
    fake: FakeServer, client: Client
) -> None:
    client.generate("a cat", model="qwen-edit-multiangle-2511", image_set=False)
    assert submitted(fake)["input"] == {"prompt": "a cat"}


def test_wan_takes_reference_images_uploaded_first_and_names_its_image_set_its_own_way(
    fake: FakeServer, client: Client
) -> None:
    client.generate(
        "the two of them at the beach",
        model=WAN_IMAGE_MODEL,
        images=[PNG, "https://example.com/b.jpg"],
        image_set=True,
        num_outputs=3,
        thinking_mode=False,
    )
    (upload,) = fake.requests_to("POST", "/v1/assets")
    uploaded = next(asset_id for asset_id, blob in fake.blobs.items() if blob == PNG)
    assert PNG in upload.content
    assert submitted(fake) == {
        "model": WAN_IMAGE_MODEL,
        "kind": "edit",
        "input": {
            "prompt": "the two of them at the beach",
            "images": [uploaded, "https://example.com/b.jpg"],
            "num_outputs": 3,
            "image_set_mode": True,
            "thinking_mode": False,
        },
    }


def test_edit_sends_rewrite_prompt_and_loras_and_the_job_says_what_the_rewriter_made(
    fake: FakeServer, client: Client
) -> None:
    job = client.edit(
        "asset_1",
        prompt="add snow",
        horizontal_angle=90,
        rewrite_prompt=True,
        loras=[Lora(url="https://example.com/style.safetensors", scale=0.8), {"id": "house", "scale": 0.5}],
    )
    assert submitted(fake)["input"] == {
        "images": ["asset_1"],
        "prompt": "add snow",
        "horizontal_angle": 90,
        "rewrite_prompt": True,
        "loras": [
            {"url": "https://example.com/style.safetensors", "scale": 0.8},
            {"id": "house", "scale": 0.5},
        ],
    }
    assert job.rewrite == PromptRewrite(
        original_prompt="add snow", prompt="add snow (precisely)", rewritten=True, seconds=0.5
    )
    assert job.assets[0].plan is not None
    assert job.assets[0].plan["prompt"] == "<sks> add snow (precisely)"


def test_edit_without_rewrite_or_loras_sends_neither_field(fake: FakeServer, client: Client) -> None:
    client.edit("asset_1", prompt="add snow", loras=[])
    assert submitted(fake)["input"] == {"images": ["asset_1"], "prompt": "add snow"}


def test_booleans_given_as_false_are_sent_so_they_win_over_a_models_default(
    fake: FakeServer, client: Client
) -> None:
    client.edit("asset_1", prompt="add snow", rewrite_prompt=False)
    client.generate("a cat", image_set=False, rewrite_prompt=False)
    client.orbit("asset_1", rewrite_prompt=False)
    assert submitted(fake, 0)["input"]["rewrite_prompt"] is False
    assert submitted(fake, 1)["input"] == {"prompt": "a cat", "image_set": False, "rewrite_prompt": False}
    assert submitted(fake, 2)["input"]["rewrite_prompt"] is False


def test_a_refused_rewrite_is_reported_as_a_fallback(fake: FakeServer, client: Client) -> None:
    job = client.generate("[refuse] a cat", rewrite_prompt=True)
    assert submitted(fake)["input"] == {"prompt": "[refuse] a cat", "rewrite_prompt": True}
    rewrite = job.assets[0].rewrite
    assert rewrite is not None
    assert (rewrite.rewritten, rewrite.prompt, rewrite.fallback_reason) == (
        False,
        "[refuse] a cat",
        "refused",
    )


def test_orbit_sends_rewrite_and_loras_and_only_the_views_carry_the_rewrite(
    fake: FakeServer, client: Client
) -> None:
    job = client.orbit(
        "asset_1",
        azimuths=[0, 90],
        prompt="at night",
        rewrite_prompt=True,
        loras=[Lora(path="a.safetensors")],
    )
    sent = submitted(fake)["input"]
    assert (sent["rewrite_prompt"], sent["loras"]) == (True, [{"path": "a.safetensors", "scale": 1.0}])
    assert [asset.rewrite is not None for asset in job.assets] == [True, True, False, False]
    assert job.rewrite is not None
    assert job.rewrite.prompt == "at night (precisely)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "https://example.com/style.safetensors",
            {"url": "https://example.com/style.safetensors", "scale": 1.0},
        ),
        (
            "https://example.com/style.safetensors:0.8",
            {"url": "https://example.com/style.safetensors", "scale": 0.8},
        ),
        ("https://host:8080/a/b.safetensors", {"url": "https://host:8080/a/b.safetensors", "scale": 1.0}),
        ("https://host:8080/b.safetensors:-1.5", {"url": "https://host:8080/b.safetensors", "scale": -1.5}),
        ("https://host:8080", {"url": "https://host:8080", "scale": 1.0}),
        ("id:house-style", {"id": "house-style", "scale": 1.0}),
        ("id:house-style:0.5", {"id": "house-style", "scale": 0.5}),
        ("id:3", {"id": "3", "scale": 1.0}),
        ("loras/style.safetensors:2", {"path": "loras/style.safetensors", "scale": 2.0}),
        ("my:style.safetensors", {"path": "my:style.safetensors", "scale": 1.0}),
    ],
)
def test_lora_parse_takes_only_a_trailing_number_as_the_scale(text: str, expected: dict[str, Any]) -> None:
    assert Lora.parse(text).to_json() == expected


@pytest.mark.parametrize("text", ["", "id:", ":0.5", "id::2"])
def test_lora_parse_refuses_text_that_names_no_lora(text: str) -> None:
    with pytest.raises(ValueError, match="names no LoRA"):
        Lora.parse(text)


def test_a_lora_names_exactly_one_source(fake: FakeServer, client: Client) -> None:
    with pytest.raises(ValueError, match="exactly one of url, path or id"):
        Lora(url="https://example.com/a.safetensors", id="a")
    with pytest.raises(ValueError, match="not none"):
        Lora(scale=0.5)
    with pytest.raises(TypeError, match="not a single one"):
        client.edit("asset_1", loras=Lora(id="a"))  # type: ignore[arg-type]
    assert fake.requests_to("POST", "/v1/jobs") == []


def test_async_generate_and_edit_send_what_the_sync_client_sends() -> None:
    fake = FakeServer()

    async def scenario() -> tuple[Job, Job]:
        async with AsyncClient(API, API_KEY, transport=fake.transport(), poll_interval=0.01) as client:
            made = await client.generate(
                "a cat", images=[PNG], model=WAN_IMAGE_MODEL, seed=9, image_set=False
            )
            edited = await client.edit(
                "asset_1", prompt="paint it", rewrite_prompt=True, loras=[Lora(id="x")]
            )
            refused = "set_prompts has 1 text, one image each, but num_outputs is 2"
            with pytest.raises(ValueError, match=refused):
                await client.generate("a cat", set_prompts=["front"], num_outputs=2)
            return made, edited

    made, edited = asyncio.run(scenario())
    assert made.status == "succeeded"
    assert submitted(fake, 0)["input"] == {
        "prompt": "a cat",
        "images": ["asset_1"],
        "seed": 9,
        "image_set_mode": False,
    }
    assert len(fake.requests_to("POST", "/v1/jobs")) == 2
    assert submitted(fake, 1)["input"] == {
        "images": ["asset_1"],
        "prompt": "paint it",
        "rewrite_prompt": True,
        "loras": [{"id": "x", "scale": 1.0}],
    }
    assert edited.rewrite is not None
    assert edited.rewrite.rewritten
