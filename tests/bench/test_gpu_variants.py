"""The variant grammar, the picture comparison and the Markdown tables of the GPU benchmark, in process."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bench.gpu_variants import (
    VariantError,
    compare,
    image_stats,
    orbit_table,
    parse_variants,
    psnr_db,
    variants_table,
)

OPTIONS: dict[str, Any] = {
    "attention_backend": "native",
    "compile": "off",
    "compile_backend": "inductor",
    "quantize": "none",
    "fuse_loras": "off",
    "cpu_offload": False,
    "cache_steps": 0,
}


def picture(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def test_named_sets_and_options_combine_and_baseline_comes_first() -> None:
    text = "fp8+compile, attention_backend=_native_cudnn+compile_backend=eager,baseline"
    variants = parse_variants(text, OPTIONS)

    assert [variant.name for variant in variants] == [
        "baseline",
        "fp8+compile",
        "attention_backend=_native_cudnn+compile_backend=eager",
    ]
    assert variants[0].overrides == {}
    assert variants[0].settings_text() == "no speed options"
    assert variants[1].overrides == {"quantize": "fp8", "compile": "blocks"}
    assert variants[1].settings_text() == "quantize=fp8, compile=blocks"
    assert variants[2].overrides == {"attention_backend": "_native_cudnn", "compile_backend": "eager"}


def test_the_fused_set_combines_with_the_others() -> None:
    (variant,) = parse_variants("cudnn+fused+fp8+compile", OPTIONS)
    assert variant.overrides == {
        "attention_backend": "_native_cudnn",
        "fuse_loras": "default",
        "quantize": "fp8",
        "compile": "blocks",
    }


def test_values_take_the_type_of_the_option_default() -> None:
    (variant,) = parse_variants("cpu_offload=ON+cache-steps=3", OPTIONS)
    assert variant.overrides == {"cpu_offload": True, "cache_steps": 3}
    (variant,) = parse_variants("cpu_offload=0+cudnn+attention_backend=_native_cudnn", OPTIONS)
    assert variant.overrides == {"cpu_offload": False, "attention_backend": "_native_cudnn"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus", "unknown variant 'bogus'"),
        ("fp8,model=x", "'model' is not an engine option"),
        ("fp8+quantize=none", "sets quantize twice"),
        ("cudnn+flash", "sets attention_backend twice"),
        ("fp8,fp8", "listed twice"),
        ("fp8,,cudnn", "empty variant name"),
        ("cpu_offload=maybe", "takes true or false"),
        ("cache_steps=many", "takes a number"),
    ],
)
def test_bad_variants_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(VariantError, match=message):
        parse_variants(text, OPTIONS)


def test_a_named_set_needs_its_options_in_this_engine() -> None:
    older_engine = {key: value for key, value in OPTIONS.items() if key != "quantize"}
    with pytest.raises(VariantError, match="sets quantize, which this reangle's QwenConfig does not have"):
        parse_variants("baseline,fp8", older_engine)


def test_psnr_is_infinite_for_identical_pictures_and_follows_the_mse() -> None:
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (8, 8, 3))
    assert psnr_db(picture(pixels), picture(pixels.copy())) == math.inf
    zeros, ones = np.zeros((4, 4, 3)), np.ones((4, 4, 3))
    assert psnr_db(picture(zeros), picture(ones)) == pytest.approx(20 * math.log10(255))
    with pytest.raises(ValueError, match="sizes"):
        psnr_db(picture(zeros), picture(np.zeros((4, 5, 3))))


def test_compare_reports_the_largest_difference_and_the_share_of_pixels() -> None:
    before = np.full((4, 4, 3), 100)
    after = before.copy()
    after[1, 2, 0] = 110

    comparison = compare(picture(before), picture(after))

    assert comparison["max_abs_diff"] == 10
    assert comparison["differing_pixels"] == pytest.approx(1 / 16)
    assert comparison["psnr_db"] == pytest.approx(10 * math.log10(255**2 / (100 / 48)))
    assert compare(picture(before), picture(before))["psnr_db"] == "inf"


def test_image_stats_show_a_black_output() -> None:
    pixels = np.zeros((2, 2, 3))
    pixels[0, 0] = (255, 255, 255)
    stats = image_stats(picture(pixels))
    assert stats["black_fraction"] == 0.75
    assert stats["mean"] == pytest.approx(255 / 4)


def measured(name: str, psnr: float | str) -> dict[str, Any]:
    return {
        "name": name,
        "settings_text": "quantize=fp8",
        "medians_s": {
            "end_to_end_clean": 1.2344,
            "end_to_end": 1.2511,
            "denoise": 0.9,
            "text_encode": 0.05,
            "vae_encode": 0.04,
            "vae_decode": 0.07,
        },
        "same_picture_phases_s": {"end_to_end": {"median": 1.2102}},
        "step_median_s": 0.225,
        "throughput": {"edits_per_minute": 48.26},
        "memory": {"peak_edit_gib": 61.04},
        "setup_s": {"load_s": 80.0},
        "warmup_s": None,
        "quality": {"vs_baseline": {"psnr_db": psnr}},
        "orbit": {
            "loop": {"end_to_end": {"median": 9.0}},
            "edit_views": {"end_to_end": {"median": 7.5}},
            "views_vs_loop_min": {"psnr_db": 41.24},
        },
    }


def test_variants_table_has_a_row_per_variant_with_its_numbers() -> None:
    failed = {
        "name": "cudnn",
        "settings_text": "attention_backend=_native_cudnn",
        "error": "EngineError: a | b\nsecond line",
    }
    lines = variants_table([measured("baseline", "inf"), measured("fp8", 38.44), failed]).splitlines()

    assert len(lines) == 5
    assert lines[0].startswith("| variant | settings | end to end s |")
    assert lines[2] == (
        "| `baseline` | quantize=fp8 | 1.234 | 1.251 / 1.210 | 0.900 | 225.0 | 50.0 | 40.0 / 70.0 | 48.3 "
        "| 61.0 | 80.0 (-) | inf (identical) |"
    )
    assert lines[3].endswith("| 38.4 |")
    assert "| `cudnn` | attention_backend=_native_cudnn | not measured: EngineError: a / b |" in lines[4]
    assert all(line.count("|") == lines[0].count("|") for line in lines)


def test_orbit_table_compares_edit_views_with_the_loop() -> None:
    failed = {"name": "x", "settings_text": "", "error": "e"}
    lines = orbit_table([measured("fp8", 38.4), failed]).splitlines()
    assert lines[2] == "| `fp8` | 7.50 | 9.00 | 1.20x | 41.2 |"
    assert len(lines) == 3
    assert orbit_table([failed]) == ""
