"""A catalog entry's camera defaults, image limit and output count as the Scenario and OpenAI dialects
translate them: a dialect's own default never overrides the catalog's. Pure translations against the catalog
installed in this process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reangle.core.jobs import JobKind
from reangle.core.models import CameraEditInput
from reangle.core.service import model_spec
from reangle.dialects.openai_schemas import translate, translate_generation
from reangle.dialects.scenario_schemas import scenario_model, translate_request
from reangle.errors import InvalidInput
from tests.dialects.conftest import served_catalog

CATALOG = """
[[model]]
id = "high-angle"
description = "The scene from above unless asked otherwise"
task = "camera_edit"
engine = "qwen-edit"
base = "Qwen/Qwen-Image-Edit-2511"
defaults = { elevation = 60, distance = 1.8 }

[[model]]
id = "one-image"
description = "Instruction edits of one image, two outputs by default"
task = "instruction_edit"
engine = "qwen-edit"
base = "Qwen/Qwen-Image-Edit-2511"
defaults = { num_outputs = 2 }
limits = { max_images = 1 }

[[model]]
id = "pairs"
description = "Text-to-image, two outputs by default"
task = "text_to_image"
engine = "qwen-image"
base = "Qwen/Qwen-Image-2512"
defaults = { num_outputs = 2 }
"""
HIGH_ANGLE = "model_high-angle"
ONE_IMAGE = "model_one-image"


@pytest.fixture(autouse=True)
def installed(tmp_path: Path) -> Iterator[None]:
    """The catalog served by this process while the test runs; the shipped one again after."""
    with served_catalog(CATALOG, tmp_path):
        yield


def camera_input(native: dict[str, object]) -> CameraEditInput:
    validated = model_spec("high-angle").validate(JobKind.EDIT, native)
    assert isinstance(validated, CameraEditInput)
    return validated


def test_scenario_sends_no_default_of_its_own_on_an_axis_the_catalog_gives_by_its_other_field() -> None:
    model, native = translate_request(HIGH_ANGLE, {"images": ["asset_x"]})
    assert model == "high-angle"
    assert "vertical_angle" not in native  # Scenario's 0 would override the catalog's elevation 60
    assert "zoom" not in native  # nor its 5 the catalog's distance 1.8
    assert native["horizontal_angle"] == 0  # an axis the catalog leaves alone keeps Scenario's default
    pose = camera_input(native).pose()
    assert (pose.elevation_deg, pose.distance_factor) == (60, 1.8)


def test_a_scenario_request_that_gives_the_axis_still_sends_it() -> None:
    _, native = translate_request(HIGH_ANGLE, {"images": ["asset_x"], "verticalAngle": 30, "zoom": 0})
    assert (native["vertical_angle"], native["zoom"]) == (30, 0)
    assert camera_input(native).pose().elevation_deg == 30


def test_the_scenario_listing_describes_the_model_s_own_default_of_that_axis() -> None:
    inputs = {spec["name"]: spec for spec in scenario_model(HIGH_ANGLE).to_json()["inputs"]}
    assert "default" not in inputs["verticalAngle"]
    assert inputs["verticalAngle"]["description"].endswith("; default: this model's elevation 60")
    assert "default" not in inputs["zoom"]
    assert inputs["zoom"]["description"].endswith("; default: this model's distance 1.8")
    assert inputs["horizontalAngle"]["default"] == 0


def test_the_scenario_listing_caps_images_by_the_catalog_s_max_images_and_so_does_a_request() -> None:
    inputs = {spec["name"]: spec for spec in scenario_model(ONE_IMAGE).to_json()["inputs"]}
    assert inputs["images"]["max"] == 1
    with pytest.raises(InvalidInput) as caught:
        translate_request(ONE_IMAGE, {"images": ["asset_a", "asset_b"], "prompt": "add a hat"})
    assert caught.value.field == "images"
    assert caught.value.message == "images takes 1 to 1 images, got 2"


def test_openai_edits_without_n_leave_the_count_to_the_model_s_default() -> None:
    call = translate({"model": "one-image", "prompt": "add a hat"}, ["asset_x"])
    assert "num_outputs" not in call.input
    assert model_spec(call.model).validate(JobKind.EDIT, call.input).model_dump()["num_outputs"] == 2
    given = translate({"model": "one-image", "prompt": "add a hat", "n": "1"}, ["asset_x"])
    assert given.input["num_outputs"] == 1


def test_openai_generations_without_n_leave_the_count_to_the_model_s_default() -> None:
    call = translate_generation({"model": "pairs", "prompt": "a lighthouse"})
    assert "num_outputs" not in call.input
    assert model_spec(call.model).validate(JobKind.EDIT, call.input).model_dump()["num_outputs"] == 2
