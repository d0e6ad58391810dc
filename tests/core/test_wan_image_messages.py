"""What a refused Wan 2.7 input says it got: a number as given (never echoed in full when huge), any other
value by its JSON kind, not Python's type names."""

from __future__ import annotations

import pytest

from reangle.core.wan_image import request_from_scenario
from reangle.errors import InvalidInput


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"numOutputs": 2.5}, "numOutputs must be a whole number, got 2.5"),
        ({"images": 5}, "images must be a list of images, got 5"),
        ({"size": ["1K"]}, "size must be a string (1K, 2K or WxH), got an array"),
        ({"imageSetMode": "yes"}, "imageSetMode must be true or false, got 'yes'"),
        ({"thinkingMode": {}}, "thinkingMode must be true or false, got an object"),
        ({"seed": True}, "seed must be a whole number from 0 to 2147483647, got true or false"),
        ({"seed": 10**400}, "seed must be a whole number from 0 to 2147483647, got a number of 401 digits"),
    ],
)
def test_a_refused_input_says_what_it_got_in_json_words(fields: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        request_from_scenario({"prompt": "a fox", **fields})
    assert refused.value.message == message
