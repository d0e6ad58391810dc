from __future__ import annotations

import math
from pathlib import Path

import pytest

from reangle.core.camera import CameraPose
from reangle.core.edit import (
    ANGLES,
    LIGHTNING_4STEP,
    LIGHTNING_8STEP,
    MAX_PROMPT_CHARS,
    EditRequest,
    GenerateRequest,
    LoraUse,
    SizeLimits,
    elongation_limit,
    plan_edit,
    plan_generation,
)
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


def test_an_input_image_too_wide_for_any_output_size_blames_the_image_not_a_width_never_sent():
    with pytest.raises(InvalidInput) as caught:
        plan(EditRequest(), (20000, 1))
    assert caught.value.message.startswith(
        "the input image's aspect ratio (20000x1) is too extreme for this model's output sizes"
    )
    assert caught.value.field == "images"
    assert caught.value.hint == "crop the image closer to square, or give the output size explicitly"


def test_an_input_the_pipeline_would_scale_to_no_pixels_is_refused_naming_it():
    """At 64x64 pixels a 16:1 image is 256x16, and a side of 16 rounds to no multiple of 32."""
    limits = SizeLimits(min_side=16, max_side=1024, max_input_ratio=elongation_limit(64 * 64))
    assert limits.max_input_ratio == 16
    sizes = [(64, 64), (100, 1600)]
    with pytest.raises(InvalidInput) as caught:
        plan_edit(EditRequest(), sizes, limits=limits, target_area=64 * 64)
    assert caught.value.field == "input.images.1"
    assert caught.value.message == (
        "input.images.1 is 100x1600, too elongated for this model: its sides must be less than 16 times one "
        "another"
    )
    assert caught.value.hint == "crop the image closer to square"
    plan_edit(EditRequest(), [(64, 64), (100, 1599)], limits=limits, target_area=64 * 64)


def test_a_side_that_follows_from_the_input_image_names_both_causes():
    with pytest.raises(InvalidInput) as caught:
        plan(EditRequest(width=1024), (10000, 100))
    assert caught.value.message.startswith(
        "height would be 10, from the width asked for and the input image's aspect ratio (10000x100)"
    )
    assert caught.value.field == "height"
    assert caught.value.hint == "give the output's height as well, or crop the image closer to square"


def test_a_generated_side_that_follows_from_the_aspect_ratio_says_so():
    with pytest.raises(InvalidInput) as caught:
        generation(prompt="x", width=2048, aspect_ratio="9:16")
    assert caught.value.message.startswith("height would be 3641, from the other side asked for and the ")
    assert "aspect ratio 9:16" in caught.value.message
    assert (caught.value.field, caught.value.hint) == (
        "height",
        "give the output's height as well, or another aspect ratio",
    )


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


STYLE = LoraUse(adapter="lora_0123456789abcdef", weight=0.7, path=Path("/srv/cache/loras/style.safetensors"))


def test_a_requests_own_loras_run_after_the_models_and_the_plan_shows_no_path():
    result = plan(EditRequest(pose=CameraPose(azimuth_deg=90), extra_loras=(STYLE,)))
    assert [lora.adapter for lora in result.loras] == [LIGHTNING_4STEP, ANGLES, STYLE.adapter]
    assert result.loras[-1].path == STYLE.path
    assert result.to_dict()["loras"][-1] == {"adapter": STYLE.adapter, "weight": 0.7}
    assert "/srv" not in str(result.to_dict())


@pytest.mark.parametrize(
    "extras",
    [
        (STYLE, STYLE),
        (LoraUse(adapter="lora_x", weight=math.inf, path=Path("x.safetensors")),),
        (LoraUse(adapter="lora_x", weight=-4.5, path=Path("x.safetensors")),),
    ],
)
def test_a_lora_twice_or_at_a_strength_out_of_range_is_refused(extras):  # type: ignore[no-untyped-def]
    for make in (lambda: plan(EditRequest(extra_loras=extras)), lambda: generation(extra_loras=extras)):
        with pytest.raises(InvalidInput) as caught:
            make()
        assert caught.value.field == "loras"


# text-to-image ----------------------------------------------------------------------------------------------


def generation(**fields):  # type: ignore[no-untyped-def]
    fields.setdefault("prompt", "a lighthouse at dawn")
    return plan_generation(GenerateRequest(**fields), limits=QWEN, target_area=ONE_MP)


@pytest.mark.parametrize(
    ("fields", "size"),
    [
        ({}, (1024, 1024)),
        ({"aspect_ratio": "16:9"}, (1360, 768)),
        ({"size": "1K"}, (1024, 1024)),
        ({"size": "1k", "aspect_ratio": "9:16"}, (768, 1360)),
        ({"size": "2K"}, (2048, 2048)),
        ({"size": "2K", "aspect_ratio": "16:9"}, (2048, 1152)),  # scaled down whole to the longest side
        ({"size": "2K", "aspect_ratio": "21:9"}, (2048, 864)),
        ({"size": "1328x1328"}, (1328, 1328)),
        ({"size": "1664*928"}, (1664, 928)),
        ({"size": " 1000 x 700 "}, (992, 688)),
        ({"width": 1000, "height": 700}, (992, 688)),
        ({"width": 800}, (800, 800)),
        ({"width": 1600, "aspect_ratio": "16:9"}, (1600, 896)),
        ({"height": 900, "aspect_ratio": "3:2"}, (1344, 896)),
    ],
)
def test_generation_sizes(fields, size):  # type: ignore[no-untyped-def]
    result = generation(**fields)
    assert (result.width, result.height) == size


def test_the_default_generation_size_is_the_target_area():
    result = plan_generation(GenerateRequest(prompt="x"), limits=QWEN, target_area=1328 * 1328)
    assert (result.width, result.height) == (1328, 1328)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"prompt": "  "}, "prompt"),
        ({"prompt": "x" * (MAX_PROMPT_CHARS + 1)}, "prompt"),
        ({"negative_prompt": "x" * (MAX_PROMPT_CHARS + 1)}, "negative_prompt"),
        ({"size": "4K"}, "size"),
        ({"size": "big"}, "size"),
        ({"size": "4096x1024"}, "size"),
        ({"size": "1024x100"}, "size"),
        ({"size": "1K", "width": 512}, "size"),
        ({"size": "1024x1024", "aspect_ratio": "1:1"}, "aspect_ratio"),
        ({"width": 512, "height": 512, "aspect_ratio": "1:1"}, "aspect_ratio"),
        ({"aspect_ratio": "match_input"}, "aspect_ratio"),
        ({"width": 2100}, "width"),
        ({"height": 240}, "height"),
        ({"width": 2000, "aspect_ratio": "9:16"}, "height"),
        ({"num_outputs": 5}, "num_outputs"),
        ({"steps": 0}, "num_inference_steps"),
        ({"guidance_scale": 21}, "guidance_scale"),
        ({"seed": -1}, "seed"),
        ({"acceleration": "turbo"}, "acceleration"),
    ],
)
def test_bad_generation_requests_name_the_field(fields, field):  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput) as caught:
        generation(**fields)
    assert caught.value.field == field
    assert caught.value.message


def test_generation_presets_and_loras():
    fast = generation(extra_loras=(STYLE,), seed=5, num_outputs=2)
    assert (fast.steps, fast.true_cfg_scale, fast.scheduler, fast.pose) == (4, 1.0, "lightning", None)
    assert [(lora.adapter, lora.weight) for lora in fast.loras] == [
        (LIGHTNING_4STEP, 1.0),
        (STYLE.adapter, 0.7),
    ]
    assert (fast.seed, fast.num_outputs, fast.prompt) == (5, 2, "a lighthouse at dawn")
    assert generation(acceleration="regular").loras[0].adapter == LIGHTNING_8STEP
    base = generation(acceleration="none")
    assert (base.steps, base.true_cfg_scale, base.scheduler, base.loras) == (50, 4.0, "default", ())


def test_the_negative_prompt_runs_only_with_true_cfg():
    assert generation(negative_prompt="blurry").negative_prompt is None  # Lightning: guidance 1
    assert generation(negative_prompt=" blurry ", guidance_scale=2.5).negative_prompt == "blurry"
    assert generation(acceleration="none").negative_prompt == " "
    assert generation(acceleration="none", negative_prompt="blurry").negative_prompt == "blurry"


def test_an_aspect_ratio_asked_for_that_no_output_size_fits_blames_the_aspect_ratio():
    narrow = SizeLimits(min_side=256, max_side=1024)
    with pytest.raises(InvalidInput) as caught:
        plan_edit(EditRequest(aspect_ratio="21:9"), [(20000, 1)], limits=narrow, target_area=ONE_MP)
    assert caught.value.field == "aspect_ratio"
    assert caught.value.message.startswith("aspect_ratio 21:9 gives a width of ")
