"""Wan 2.7 image's request: Scenario's `model_wan-2-7-image` fields -> the body of a DashScope task, checked
against the vendor's documented limits so that a bad request is our clear `InvalidInput` at submit, not a
billed round trip. Pure data, no HTTP: `reangle.remote.dashscope` sends the body.

Every error names the Scenario field (`prompt`, `images[3]`, `size`, `numOutputs`, `imageSetMode`,
`thinkingMode`, `seed`).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reangle.core.images import DEFAULT_MAX_PIXELS, decode_image
from reangle.core.json_values import json_kind, shown_number
from reangle.errors import InvalidInput, TooLarge

DEFAULT_MODEL = "wan2.7-image"
MAX_PROMPT_CHARS = 5000
MAX_IMAGES = 9
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # the vendor's limit per input image
IMAGE_SIDE_RANGE = (240, 8000)  # each side of an input image, in pixels
MAX_OUTPUTS = 4  # n without an image set
MAX_SET_OUTPUTS = 12  # n with enable_sequential
SIZE_PRESETS = ("1K", "2K")
#: Explicit WxH sizes: the total area between 768x768 and 2048x2048 (2K is wan2.7-image's ceiling) and the
#: aspect ratio within 1:8..8:1, the ratio the vendor accepts for images.
SIZE_AREA_RANGE = (768 * 768, 2048 * 2048)
MAX_ASPECT_RATIO = 8.0
SEED_RANGE = (0, 2**31 - 1)
SCENARIO_FIELDS = ("prompt", "images", "size", "numOutputs", "imageSetMode", "thinkingMode", "seed")

_WXH = re.compile(r"(\d{1,5})\s*[xX*]\s*(\d{1,5})")
_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*?);base64,(?P<data>.*)", re.S)


@dataclass(frozen=True, kw_only=True)
class WanImageRequest:
    """One Wan 2.7 image request in reangle's terms: the Scenario fields, parsed and checked."""

    prompt: str
    #: Input images as data URLs (`data:image/png;base64,...`), in the order the prompt refers to them.
    images: tuple[str, ...] = ()
    #: "1K", "2K" or the vendor's pixel form "W*H".
    size: str = "2K"
    num_outputs: int = 1
    image_set: bool = False
    #: Only sent for text-to-image outside image sets, the one case where the vendor supports it.
    thinking: bool = True
    seed: int | None = None

    def to_body(self, model: str = DEFAULT_MODEL) -> dict[str, Any]:
        """The JSON body of `POST /api/v1/services/aigc/image-generation/generation`."""
        content: list[dict[str, str]] = [{"text": self.prompt}]
        content.extend({"image": image} for image in self.images)
        parameters: dict[str, Any] = {"size": self.size, "n": self.num_outputs, "watermark": False}
        if self.image_set:
            parameters["enable_sequential"] = True
        elif not self.images:
            parameters["thinking_mode"] = self.thinking
        if self.seed is not None:
            parameters["seed"] = self.seed
        return {
            "model": model,
            "input": {"messages": [{"role": "user", "content": content}]},
            "parameters": parameters,
        }


def elongated(width: int, height: int) -> str:
    """How an image past the aspect ratio limit is out of shape: "wider" or "taller"."""
    return "wider" if width > height else "taller"


def body_from_scenario(fields: Mapping[str, object], *, model: str = DEFAULT_MODEL) -> dict[str, Any]:
    """Scenario's fields (images as bytes or data URLs) -> the vendor body; InvalidInput naming the field."""
    return request_from_scenario(fields).to_body(model)


def request_from_scenario(fields: Mapping[str, object]) -> WanImageRequest:
    unknown = sorted(set(fields) - set(SCENARIO_FIELDS))
    if unknown:
        raise InvalidInput(
            f"unknown field {unknown[0]!r}; model_wan-2-7-image takes {', '.join(SCENARIO_FIELDS)}",
            field=unknown[0],
        )
    image_set = _flag(fields, "imageSetMode", default=False)
    return WanImageRequest(
        prompt=_prompt(fields.get("prompt")),
        images=_images(fields.get("images")),
        size=vendor_size(_given(fields, "size", "2K")),
        num_outputs=_num_outputs(_given(fields, "numOutputs", 1), image_set=image_set),
        image_set=image_set,
        thinking=_flag(fields, "thinkingMode", default=True),
        seed=_seed(fields.get("seed")),
    )


def vendor_size(value: object) -> str:
    """Scenario's `size` ("1K", "2K" or "WxH") in the vendor's form ("1K", "2K" or "W*H")."""
    if not isinstance(value, str):
        raise InvalidInput(f"size must be a string (1K, 2K or WxH), got {_kind(value)}", field="size")
    text = value.strip()
    if text.upper() in SIZE_PRESETS:
        return text.upper()
    match = _WXH.fullmatch(text)
    if match is None:
        raise InvalidInput(f"size must be 1K, 2K or WxH (e.g. 1536x1024), got {value!r}", field="size")
    width, height = int(match[1]), int(match[2])
    low, high = SIZE_AREA_RANGE
    if width < 1 or height < 1 or not low <= width * height <= high:
        raise InvalidInput(
            f"size {width}x{height} has {width * height:,} pixels; between {low:,} (768x768) and "
            f"{high:,} (2048x2048) are supported",
            field="size",
        )
    if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        raise InvalidInput(
            f"size {width}x{height} is {elongated(width, height)} than the supported 1:8 to 8:1", field="size"
        )
    return f"{width}*{height}"


def _prompt(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("prompt is required: describe the image or the edit", field="prompt")
    if len(value) > MAX_PROMPT_CHARS:
        raise InvalidInput(
            f"prompt has {len(value)} characters, more than the limit of {MAX_PROMPT_CHARS}", field="prompt"
        )
    return value


def _images(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise InvalidInput(f"images must be a list of images, got {_kind(value)}", field="images")
    if len(value) > MAX_IMAGES:
        raise InvalidInput(
            f"images has {len(value)} items; at most {MAX_IMAGES} are accepted", field="images"
        )
    return tuple(_data_url(item, f"images[{k}]") for k, item in enumerate(value))


def _data_url(item: object, field: str) -> str:
    """An input image as a data URL, once its bytes were checked as a PNG, JPEG or WebP of a usable size."""
    if isinstance(item, bytes | bytearray | memoryview):
        data = bytes(item)
    elif isinstance(item, str) and item.startswith("data:"):
        data = _data_url_bytes(item, field)
    else:
        raise InvalidInput(
            f"{field} must be image bytes or a base64 data URL, got {_kind(item)}", field=field
        )
    if len(data) > MAX_IMAGE_BYTES:
        raise TooLarge(
            f"{field} is {len(data):,} bytes, more than the limit of {MAX_IMAGE_BYTES:,}", field=field
        )
    decoded = decode_image(data, name=field, max_pixels=DEFAULT_MAX_PIXELS)
    width, height = decoded.image.size
    low, high = IMAGE_SIDE_RANGE
    if not (low <= width <= high and low <= height <= high):
        raise InvalidInput(
            f"{field} is {width}x{height} pixels; each side must be between {low} and {high}", field=field
        )
    if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        raise InvalidInput(
            f"{field} is {width}x{height}, {elongated(width, height)} than the supported 1:8 to 8:1",
            field=field,
        )
    return f"data:{decoded.mime_type};base64,{base64.b64encode(data).decode('ascii')}"


def _data_url_bytes(text: str, field: str) -> bytes:
    match = _DATA_URL.fullmatch(text)
    if match is None:
        raise InvalidInput(
            f"{field} is a data URL but not a base64 one (data:image/png;base64,...)", field=field
        )
    try:
        return base64.b64decode(match["data"], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{field} is not valid base64", field=field) from None


def _num_outputs(value: object, *, image_set: bool) -> int:
    limit = MAX_SET_OUTPUTS if image_set else MAX_OUTPUTS
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"numOutputs must be a whole number, got {_kind(value)}", field="numOutputs")
    if not 1 <= value <= limit:
        mode = "in image set mode" if image_set else "without imageSetMode (up to 12 with it)"
        raise InvalidInput(
            f"numOutputs must be between 1 and {limit} {mode}, got {value}", field="numOutputs"
        )
    return value


def _given(fields: Mapping[str, object], name: str, default: object) -> object:
    """The field's value; JSON null counts as not given."""
    value = fields.get(name)
    return default if value is None else value


def _flag(fields: Mapping[str, object], name: str, *, default: bool) -> bool:
    value = _given(fields, name, default)
    if not isinstance(value, bool):
        raise InvalidInput(f"{name} must be true or false, got {_kind(value)}", field=name)
    return value


def _seed(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    low, high = SEED_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        message = f"seed must be a whole number from {low} to {high}, got {_kind(value)}"
        raise InvalidInput(message, field="seed")
    return value


def _kind(value: object) -> str:
    """What a message says it got: a short text or a number as given, any other value by its JSON kind."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else f"a string of {len(value)} characters"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return shown_number(value)
    return json_kind(value)
