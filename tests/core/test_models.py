from __future__ import annotations

import pytest

from reangle.core.jobs import JobKind
from reangle.core.models import CAMERA_EDIT, EIGHT_VIEWS, INSTRUCTION_EDIT, MODELS
from reangle.errors import InvalidInput


def validate(model: str, data: object, kind: JobKind = JobKind.EDIT):  # type: ignore[no-untyped-def]
    return MODELS[model].validate(kind, data)


def test_camera_edit_turns_continuous_fields_into_the_pose_and_defaults():
    (request,) = validate(
        CAMERA_EDIT, {"images": ["asset_a"], "horizontal_angle": 90, "zoom": 8}
    ).edit_requests()
    assert request.pose is not None
    assert request.pose.camera_phrase == "<sks> right side view eye-level shot close-up"
    assert (request.acceleration, request.num_outputs, request.lora_scale) == ("high", 1, 1.0)


def test_camera_edit_mixing_continuous_and_snapped_is_an_error():
    with pytest.raises(InvalidInput, match="azimuth"):
        validate(CAMERA_EDIT, {"images": ["a"], "horizontal_angle": 10, "azimuth": 45}).edit_requests()


def test_instruction_edit_needs_a_prompt_and_uses_no_pose():
    with pytest.raises(InvalidInput, match=r"input\.prompt"):
        validate(INSTRUCTION_EDIT, {"images": ["a"]})
    (request,) = validate(INSTRUCTION_EDIT, {"images": ["a"], "prompt": "make it snow"}).edit_requests()
    assert request.pose is None


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"images": []}, "input.images"),
        ({"images": ["a", "b", "c", "d"]}, "input.images"),
        ({"images": ["a"], "colour": "red"}, "input.colour"),
        ({"images": ["a"], "acceleration": "ludicrous"}, "input.acceleration"),
        ({"images": ["a"], "quality": 0}, "input.quality"),
        ({}, "input.images"),
    ],
)
def test_bad_inputs_name_the_field(data, field):  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput) as caught:
        validate(CAMERA_EDIT, data)
    assert caught.value.field == field
    assert caught.value.message.startswith(field)


def test_orbit_defaults_to_the_eight_views_at_one_elevation_and_distance():
    orbit = validate(CAMERA_EDIT, {"image": "a", "elevation": 30, "distance": 0.6}, JobKind.ORBIT)
    requests = orbit.edit_requests()
    assert [r.pose.azimuth_deg for r in requests if r.pose] == list(EIGHT_VIEWS)
    assert {r.pose.camera_phrase.split(" view ")[-1] for r in requests if r.pose} == {
        "elevated shot close-up"
    }


def test_only_the_camera_model_runs_orbits():
    with pytest.raises(InvalidInput, match="does not run orbit jobs"):
        validate(INSTRUCTION_EDIT, {"image": "a"}, JobKind.ORBIT)


def test_input_schema_documents_defaults():
    schema = MODELS[CAMERA_EDIT].input_schema()
    assert schema["properties"]["acceleration"]["default"] == "high"
    assert "images" in schema["required"]


def test_orbit_poses_name_any_path_in_either_parametrization():
    orbit = validate(
        CAMERA_EDIT,
        {
            "image": "a",
            "poses": [
                {"azimuth": 90, "elevation": 30},
                {"horizontal_angle": 200, "vertical_angle": 70, "zoom": 9},
                {"distance": 1.8},
            ],
        },
        JobKind.ORBIT,
    )
    assert [r.pose.camera_phrase for r in orbit.edit_requests() if r.pose] == [
        "<sks> right side view elevated shot medium shot",
        "<sks> back view high-angle shot close-up",
        "<sks> front view eye-level shot wide shot",
    ]


@pytest.mark.parametrize(
    ("poses_and_more", "field", "words"),
    [
        ({"poses": [{"azimuth": 90}], "elevation": 30}, "input.poses", "either poses or elevation"),
        ({"poses": [{"azimuth": 90}], "azimuths": [0]}, "input.poses", "either poses or azimuths"),
        ({"poses": []}, "input.poses", "at least 1"),
        ({"poses": [{"azimuth": 0}] * 17}, "input.poses", "at most 16"),
        ({"poses": [{"azimuth": 0}, {}]}, "input.poses.1", "at least one of"),
        ({"poses": [{"azimuth": 90, "horizontal_angle": 3}]}, "input.poses.0", "either horizontal_angle"),
        ({"poses": [{"vertical_angle": 100}]}, "input.poses.0", "vertical_angle must be between -90 and 90"),
        ({"poses": [{"zoom": "near"}]}, "input.poses.0.zoom", "valid number"),
        ({"poses": [{"tilt": 3}]}, "input.poses.0.tilt", "unknown field"),
    ],
)
def test_bad_orbit_poses_name_the_field(poses_and_more, field, words):  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput) as caught:
        validate(CAMERA_EDIT, {"image": "a", **poses_and_more}, JobKind.ORBIT)
    assert caught.value.field == field
    assert caught.value.message.startswith(f"{field}: ")
    assert words in caught.value.message


def test_a_stored_orbit_input_validates_again_to_the_same_views():
    for data in (
        {"image": "a", "poses": [{"azimuth": 90, "elevation": 30}]},
        {"image": "a", "azimuths": [45]},
    ):
        orbit = validate(CAMERA_EDIT, data, JobKind.ORBIT)
        stored = orbit.model_dump(mode="json")
        assert ("poses" in stored) == ("poses" in data)
        assert ("azimuths" in stored) == ("azimuths" in data)
        assert stored.get("poses") == data.get("poses")  # as given: no fields added
        again = validate(CAMERA_EDIT, stored, JobKind.ORBIT)
        assert again.poses_in_order() == orbit.poses_in_order()
