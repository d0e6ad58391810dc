from __future__ import annotations

import argparse

import pytest

from reangle.cli.option_names import edit_options


def edit_args(loras: int = 0) -> argparse.Namespace:
    return argparse.Namespace(rewrite=None, loras=[object()] * loras, inputs=["a.png"], text=None)


@pytest.mark.parametrize(
    ("message", "shown"),
    [
        ("num_outputs must be between 1 and 4, got 9", "--num-outputs must be between 1 and 4, got 9"),
        ("input.num_inference_steps: must be at most 50", "--steps: must be at most 50"),
        ("input.loras.1.url: could not fetch it", "--lora #2: could not fetch it"),
        ("width is not a multiple of 16", "--width is not a multiple of 16"),
        ("webhook_url: refusing to call it", "--webhook-url: refusing to call it"),
        # a field no option sets, and words that only look like a field, stay as they are
        ("priority: not allowed", "priority: not allowed"),
        ("the size is not what width and height give", "the size is not what width and height give"),
        # words of a clash name the options
        (
            "give either width/height or aspect_ratio, not both",
            "give either --width/--height or --aspect-ratio, not both",
        ),
        # pydantic's words for a list's length, and an unknown field, in plain words
        (
            "input.images: List should have at most 3 items after validation, not 4",
            "INPUT: at most 3 images, got 4",
        ),
        (
            "input.loras: List should have at most 4 items after validation, not 5",
            "--lora: at most 4 LoRAs, got 5",
        ),
        ("input.azimuth: unknown field", "--azimuth: this model has no azimuth input"),
        ("input.priority: unknown field", "input.priority: unknown field"),
    ],
)
def test_a_refusal_names_the_option_that_set_the_field(message: str, shown: str) -> None:
    assert edit_options(edit_args(loras=2)).rewrite(message) == shown
