"""What the caller hands the SDK, turned into what the API takes: uploads, image references, job inputs."""

from __future__ import annotations

import errno
import io
import math
import mimetypes
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Protocol, Self, TypeAlias, TypeGuard
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from reangle.client._models import Asset, OutputAsset, TimeLimits

#: The Multiple-Angles camera model, and the plain instruction editor.
CAMERA_MODEL = "qwen-edit-multiangle-2511"
INSTRUCTION_MODEL = "qwen-image-edit-2511"
#: Text-to-image (Qwen-Image, local), and Wan 2.7 image (through Alibaba's DashScope API; takes 0-9 images).
TEXT_TO_IMAGE_MODEL = "qwen-image-2512"
WAN_IMAGE_MODEL = "wan-2.7-image"


class PILImage(Protocol):
    """A PIL (Pillow) image, as far as the SDK uses one: it is saved as PNG and uploaded."""

    def save(self, fp: IO[bytes], format: str | None = None) -> None: ...

    def convert(self, mode: str) -> PILImage: ...


#: Something to upload: a local path, or the file's bytes.
FileInput: TypeAlias = str | os.PathLike[str] | bytes
#: An input image: a local path, bytes or a PIL image (uploaded first), an Asset, or a string the server
#: reads as it is (an asset id, a data URL, raw base64, or an http(s) URL).
ImageInput: TypeAlias = str | os.PathLike[str] | bytes | PILImage | Asset | OutputAsset

_ACCEPTED_IMAGES = "a file path, bytes, a PIL image, an Asset, or an asset id, URL, data URL or base64 text"
_PASS_THROUGH_PREFIXES = ("http://", "https://", "data:")
#: What the server decodes as raw base64 (whitespace aside): nothing else (no '.', '-', '_', '\\', ':').
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_SIGNATURES: tuple[tuple[bytes, str, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png", ".png"),
    (b"\xff\xd8\xff", "image/jpeg", ".jpg"),
    (b"GIF87a", "image/gif", ".gif"),
    (b"GIF89a", "image/gif", ".gif"),
)


def upload_file(file: FileInput) -> tuple[str, bytes, str]:
    """(file name, content, MIME type) for a multipart upload; a path is read here (OSError if it cannot)."""
    if isinstance(file, bytes):
        mime, suffix = sniff_image_type(file)
        return f"image{suffix}", file, mime
    path = Path(file)
    content = path.read_bytes()
    sniffed, _ = sniff_image_type(content)
    guessed = mimetypes.guess_type(path.name)[0]
    mime = sniffed if sniffed != "application/octet-stream" else guessed or sniffed
    return path.name, content, mime


def sniff_image_type(content: bytes) -> tuple[str, str]:
    """(MIME type, file suffix) from the first bytes; application/octet-stream when not a known image."""
    if content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "image/webp", ".webp"
    for signature, mime, suffix in _SIGNATURES:
        if content.startswith(signature):
            return mime, suffix
    return "application/octet-stream", ""


def file_to_upload(image: ImageInput) -> FileInput | None:
    """The file to upload for bytes, paths, PIL images (as PNG) and strings naming an existing local file;
    None for an image the server reads as it is (an Asset, or a string that is an asset id, an http(s) URL,
    a data URL or base64). Raised before anything is sent: FileNotFoundError for a path (or a string that
    can be nothing but a path) that names no file, TypeError for anything else."""
    if isinstance(image, bytes):
        return image
    if isinstance(image, os.PathLike):
        if not Path(image).exists():
            raise _no_such_file(os.fspath(image))
        return image
    if isinstance(image, Asset | OutputAsset):
        return None
    if _is_pil_image(image):
        return _png_bytes(image)
    if not isinstance(image, str):
        raise TypeError(f"an input image must be {_ACCEPTED_IMAGES}, not {type(image).__name__}")
    if image[:8].lower().startswith(_PASS_THROUGH_PREFIXES):  # URL schemes are case-insensitive
        return None
    try:
        if Path(image).is_file():
            return image
    except (OSError, ValueError):  # raw base64 makes a name too long for the file system, or holds a NUL
        return None
    if image.startswith("asset_") or _may_be_base64(image):
        return None
    raise _no_such_file(image)


#: Fewer base64 characters than this hold no PNG, JPEG or WebP (24 bytes): such a string is a path.
_SHORTEST_IMAGE_BASE64 = 32


def _may_be_base64(text: str) -> bool:
    """Whether the server could decode `text` as raw base64 image data (it pads it, and ignores
    whitespace)."""
    compact = "".join(text.split())
    return (
        len(compact) >= _SHORTEST_IMAGE_BASE64
        and _BASE64.fullmatch(compact) is not None
        and len(compact.rstrip("=")) % 4 != 1
    )


def _no_such_file(path: str) -> FileNotFoundError:
    return FileNotFoundError(
        errno.ENOENT, "no such image file (nor an asset id, an http(s) URL, a data URL or base64)", path
    )


def _is_pil_image(image: object) -> TypeGuard[PILImage]:
    """Whether `image` is a PIL image; PIL is not imported for this (if it is not loaded, it is not one)."""
    pil = sys.modules.get("PIL.Image")
    return pil is not None and isinstance(image, pil.Image)


def _png_bytes(image: PILImage) -> bytes:
    """A PIL image encoded as PNG; modes PNG cannot hold (CMYK, YCbCr, ...) are converted to RGB first."""
    buffer = io.BytesIO()
    try:
        image.save(buffer, format="PNG")
    except OSError:  # "cannot write mode CMYK as PNG"
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def reference(image: ImageInput) -> str:
    """The string the API takes for an image that needs no upload."""
    if isinstance(image, Asset | OutputAsset):
        return image.id
    if isinstance(image, str):
        return image
    raise TypeError(f"upload {type(image).__name__} images first")


def as_image_list(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    """One image or a sequence of them, as a list. TypeError naming the accepted types for anything else."""
    if isinstance(images, str | bytes | os.PathLike | Asset | OutputAsset) or _is_pil_image(images):
        return [images]
    if not isinstance(images, Iterable):
        raise TypeError(
            f"images must be an image ({_ACCEPTED_IMAGES}) or a list of them, not {type(images).__name__}"
        )
    return list(images)


def batch_images(inputs: Sequence[Mapping[str, Any]]) -> list[ImageInput]:
    """Every image of a batch's inputs, in order (an input's `images` may be one image or a list)."""
    return [image for item in inputs if _has_images(item) for image in as_image_list(item["images"])]


def _has_images(item: Mapping[str, Any]) -> bool:
    """An `images` of None is as if none were given: the server says what is missing."""
    return item.get("images") is not None


def with_image_refs(inputs: Sequence[Mapping[str, Any]], refs: Sequence[str]) -> list[dict[str, Any]]:
    """The inputs with their images replaced by `refs`, the references of `batch_images(inputs)` in order."""
    remaining = iter(refs)
    return [
        {**item, "images": [next(remaining) for _ in as_image_list(item["images"])]}
        if _has_images(item)
        else {**item}
        for item in inputs
    ]


def check_finite(value: object, field: str) -> None:
    """ValueError naming the field when a number in `value` (nested in lists and mappings) is NaN or
    infinite: JSON has no such numbers, so the request could not be sent."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{field} is {value}: numbers sent to the server must be finite")
    if isinstance(value, Mapping):
        for name, item in value.items():
            check_finite(item, f"{field}.{name}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_finite(item, f"{field}.{index}")


def compact(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields that were given: None means "the server's default" and is left out."""
    return {name: value for name, value in fields.items() if value is not None}


def edit_input(
    images: list[str], *, prompt: str, camera: Mapping[str, Any], options: Mapping[str, Any]
) -> dict[str, Any]:
    return {"images": images} | compact({"prompt": prompt or None, **camera, **options})


def orbit_input(
    image: str,
    *,
    azimuths: Sequence[float] | None,
    elevation: float | None,
    distance: float | None,
    poses: Sequence[Mapping[str, float]] | None,
    prompt: str,
    options: Mapping[str, Any],
) -> dict[str, Any]:
    """An orbit's input: the views as `poses` (any path), or as azimuths at one elevation and distance (the
    model's defaults, 0 and 1.0 unless its catalog entry says otherwise, when not given). Fields given
    beside `poses` are sent as given, for the server to refuse."""
    fields = {
        "poses": None if poses is None else [dict(pose) for pose in poses],
        "azimuths": None if azimuths is None else list(azimuths),
        "elevation": elevation,
        "distance": distance,
        "prompt": prompt or None,
        **options,
    }
    return {"image": image} | compact(fields)


class Lora(BaseModel):
    """A LoRA of the request's own, applied on top of the model's: exactly one of `url` (an http(s) URL of a
    .safetensors file the server fetches), `path` (a file in the server's LoRA folder) or `id` (a LoRA the
    server's operator registered), at `scale` (default 1.0).

        Lora(url="https://example.com/style.safetensors", scale=0.8)
        Lora.parse("id:house-style:0.5")
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = Field(default=None, min_length=1)
    path: str | None = Field(default=None, min_length=1)
    id: str | None = Field(default=None, min_length=1)
    scale: float = Field(default=1.0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        given = [name for name in ("url", "path", "id") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of url, path or id, not {', '.join(given) or 'none'}")
        return self

    @classmethod
    def parse(cls, text: str) -> Lora:
        """A LoRA written as `SOURCE[:SCALE]`: `https://.../style.safetensors`, `id:NAME` or a path, then an
        optional `:SCALE`. Only a trailing `:<number>` is a scale, so the colons of a URL stay in it (a URL
        that ends in `:PORT` with no path keeps its port). ValueError when the text names nothing."""
        source, scale = _split_scale(text.strip())
        if source.startswith(("http://", "https://")):
            kind, value = "url", source
        elif source.startswith("id:"):
            kind, value = "id", source.removeprefix("id:").strip()
        else:
            kind, value = "path", source
        if not value:
            raise ValueError(
                f"{text!r} names no LoRA: give https://..., id:NAME or a path, then :SCALE if wanted"
            )
        return cls.model_validate({kind: value, "scale": scale})

    def to_json(self) -> dict[str, Any]:
        """What the API takes: the one source given, and the scale."""
        return self.model_dump(exclude_none=True)


LoraInput: TypeAlias = Lora | Mapping[str, Any]


def _split_scale(value: str) -> tuple[str, float]:
    head, colon, tail = value.rpartition(":")
    if not colon:
        return value, 1.0
    try:
        scale = float(tail)
    except ValueError:
        return value, 1.0
    if not math.isfinite(scale) or "_" in tail:
        return value, 1.0
    is_url = head.startswith(("http://", "https://"))
    if is_url and urlsplit(head).path in ("", "/"):  # `https://host:8080`: a port, not a scale
        return value, 1.0
    if head in ("http", "https", "id"):  # `id:3` is the LoRA named "3"
        return value, 1.0
    return head, scale


def lora_list(loras: Sequence[LoraInput] | None) -> list[dict[str, Any]] | None:
    """The `loras` field: Lora objects as the API takes them, mappings as given; None when there are none."""
    if not loras:
        return None
    if isinstance(loras, Lora | Mapping):
        raise TypeError("loras must be a list of Lora objects or mappings, not a single one")
    return [lora.to_json() if isinstance(lora, Lora) else dict(lora) for lora in loras]


def prompt_extras(*, rewrite_prompt: bool | None, loras: Sequence[LoraInput] | None) -> dict[str, Any]:
    """`rewrite_prompt` (True or False, as given: False turns off a model whose default is True) and `loras`
    when given; left out otherwise, so servers and models without them take the request as before."""
    return compact({"rewrite_prompt": rewrite_prompt, "loras": lora_list(loras)})


#: Time limits as `TimeLimits(run_s=..., total_s=...)` or a mapping with those keys (`{"run_s": 120}`).
TimeLimitsInput: TypeAlias = TimeLimits | Mapping[str, float | None]
#: The events a webhook may ask for: "completed" (the job succeeded, failed or was canceled; the server's
#: default) and "progress" (every status change and, at most every 5 s, its progress).
WEBHOOK_EVENTS = ("completed", "progress")


def time_limits_json(limits: TimeLimitsInput | None) -> dict[str, float] | None:
    """The `time_limits` field; None (left out) when no limit is given. ValueError for a limit that is not a
    positive, finite number or a mapping key that names no limit, TypeError for anything but the two forms."""
    if limits is None:
        return None
    if isinstance(limits, Mapping):
        unknown = sorted(set(limits) - {"run_s", "total_s"})
        if unknown:
            raise ValueError(
                f"time_limits: unknown {', '.join(map(str, unknown))}; give run_s and/or total_s"
            )
        limits = TimeLimits(**limits)
    elif not isinstance(limits, TimeLimits):
        raise TypeError(f"time_limits must be a TimeLimits or a mapping, not {type(limits).__name__}")
    limits.check()
    return limits.to_json() or None


def submission_fields(
    *, webhook_url: str | None, webhook_events: Sequence[str] | None, time_limits: TimeLimitsInput | None
) -> dict[str, Any]:
    """A job submission's fields beside its model and input: the webhook and the time limits, checked
    (before any upload) and left out when not given. Event names are the server's to check (a newer one may
    know more than WEBHOOK_EVENTS)."""
    if isinstance(webhook_events, str):
        raise TypeError(
            f"webhook_events must be a list of event names, such as [{webhook_events!r}], not a text"
        )
    if webhook_events is not None and webhook_url is None:
        raise ValueError("webhook_events needs webhook_url: the URL to send them to")
    fields = {
        "webhook_url": webhook_url,
        "webhook_events": None if webhook_events is None else list(webhook_events),
        "time_limits": time_limits_json(time_limits),
    }
    return compact(fields)


def job_body(
    model: str, input: Mapping[str, Any], *, kind: str, priority: int | None, fields: Mapping[str, Any]
) -> dict[str, Any]:
    """The body of `POST /v1/jobs`: `fields` are its `submission_fields`. ValueError for a number in the
    input that JSON cannot hold (see `check_finite`)."""
    check_finite(input, "input")
    return (
        {"model": model, "input": dict(input), "kind": kind} | compact({"priority": priority}) | dict(fields)
    )


#: What models call their image-set switch, in the order looked for (Wan 2.7 calls it `image_set_mode`).
IMAGE_SET_FIELDS = ("image_set", "image_set_mode")


def schema_fields(schema: Mapping[str, Any]) -> set[str]:
    """The input fields a model's JSON Schema names."""
    properties = schema.get("properties")
    return set(properties) if isinstance(properties, Mapping) else set()


def image_set_field(schema: Mapping[str, Any]) -> str | None:
    """The model's image-set switch as its input schema names it; None when it makes no image sets."""
    fields = schema_fields(schema)
    return next((name for name in IMAGE_SET_FIELDS if name in fields), None)


def check_set_prompts(
    set_prompts: Sequence[str] | None, *, num_outputs: int | None, image_set: bool | None
) -> None:
    """`set_prompts` must agree with `num_outputs` and `image_set` (each prompt is one image of a set);
    ValueError naming both when they do not. Checked before anything is sent."""
    if set_prompts is None:
        return
    if isinstance(set_prompts, str):
        raise TypeError("set_prompts must be a list of texts, one per image, not a single text")
    count = len(set_prompts)
    if count == 0:
        raise ValueError("set_prompts is empty: give one text per image of the set, or leave it out")
    if image_set is False:
        raise ValueError("set_prompts make an image set, so they cannot go with image_set=False")
    if num_outputs is not None and num_outputs != count:
        texts = "1 text" if count == 1 else f"{count} texts"
        raise ValueError(
            f"set_prompts has {texts}, one image each, but num_outputs is {num_outputs}; leave num_outputs "
            f"out or make it {count}"
        )


def image_set_fields(
    model: str, schema: Mapping[str, Any], *, image_set: bool | None, set_prompts: Sequence[str] | None
) -> dict[str, Any]:
    """The image-set fields of a generate input, named as the model's input schema names them (`image_set`,
    or Wan 2.7's `image_set_mode`); empty when neither was given. ValueError when the model makes no image
    sets, or takes no `set_prompts`."""
    wanted = True if set_prompts is not None else image_set
    if wanted is None:
        return {}
    field = image_set_field(schema)
    if field is None and wanted is False:  # no set asked for, and the model makes none
        return {}
    if field is None:
        raise ValueError(f"model {model} makes no image sets (its input has no image_set field)")
    fields: dict[str, Any] = {field: wanted}
    if set_prompts is not None:
        if "set_prompts" not in schema_fields(schema):
            raise ValueError(
                f"model {model} takes no set_prompts; ask for a set with image_set=True and num_outputs"
            )
        fields["set_prompts"] = list(set_prompts)
    return fields


def generate_input(
    prompt: str,
    *,
    images: Sequence[str] | None,
    size: str | None,
    num_outputs: int | None,
    seed: int | None,
    negative_prompt: str | None,
    set_fields: Mapping[str, Any],
    options: Mapping[str, Any],
) -> dict[str, Any]:
    """A text-to-image input: `images` are references to edit from (for models that take them; none for
    text-to-image), `set_fields` the image-set fields from `image_set_fields`."""
    fields = {
        "prompt": prompt,
        "images": None if images is None else list(images),
        "size": size,
        "num_outputs": num_outputs,
        "seed": seed,
        "negative_prompt": negative_prompt,
        **set_fields,
        **options,
    }
    return compact(fields)
