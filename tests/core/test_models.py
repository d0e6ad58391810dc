from __future__ import annotations

from dataclasses import replace

import pytest

from reangle.catalog import Limits, with_defaults
from reangle.core.camera import CameraPose
from reangle.core.edit import GENERATION_PRESETS, PRESETS
from reangle.core.jobs import JobKind
from reangle.core.models import (
    CAMERA_EDIT,
    EIGHT_VIEWS,
    INSTRUCTION_EDIT,
    MODELS,
    TEXT_TO_IMAGE,
    WAN_IMAGE,
    CameraEditInput,
    ModelSpec,
    check_vendor_images,
    prompt_excess,
    rendered,
)
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


@pytest.mark.parametrize(
    ("model", "kind", "data", "field"),
    [
        (CAMERA_EDIT, JobKind.EDIT, {"images": ["a"], "num_outputs": True}, "input.num_outputs"),
        (CAMERA_EDIT, JobKind.EDIT, {"images": ["a"], "horizontal_angle": False}, "input.horizontal_angle"),
        (CAMERA_EDIT, JobKind.EDIT, {"images": ["a"], "seed": True}, "input.seed"),
        (
            CAMERA_EDIT,
            JobKind.EDIT,
            {"images": ["a"], "loras": [{"id": "x", "scale": True}]},
            "input.loras.0.scale",
        ),
        (INSTRUCTION_EDIT, JobKind.EDIT, {"images": ["a"], "prompt": "p", "quality": True}, "input.quality"),
        (CAMERA_EDIT, JobKind.ORBIT, {"image": "a", "azimuths": [0, True]}, "input.azimuths"),
        (CAMERA_EDIT, JobKind.ORBIT, {"image": "a", "poses": [{"zoom": True}]}, "input.poses.0.zoom"),
        (TEXT_TO_IMAGE, JobKind.EDIT, {"prompt": "p", "width": True}, "input.width"),
        (WAN_IMAGE, JobKind.EDIT, {"prompt": "p", "num_outputs": False}, "input.num_outputs"),
    ],
)
def test_true_or_false_is_no_number(model, kind, data, field):  # type: ignore[no-untyped-def]
    """JSON booleans are refused where a number goes, by the field, instead of being read as 1 or 0."""
    with pytest.raises(InvalidInput) as caught:
        validate(model, data, kind)
    assert caught.value.field == field
    assert "true or false" in caught.value.message


def test_booleans_stay_booleans_and_numbers_numbers():
    validated = validate(
        CAMERA_EDIT, {"images": ["a"], "rewrite_prompt": True, "num_outputs": 2, "zoom": 1.5}
    )
    (request,) = validated.edit_requests()
    assert validated.rewrite_prompt is True
    assert (request.num_outputs, request.pose is not None) == (2, True)


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
        ({"azimuths": [0, 1]}, "input.azimuths", "0 and 1 snap to the same view, 0: give each view once"),
        (
            {"azimuths": [90, 45, 450, 44.5]},
            "input.azimuths",
            "90 and 450 snap to the same view, 90; 45 and 44.5",
        ),
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


# prompts once rendered -------------------------------------------------------------------------------------


def templated(model: str, template: str | None) -> ModelSpec:
    """The served model with another prompt template."""
    spec = MODELS[model]
    return replace(spec, entry=replace(spec.entry, prompt_template=template))


def test_an_entrys_limits_are_its_input_schemas_bounds():
    spec = MODELS[INSTRUCTION_EDIT]
    limited = replace(spec, entry=replace(spec.entry, limits=Limits(max_outputs=2, max_images=1)))
    properties = limited.input_schema()["properties"]
    assert properties["num_outputs"]["maximum"] == 2
    assert properties["num_outputs"]["description"] == "1..2 (this model's limit)"
    assert properties["images"]["maxItems"] == 1
    assert "maximum" not in spec.input_schema()["properties"]["num_outputs"]  # no limit: the model's own
    assert spec.input_schema()["properties"]["images"]["maxItems"] == 3


def test_rendered_puts_the_words_in_the_models_template_or_leaves_them():
    poster = templated(TEXT_TO_IMAGE, "{prompt}, travel poster")
    validated = poster.validate(JobKind.EDIT, {"prompt": "a lighthouse"})
    assert rendered(poster, validated) == "a lighthouse, travel poster"
    assert rendered(poster, validated, "a harbour at dusk") == "a harbour at dusk, travel poster"
    assert rendered(MODELS[TEXT_TO_IMAGE], validated) == "a lighthouse"


def test_a_prompt_that_passes_the_limit_once_in_the_template_is_refused_saying_by_how_much():
    suffix = ", " + "s" * 48  # the template adds 50 characters
    poster = templated(TEXT_TO_IMAGE, "{prompt}" + suffix)
    assert poster.validate(JobKind.EDIT, {"prompt": "p" * 1950}).prompt == "p" * 1950  # exactly 2,000
    with pytest.raises(InvalidInput) as caught:
        poster.validate(JobKind.EDIT, {"prompt": "p" * 1990})
    assert caught.value.field == "input.prompt"
    assert caught.value.message == (
        f"input.prompt: 1,990 characters become 2,040 in model {TEXT_TO_IMAGE}'s prompt template, 40 more "
        "than the model's limit of 2,000"
    )
    assert caught.value.hint == "shorten the prompt by 40 or more characters"


def test_an_edit_models_template_counts_too():
    styled = templated(INSTRUCTION_EDIT, "{prompt}" + "!" * 100)
    with pytest.raises(InvalidInput, match=r"input\.prompt: 1,901 characters become 2,001") as caught:
        styled.validate(JobKind.EDIT, {"images": ["a"], "prompt": "p" * 1901})
    assert caught.value.field == "input.prompt"


def test_an_image_sets_longest_shot_counts_and_is_named():
    spec = MODELS[TEXT_TO_IMAGE]
    words = "p" * 1975  # "<words>. close-up on the main subject" is 2,005; "<words>. medium shot" fits
    assert spec.validate(JobKind.EDIT, {"prompt": words, "image_set": True, "num_outputs": 2})
    with pytest.raises(InvalidInput) as caught:
        spec.validate(JobKind.EDIT, {"prompt": words, "image_set": True, "num_outputs": 3})
    assert caught.value.message == (
        "input.prompt: 1,975 characters become 2,005 with the image set's shot 'close-up on the main "
        "subject' added, 5 more than the model's limit of 2,000"
    )
    own_shots = {"prompt": words, "image_set": True, "set_prompts": ["dusk", "a" * 30, "dawn"]}
    with pytest.raises(InvalidInput, match=r"2,007 with set_prompts\.1 added, 7 more") as caught:
        spec.validate(JobKind.EDIT, own_shots)
    assert caught.value.field == "input.prompt"


def test_wan_takes_its_own_longer_limit_in_a_template():
    wan = templated(WAN_IMAGE, "{prompt}, " + "w" * 98)
    assert wan.validate(JobKind.EDIT, {"prompt": "p" * 4900}).prompt == "p" * 4900  # 5,000 once rendered
    with pytest.raises(
        InvalidInput, match=r"5,001 in model wan-2\.7-image's prompt template, 1 more .* 5,000"
    ):
        wan.validate(JobKind.EDIT, {"prompt": "p" * 4901})


def test_prompt_excess_of_other_words_is_what_the_runner_asks_of_a_rewrite():
    poster = templated(TEXT_TO_IMAGE, "{prompt}, travel poster")  # adds 15 characters
    validated = poster.validate(JobKind.EDIT, {"prompt": "a lighthouse"})
    assert prompt_excess(poster, validated) is None
    assert prompt_excess(poster, validated, "r" * 1985) is None
    excess = prompt_excess(poster, validated, "r" * 1986)
    assert excess is not None
    assert (excess.words, excess.length, excess.limit, excess.excess) == (1986, 2001, 2000, 1)


def test_each_set_prompt_is_limited_on_its_own():
    with pytest.raises(InvalidInput) as caught:
        MODELS[TEXT_TO_IMAGE].validate(
            JobKind.EDIT, {"prompt": "a", "image_set": True, "set_prompts": ["dusk", "s" * 2001]}
        )
    assert caught.value.field == "input.set_prompts.1"
    assert "2000" in caught.value.message


def test_set_prompts_and_a_num_outputs_that_disagrees_is_refused_naming_num_outputs():
    data = {"prompt": "a lighthouse", "image_set": True, "set_prompts": ["dusk", "dawn"]}
    with pytest.raises(
        InvalidInput, match=r"set_prompts makes one image each \(2\), but num_outputs is 3"
    ) as caught:
        MODELS[TEXT_TO_IMAGE].validate(JobKind.EDIT, {**data, "num_outputs": 3})
    assert caught.value.field == "input.num_outputs"
    assert len(MODELS[TEXT_TO_IMAGE].validate(JobKind.EDIT, {**data, "num_outputs": 2}).set_shots()) == 2
    assert len(MODELS[TEXT_TO_IMAGE].validate(JobKind.EDIT, data).set_shots()) == 2


def test_a_stored_input_from_before_num_outputs_had_to_match_set_prompts_still_runs_them_all():
    spec = MODELS[TEXT_TO_IMAGE]
    legacy = {
        "prompt": "a lighthouse",
        "image_set": True,
        "set_prompts": ["dusk", "dawn", "noon"],
        "num_outputs": 1,
    }
    with pytest.raises(InvalidInput, match="num_outputs is 1"):
        spec.validate(JobKind.EDIT, legacy)
    assert spec.validate_stored(JobKind.EDIT, legacy).num_outputs == 3
    stored = spec.validate(JobKind.EDIT, {"prompt": "a lighthouse", "num_outputs": 4}).model_dump(mode="json")
    assert stored["set_prompts"] is None
    assert spec.validate_stored(JobKind.EDIT, stored).num_outputs == 4


@pytest.mark.parametrize(
    ("model", "given", "presets"),
    [(CAMERA_EDIT, {"images": ["a"]}, PRESETS), (TEXT_TO_IMAGE, {"prompt": "a fox"}, GENERATION_PRESETS)],
)
def test_the_input_schema_describes_the_steps_and_aspect_ratios_the_model_takes(model, given, presets):  # type: ignore[no-untyped-def]
    properties = MODELS[model].input_schema()["properties"]
    assert f"none: base model, {presets['none'].steps} steps" in properties["acceleration"]["description"]
    for ratio in properties["aspect_ratio"]["description"].split():
        validate(model, {**given, "aspect_ratio": ratio})  # each one listed is taken


def test_a_camera_axis_the_request_gives_wins_over_the_catalog_default_of_its_other_field() -> None:
    top_down = with_defaults(CameraEditInput, {"elevation": 60, "distance": 1.8}, name="TopDownInput")
    image = {"images": ["asset_1"]}

    assert top_down.model_validate(image).pose() == CameraPose(
        azimuth_deg=0, elevation_deg=60, distance_factor=1.8
    )
    # vertical_angle and zoom give the axes whose snapped fields have defaults
    assert top_down.model_validate(image | {"vertical_angle": 20, "zoom": 8}).pose() == CameraPose(
        azimuth_deg=0, elevation_deg=30, distance_factor=0.6
    )
    with pytest.raises(InvalidInput, match="either vertical_angle or elevation"):
        top_down.model_validate(image | {"vertical_angle": 20, "elevation": 0}).pose()


def test_a_stored_camera_input_whose_request_overrode_a_catalog_default_validates_again_as_it_did() -> None:
    """The runner validates the stored dump again: the default beside the request's field would read as both
    fields given."""
    top_down = with_defaults(CameraEditInput, {"elevation": 60, "distance": 1.8}, name="TopDownInput")
    asked = top_down.model_validate({"images": ["asset_1"], "vertical_angle": 20})
    stored = asked.model_dump(mode="json")
    assert (stored["vertical_angle"], stored["elevation"], stored["distance"]) == (20, None, 1.8)
    assert (
        top_down.model_validate(stored).pose()
        == asked.pose()
        == CameraPose(azimuth_deg=0, elevation_deg=30, distance_factor=1.8)
    )


@pytest.mark.parametrize(
    ("size", "said"),
    [
        ((2400, 240), "2400x240, wider than the 1:8 to 8:1"),
        ((240, 2400), "240x2400, taller than the 1:8 to 8:1"),
    ],
)
def test_a_wan_input_image_out_of_shape_is_said_to_be_wider_or_taller(
    size: tuple[int, int], said: str
) -> None:
    with pytest.raises(InvalidInput, match=said) as caught:
        check_vendor_images([(1000, 1000, 1000), (*size, 1000)])
    assert caught.value.field == "input.images.1"
