from __future__ import annotations

import asyncio
import base64
import re
import threading

import pytest

from reangle.core import inputs
from reangle.core.inputs import SURROGATE_MESSAGE, decode_inline, refuse_bad_text
from reangle.errors import InvalidInput
from tests.conftest import image_bytes, make_image

PNG = image_bytes(make_image(8, 8))


def test_raw_base64_with_or_without_padding_and_line_breaks():
    encoded = base64.b64encode(PNG).decode()
    assert decode_inline(encoded, field="f") == PNG
    assert decode_inline(encoded.rstrip("="), field="f") == PNG
    assert decode_inline("\n".join(encoded[i : i + 60] for i in range(0, len(encoded), 60)), field="f") == PNG


def test_a_large_inline_image_is_decoded_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tens of megabytes of base64 take a fifth of a second to decode: the event loop must not wait on it."""
    on_the_loop = []
    decode = inputs.decode_inline

    def watched(ref: str, **options: str) -> bytes:
        on_the_loop.append(threading.current_thread() is threading.main_thread())
        return decode(ref, **options)

    monkeypatch.setattr(inputs, "decode_inline", watched)
    monkeypatch.setattr(inputs, "THREAD_DECODE_CHARS", 100)
    encoded = base64.b64encode(PNG).decode()
    assert len(encoded) > 100
    assert asyncio.run(inputs.decoded_inline(encoded, field="f")) == PNG
    assert asyncio.run(inputs.decoded_inline(base64.b64encode(b"small").decode(), field="f")) == b"small"
    assert on_the_loop == [False, True]


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


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("a\x00b", "input"),
        (
            {"prompt": "ok", "loras": [{"url": "https://x"}, {"path": "a"}, {"url": "x\x00"}]},
            "input.loras.2.url",
        ),
        ({"set_prompts": ["one", "two\x00"]}, "input.set_prompts.1"),
        ({"meta": {"tags": ("a", "\x00")}}, "input.meta.tags.1"),
        ({"key\x00": 1}, "input"),
    ],
    ids=["text", "lora-url", "set-prompt", "nested", "key"],
)
def test_text_with_a_nul_character_is_refused_naming_where_it_is(value, field):  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput) as caught:
        refuse_bad_text(value, "input")
    assert caught.value.field == field
    assert caught.value.message == f"{field}: must not contain a NUL character"


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("snow \ud800", "input"),
        ({"prompt": "ok", "set_prompts": ["one", "\udc80two"]}, "input.set_prompts.1"),
        ({"caf\u00e9 \udfff": 1}, "input"),
    ],
    ids=["high-half", "low-half-in-a-list", "key"],
)
def test_text_with_half_a_surrogate_pair_is_refused_naming_where_it_is(value, field):  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput) as caught:
        refuse_bad_text(value, "input")
    assert caught.value.field == field
    assert caught.value.message == f"{field}: {SURROGATE_MESSAGE}"


def test_text_without_a_nul_or_a_lone_surrogate_passes_whatever_its_shape():
    refuse_bad_text(
        {
            "prompt": "caf\u00e9 \\x00 \u2603 \U0001f600",
            "n": 3,
            "f": 1.5,
            "no": None,
            "l": [True, {"k": "v"}],
        },
        "input",
    )


def test_an_inline_image_with_a_nul_character_is_refused_before_decoding():
    with pytest.raises(InvalidInput, match=re.escape("input.images.0: must not contain a NUL character")):
        decode_inline(base64.b64encode(PNG).decode() + "\x00", field="input.images.0")
