from __future__ import annotations

import argparse

import pytest

from reangle.cli.option_names import edit_options


def edit_args(loras: int = 0) -> argparse.Namespace:
    return argparse.Namespace(rewrite=None, loras=[object()] * loras, inputs=["a.png"])


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
        (
            "give either width/height or aspect_ratio, not both",
            "give either width/height or aspect_ratio, not both",
        ),
    ],
)
def test_a_refusal_names_the_option_that_set_the_field(message: str, shown: str) -> None:
    assert edit_options(edit_args(loras=2)).rewrite(message) == shown
