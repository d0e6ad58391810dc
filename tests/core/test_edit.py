from __future__ import annotations

import math

import pytest

from reangle.core.camera import CameraPose
from reangle.core.edit import ANGLES, LIGHTNING_4STEP, LIGHTNING_8STEP, EditRequest, SizeLimits, plan_edit
from reangle.errors import InvalidInput

QWEN = SizeLimits(min_side=256, max_side=2048)
ONE_MP = 1024 * 1024


def plan(request: EditRequest, *sizes: tuple[int, int]):  # type: ignore[no-untyped-def]
    return plan_edit(request, list(sizes) or [(1024, 1024)], limits=QWEN, target_area=ONE_MP)


@pytest.mark.parametrize(
    ("input_size", "output_size"),
    [
        ((1024, 1024), (1024, 1024)),
        ((512, 512), (1024, 1024)),
        ((1920, 1080), (1376, 768)),
        ((1080, 1920), (768, 1376)),
        ((800, 600), (1184, 896)),
        ((4000, 3000), (1184, 896)),
        ((1000, 333), (1760, 576)),
    ],
)
def test_default_size_keeps_the_aspect_of_the_input_at_one_megapixel(input_size, output_size):  # type: ignore[no-untyped-def]
    result = plan(EditRequest(), input_size)
    assert (result.width, result.height) == output_size


def test_the_last_input_image_sets_the_default_aspect():
    result = plan(EditRequest(), (1024, 1024), (1920, 1080))
    assert (result.width, result.height) == (1376, 768)


def test_target_area_is_configurable():
    result = plan_edit(EditRequest(), [(1000, 1000)], limits=QWEN, target_area=512 * 512)
    assert (result.width, result.height) == (512, 512)


def test_explicit_size_is_floored_to_multiples_of_16():
    result = plan(EditRequest(width=1000, height=700))
    assert (result.width, result.height) == (992, 688)


def test_one_explicit_side_derives_the_other_from_the_input_aspect():
    result = plan(EditRequest(width=800), (1600, 900))
    assert (result.width, result.height) == (800, 448)


@pytest.mark.parametrize(
    ("ratio", "expected"),
    [
        ("1:1", (1024, 1024)),
        ("16:9", (1376, 768)),
        ("9:16", (768, 1376)),
        ("21:9", (1568, 672)),
        ("3:4", (896, 1184)),
    ],
)
def test_aspect_ratio_presets(ratio, expected):  # type: ignore[no-untyped-def]
    result = plan(EditRequest(aspect_ratio=ratio), (500, 500))
    assert (result.width, result.height) == expected


def test_match_input_is_the_default_aspect():
    assert plan(EditRequest(aspect_ratio="match_input"), (1920, 1080)).width == 1376


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (EditRequest(width=240, height=512), "width"),
        (EditRequest(width=512, height=2100), "height"),
        (EditRequest(width=512, height=512, aspect_ratio="1:1"), "aspect_ratio"),
        (EditRequest(aspect_ratio="7:5"), "aspect_ratio"),
        (EditRequest(num_outputs=0), "num_outputs"),
        (EditRequest(num_outputs=5), "num_outputs"),
        (EditRequest(steps=0), "num_inference_steps"),
        (EditRequest(steps=101), "num_inference_steps"),
        (EditRequest(guidance_scale=math.nan), "guidance_scale"),
        (EditRequest(guidance_scale=25), "guidance_scale"),
        (EditRequest(lora_scale=-0.1), "lora_scale"),
        (EditRequest(seed=-1), "seed"),
        (EditRequest(acceleration="turbo"), "acceleration"),  # type: ignore[arg-type]
    ],
)
def test_bad_requests_name_the_field(request_, field):  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput) as caught:
        plan(request_)
    assert caught.value.field == field
    assert caught.value.message


def test_extreme_input_aspect_is_a_clear_error_with_a_hint():
    with pytest.raises(InvalidInput, match="from the aspect ratio 10000x100") as caught:
        plan(EditRequest(), (10000, 100))
    assert caught.value.hint


@pytest.mark.parametrize("count", [0, 4])
def test_one_to_three_input_images(count):  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput, match="1 to 3 input images"):
        plan_edit(EditRequest(), [(64, 64)] * count, limits=QWEN, target_area=ONE_MP)


def test_high_acceleration_is_the_default_four_step_lightning_preset():
    result = plan(EditRequest(pose=CameraPose(azimuth_deg=90), lora_scale=0.9))
    assert result.steps == 4
    assert result.scheduler == "lightning"
    assert result.true_cfg_scale == 1.0
    assert result.negative_prompt is None
    assert [(lora.adapter, lora.weight) for lora in result.loras] == [(LIGHTNING_4STEP, 1.0), (ANGLES, 0.9)]


def test_regular_acceleration_uses_the_eight_step_lora():
    result = plan(EditRequest(acceleration="regular"))
    assert (result.steps, result.loras[0].adapter) == (8, LIGHTNING_8STEP)


def test_no_acceleration_is_the_base_model_with_true_cfg_and_a_blank_negative_prompt():
    result = plan(EditRequest(acceleration="none", steps=28, guidance_scale=4.5))
    assert (result.steps, result.true_cfg_scale, result.negative_prompt) == (28, 4.5, " ")
    assert result.scheduler == "default"
    assert [lora.adapter for lora in result.loras] == [ANGLES]
    assert plan(EditRequest(acceleration="none")).steps == 40


def test_guidance_above_one_turns_true_cfg_on_even_with_lightning():
    result = plan(EditRequest(guidance_scale=1.2))
    assert (result.true_cfg_scale, result.negative_prompt) == (1.2, " ")


def test_the_prompt_is_the_camera_phrase_then_the_instruction():
    result = plan(
        EditRequest(
            pose=CameraPose(azimuth_deg=90, elevation_deg=30, distance_factor=0.6), prompt=" at dusk "
        )
    )
    assert result.prompt == "<sks> right side view elevated shot close-up at dusk"


def test_an_edit_without_a_pose_uses_no_angle_lora_and_the_bare_instruction():
    result = plan(EditRequest(pose=None, prompt="make it snow"))
    assert result.prompt == "make it snow"
    assert ANGLES not in [lora.adapter for lora in result.loras]


def test_the_seed_is_kept_when_given_and_absent_otherwise():
    assert plan(EditRequest(seed=7)).seed == 7
    assert plan(EditRequest()).seed is None
