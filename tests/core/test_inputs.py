from __future__ import annotations

import base64
import re

import pytest

from reangle.core.inputs import decode_inline
from reangle.errors import InvalidInput
from tests.conftest import image_bytes, make_image

PNG = image_bytes(make_image(8, 8))


def test_raw_base64_with_or_without_padding_and_line_breaks():
    encoded = base64.b64encode(PNG).decode()
    assert decode_inline(encoded, field="f") == PNG
    assert decode_inline(encoded.rstrip("="), field="f") == PNG
    assert decode_inline("\n".join(encoded[i : i + 60] for i in range(0, len(encoded), 60)), field="f") == PNG


def test_base64_data_url():
    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert decode_inline(url, field="f") == PNG


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("data:image/png,rawbytes", "must be base64-encoded"),
        ("not base64 at all!", "not an asset id, an http(s) URL, a data URL or base64"),
    ],
)
def test_bad_inline_images_name_the_field(ref, message):  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput, match=re.escape(message)) as caught:
        decode_inline(ref, field="input.images.0")
    assert caught.value.field == "input.images.0"
