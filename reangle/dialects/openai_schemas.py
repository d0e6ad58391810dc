"""The OpenAI Images dialect's pure translations: an /images/edits form or an /images/generations JSON
body -> the native model and input, a core Job -> an ImagesResponse, a model id -> an OpenAI model object,
errors -> OpenAI's error body.

No HTTP and no I/O here, so that golden tests can drive every mapping directly. The routes live in
`reangle.dialects.openai_images`.

/images/edits request (multipart form; the SDK sends every value as a string; `extra_body` keys arrive as
plain fields):

    image / image[]       1-3 files, any name and content type: the format is sniffed from the bytes.
                          A string value is an image reference (asset id, data URL, base64, http(s) URL).
    prompt                the instruction; may be empty for a camera-only edit
    model                 qwen-edit-multiangle-2511 | qwen-image-edit-2511-multiple-angles (also as fal's
                          endpoint id, fal-ai/qwen-image-edit-2511-multiple-angles) -> camera model
                          qwen-image-edit-2511 -> instruction model (no angle LoRA)
                          omitted, "auto", gpt-image-*, dall-e-*, chatgpt-image-* -> auto: the camera model
                          when camera fields are given or the prompt names a camera move, else the
                          instruction model; an empty prompt with neither is a 400 (param "prompt")
    n                     num_outputs, 1-4; absent: the model's default (1, or its catalog entry's)
    size                  "auto" (default: about 1 MP at the last input's aspect) or "WxH" -> width, height
                          (the core floors each side to a multiple of 16 and checks the engine's range;
                          out of range is a 400 with param "size")
    response_format       b64_json (default) | url (absolute signed link, no auth needed)
    output_format         png (default) | jpeg | webp; output_compression 0-100 -> JPEG/WebP quality
    quality               low/auto/standard -> 4-step Lightning (the default); medium/high -> 8-step
                          Lightning; xhigh/max -> the base model (40 steps); an `acceleration` field wins
    background            auto | opaque (transparent: 400); input_fidelity, user, safety_identifier,
                          partial_images, complexity: accepted and ignored; stream=true, mask, markup,
                          svg*, frame_*: 400
    camera fields         horizontal_angle vertical_angle zoom | azimuth elevation distance, lora_scale;
                          also seed num_inference_steps guidance_scale acceleration width height
                          aspect_ratio. Camera phrases in the prompt ("rotate the camera 90 degrees right",
                          "back view") set the pose and are dropped from the instruction; a camera field
                          sets its own axis over them (the prompt's phrases still set the others). Other
                          fields: 400.
    fal's input names     num_images -> n; image_size square_hd | square (1:1), portrait_4_3 (3:4),
                          portrait_16_9 (9:16), landscape_4_3 (4:3), landscape_16_9 (16:9) -> aspect_ratio
                          at the default area, or {width, height} -> width, height; additional_prompt is
                          appended to the prompt; enable_safety_checker, sync_mode: accepted and ignored;
                          negative_prompt: 400 unless empty (the edit path runs no negative prompt)

/images/generations request (JSON; `extra_body` keys arrive as top-level keys with their JSON types; a null
value counts as omitted), text-to-image:

    prompt                required, not blank: what to generate
    model                 a served text-to-image model by id (qwen-image-2512, or a catalog model of that
                          task, by its id or its openai id); omitted, "auto", gpt-image-*, dall-e-*,
                          chatgpt-image-* -> qwen-image-2512. Any other model (the edit models, wan-2.7-image)
                          is a 400 with param "model". GET /models lists only the models the two image
                          routes take (wan-2.7-image is served by the Scenario dialect and the native API)
    n                     num_outputs (1-4; an image set: up to 8; checked by the core, param "n");
                          absent: the model's default (1, or its catalog entry's)
    size                  "auto" (default: about 1 MP, square unless aspect_ratio says otherwise), "WxH"
                          (floored to multiples of 16, out of the engine's range: 400 param "size"), or the
                          native presets 1K / 2K; anything else is a 400 with param "size"
    response_format       b64_json (default) | url, as for edits
    output_format         png (default) | jpeg | webp (gif, svg: 400); output_compression as for edits
    quality               as for edits, and the legacy "hd" -> 8-step Lightning
    background            auto | opaque (transparent: 400); moderation auto | low (this server runs no
                          content filter); user, safety_identifier, partial_images, complexity, style
                          (DALL-E 3's vivid | natural): accepted and ignored; stream=true, svg, frame_*: 400
    native fields         seed num_inference_steps guidance_scale acceleration width height aspect_ratio
                          negative_prompt rewrite_prompt image_set set_prompts, passed to the core as given
                          (it validates them and names the field). Other keys: 400.

Errors: {"error": {"message", "type", "param", "code"}}. Invalid input 400 invalid_request_error (param is
the OpenAI field name); bad key 401 (code invalid_api_key); 404/409 invalid_request_error; queue full 429
rate_limit_error; a failed or canceled job 500 server_error (a job failed on its input: 400).
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from reangle.api.errors import status_for
from reangle.core.camera_text import parse_camera_text
from reangle.core.edit import MAX_INPUT_IMAGES, MAX_OUTPUTS, MAX_PROMPT_CHARS, SIZE_PRESETS
from reangle.core.inputs import refuse_bad_text
from reangle.core.jobs import Job, JobStatus, OutputAsset
from reangle.core.json_values import json_kind
from reangle.core.models import CAMERA_EDIT, INSTRUCTION_EDIT, MODELS, TEXT_TO_IMAGE
from reangle.errors import InvalidInput, NotFound, ReangleError, Unauthorized

FAL_CAMERA_MODEL = "qwen-image-edit-2511-multiple-angles"
#: fal's endpoint ids are its model names under this owner (`fal-ai/qwen-image-edit-2511-multiple-angles`).
FAL_OWNER_PREFIX = "fal-ai/"
EDIT_TASKS = ("camera_edit", "instruction_edit")
AUTO_MODEL_PREFIXES = ("gpt-image", "dall-e", "chatgpt-image")
CAMERA_FIELDS = (
    "horizontal_angle",
    "vertical_angle",
    "zoom",
    "azimuth",
    "elevation",
    "distance",
    "lora_scale",
)
#: Each axis of the pose, by its two fields: the 96-pose grid's and the continuous one.
AXES = (("horizontal_angle", "azimuth"), ("vertical_angle", "elevation"), ("zoom", "distance"))
FLOAT_FIELDS = (*CAMERA_FIELDS, "guidance_scale")
INT_FIELDS = ("seed", "num_inference_steps", "width", "height")
TEXT_FIELDS = ("acceleration", "aspect_ratio")
BOOL_FIELDS = ("rewrite_prompt",)
OPENAI_FIELDS = ("prompt", "model", "n", "size", "response_format", "output_format", "output_compression")
OPENAI_CHOICE_FIELDS = ("quality", "background", "stream")
IGNORED_FIELDS = ("input_fidelity", "user", "safety_identifier", "partial_images", "complexity")
#: fal's input names for its edit endpoints, taken on /images/edits besides the camera fields (`_from_fal`).
FAL_FIELDS = ("num_images", "image_size", "additional_prompt", "negative_prompt")
FAL_IMAGE_SIZE_FIELDS = ("image_size[width]", "image_size[height]")  # the SDK's form of {width, height}
FAL_IGNORED_FIELDS = ("enable_safety_checker", "sync_mode")
#: fal's `image_size` names -> the aspect ratio each names (the size is this server's default area).
FAL_IMAGE_SIZES = {
    "square_hd": "1:1",
    "square": "1:1",
    "portrait_4_3": "3:4",
    "portrait_16_9": "9:16",
    "landscape_4_3": "4:3",
    "landscape_16_9": "16:9",
}
IMAGE_FIELDS = ("image", "image[]")
UNSUPPORTED_FIELDS = ("mask", "markup", "svg", "frame_count", "frame_duration_ms")
#: OpenAI `quality` -> reangle `acceleration` (None: the model's default, 4-step Lightning).
QUALITY_ACCELERATION: dict[str, str | None] = {"low": None, "auto": None, "standard": None}
QUALITY_ACCELERATION.update(medium="regular", high="regular", xhigh="none", max="none")
OUTPUT_FORMATS = ("png", "jpeg", "webp")
#: OpenAI `background` values this server takes (its outputs are opaque either way).
BACKGROUNDS = ("auto", "opaque")
#: /images/generations: OpenAI's fields this server takes, those it accepts and ignores, those it refuses,
#: and the native text-to-image fields `extra_body` may carry (validated by the core).
GENERATION_FIELDS = (*OPENAI_FIELDS, *OPENAI_CHOICE_FIELDS, "moderation")
#: DALL-E 3's `style` (vivid | natural) is ignored too: `dall-e-*` map to the text-to-image model.
GENERATION_IGNORED_FIELDS = ("user", "safety_identifier", "partial_images", "complexity", "style")
GENERATION_UNSUPPORTED_FIELDS = {
    "svg": "svg output is not supported by this server",
    "frame_count": "gif output is not supported by this server",
    "frame_duration_ms": "gif output is not supported by this server",
}
GENERATION_NATIVE_FIELDS = (
    "seed",
    "num_inference_steps",
    "guidance_scale",
    "acceleration",
    "width",
    "height",
    "aspect_ratio",
    "negative_prompt",
    "rewrite_prompt",
    "image_set",
    "set_prompts",
)
#: OpenAI `quality` for generations: as for edits, and DALL-E 3's legacy "hd".
GENERATION_QUALITY_ACCELERATION = {**QUALITY_ACCELERATION, "hd": "regular"}
TEXT_TO_IMAGE_TASK = "text_to_image"
#: Job error codes that mean the request itself was bad: answered 400, not 500.
INPUT_ERROR_CODES = ("invalid_input", "invalid_image", "unsupported_image", "too_large")

ResponseFormat = Literal["b64_json", "url"]


# errors ----------------------------------------------------------------------------------------------


def openai_param(field: str | None) -> str | None:
    """The OpenAI form field a core error's field stands for (`input.images.1` -> `image`)."""
    if field is None:
        return None
    head = _head(field)
    if head == "quality" and field.startswith("input."):  # the native JPEG/WebP quality
        return "output_compression"
    return {"images": "image", "num_outputs": "n", "width": "size", "height": "size"}.get(head, head)


def _head(field: str) -> str:
    return field.removeprefix("input.").split(".", 1)[0].split("[", 1)[0]


def error_body(message: str, kind: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_type(status: int) -> str:
    if status == 429:
        return "rate_limit_error"
    return "server_error" if status >= 500 else "invalid_request_error"


def error_payload(exc: ReangleError) -> tuple[int, dict[str, Any]]:
    """The status and body a ReangleError answers with in this dialect."""
    status = 400 if isinstance(exc, InvalidInput) else status_for(exc)
    message = exc.with_hint()
    param = openai_param(exc.field) if isinstance(exc, InvalidInput) else None
    if isinstance(exc, InvalidInput) and exc.field and param:
        message = message.removeprefix("input.")
        if _head(exc.field) != param:  # the core named its own field (width): say which one was sent
            message = f"{param}: {message}"
    code = "invalid_api_key" if isinstance(exc, Unauthorized) else exc.code
    return status, error_body(message, error_type(status), param, code)


def job_error_payload(job: Job) -> tuple[int, dict[str, Any]]:
    """The status and body of a job that ended without a result."""
    if job.status == JobStatus.CANCELED:
        return 500, error_body(
            f"job {job.id} was canceled before it finished", "server_error", None, "canceled"
        )
    error = job.error
    code = error.code if error else "internal_error"
    message = error.message if error else f"job {job.id} failed"
    if error and error.hint:
        message = f"{message} ({error.hint})"
    status = 400 if code in INPUT_ERROR_CODES else 500
    return status, error_body(message, error_type(status), None, code)


# request translation ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class EditCall:
    """An /images/edits or /images/generations request in core terms."""

    model: str
    input: dict[str, Any]
    response_format: ResponseFormat
    #: the width and height came from fal's `image_size`: a refusal of them names that field
    fal_size: bool = False

    def as_sent(self, exc: InvalidInput) -> InvalidInput:
        """A core refusal of the width or height named as the client sent them, when fal's image_size did."""
        if not self.fal_size or _head(exc.field or "") not in ("width", "height"):
            return exc
        return type(exc)(
            f"image_size: {exc.message.removeprefix('input.')}", field="image_size", hint=exc.hint
        )


def translate(fields: Mapping[str, str], images: Sequence[str]) -> EditCall:
    """The native model and input for an edit's form fields and its image references (pure)."""
    for name in fields:
        check_known(name)
    fal_size = "image_size" in fields or any(name in fields for name in FAL_IMAGE_SIZE_FIELDS)
    fields = _from_fal(fields)
    prompt = fields.get("prompt", "")
    _check_background(fields)
    _check_choice(fields, "stream", ("false",), "streaming is not supported; leave stream unset")
    response_format = _response_format(fields)
    if not 1 <= len(images) <= MAX_INPUT_IMAGES:
        raise InvalidInput(f"give 1 to {MAX_INPUT_IMAGES} images, got {len(images)}", field="image")
    data: dict[str, Any] = {"images": list(images)}
    for name in FLOAT_FIELDS:
        if name in fields:
            data[name] = _number(fields[name], name, integral=False)
    for name in INT_FIELDS:
        if name in fields:
            data[name] = _number(fields[name], name, integral=True)
    for name in TEXT_FIELDS:
        if name in fields:
            data[name] = fields[name]
    for name in BOOL_FIELDS:
        if name in fields:
            data[name] = _flag(fields[name], name)
    if "n" in fields:  # else the model's default: 1, or its catalog entry's num_outputs
        data["num_outputs"] = _count(fields["n"])
    data.update(_size(fields.get("size"), data))
    data.update(_output(fields, acceleration_given="acceleration" in fields))
    model = _model(fields.get("model"), data, prompt)
    data["prompt"] = prompt
    if MODELS[model].entry.task == "camera_edit":
        camera = parse_camera_text(prompt)
        if camera.pose is not None:  # a field sets its axis; the prompt's phrases set the others
            data["prompt"] = camera.instruction
            pose = camera.pose
            from_prompt: dict[str, float] = {
                "azimuth": pose.azimuth_deg,
                "elevation": pose.elevation_deg,
                "distance": pose.distance_factor,
            }
            for grid, continuous in AXES:
                if grid not in data and continuous not in data:
                    data[continuous] = from_prompt[continuous]
    else:
        given = [name for name in CAMERA_FIELDS if name in data]
        if given:
            raise InvalidInput(
                f"{given[0]} is a camera field; model {model} takes none (use {CAMERA_EDIT})", field=given[0]
            )
    return EditCall(model=model, input=data, response_format=response_format, fal_size=fal_size)


def check_known(name: str) -> None:
    """Refuse a form field this dialect does not take (InvalidInput naming it); image fields pass."""
    known = (
        *OPENAI_FIELDS,
        *OPENAI_CHOICE_FIELDS,
        *FLOAT_FIELDS,
        *INT_FIELDS,
        *TEXT_FIELDS,
        *BOOL_FIELDS,
        *IGNORED_FIELDS,
        *FAL_FIELDS,
        *FAL_IMAGE_SIZE_FIELDS,
        *FAL_IGNORED_FIELDS,
    )
    if name in known or name in IMAGE_FIELDS:
        return
    if name.startswith(UNSUPPORTED_FIELDS):
        raise InvalidInput(f"{name} is not supported by this server", field=name.split("[", 1)[0])
    raise InvalidInput(
        f"Unknown parameter: {name!r}.", field=name, hint="camera fields: " + ", ".join(CAMERA_FIELDS)
    )


def _from_fal(fields: Mapping[str, str]) -> dict[str, str]:
    """The form's fields with fal's input names put in this dialect's terms: num_images -> n, image_size ->
    aspect_ratio (a name) or width/height (an object), additional_prompt appended to the prompt;
    enable_safety_checker and sync_mode dropped (no content filter here; response_format says how images
    come back); a negative_prompt refused (the edit path runs none)."""
    fal = (*FAL_FIELDS, *FAL_IMAGE_SIZE_FIELDS, *FAL_IGNORED_FIELDS)
    out = {name: value for name, value in fields.items() if name not in fal}
    if fields.get("negative_prompt", "").strip():
        raise InvalidInput(
            "negative_prompt is not supported on edits: the edit models take no negative prompt here",
            field="negative_prompt",
            hint="say what to avoid in the prompt instead",
        )
    if "num_images" in fields:
        if "n" in fields:
            raise InvalidInput("give either n or num_images, not both", field="num_images")
        count = _number(fields["num_images"], "num_images", integral=True)
        if not 1 <= count <= MAX_OUTPUTS:
            raise InvalidInput(
                f"num_images must be between 1 and {MAX_OUTPUTS}, got {fields['num_images']}",
                field="num_images",
            )
        out["n"] = str(count)
    out.update(_fal_image_size(fields))
    additional = fields.get("additional_prompt", "").strip()
    if additional:
        out["prompt"] = _with_additional_prompt(fields.get("prompt", "").strip(), additional)
    return out


def _with_additional_prompt(prompt: str, additional: str) -> str:
    """The prompt with fal's additional_prompt appended, which is checked as the core checks a prompt but
    under its own name (the core's refusal would name the prompt)."""
    refuse_bad_text(additional, "additional_prompt")
    if len(additional) > MAX_PROMPT_CHARS:
        raise InvalidInput(
            f"additional_prompt is {len(additional):,} characters, more than the limit of "
            f"{MAX_PROMPT_CHARS:,}",
            field="additional_prompt",
        )
    combined = f"{prompt} {additional}".strip()
    if len(combined) > MAX_PROMPT_CHARS >= len(prompt):  # a prompt too long alone is the core's to name
        raise InvalidInput(
            f"prompt and additional_prompt together are {len(combined):,} characters, more than the limit "
            f"of {MAX_PROMPT_CHARS:,}",
            field="additional_prompt",
        )
    return combined


def _fal_image_size(fields: Mapping[str, str]) -> dict[str, str]:
    """fal's `image_size` as native fields: a name -> aspect_ratio, {width, height} -> width and height."""
    raw = fields.get("image_size")
    sides = {
        side: fields[f"image_size[{side}]"] for side in ("width", "height") if f"image_size[{side}]" in fields
    }
    if raw is None and not sides:
        return {}
    clash = [name for name in ("size", "width", "height", "aspect_ratio") if name in fields]
    if clash == ["size"] and fields["size"].strip().lower() == "auto":  # the default says nothing
        clash = []
    if clash:
        raise InvalidInput(f"give either image_size or {clash[0]}, not both", field="image_size")
    if raw is not None and raw.strip().startswith("{"):
        sides = _size_object(raw)
    elif raw is not None:
        name = raw.strip().lower()
        if name not in FAL_IMAGE_SIZES or sides:
            choices = ", ".join(FAL_IMAGE_SIZES)
            raise InvalidInput(
                f"image_size must be one of {choices} or {{width, height}}, got {raw!r}", field="image_size"
            )
        return {"aspect_ratio": FAL_IMAGE_SIZES[name]}
    if set(sides) != {"width", "height"}:
        raise InvalidInput("image_size must give both width and height", field="image_size")
    return {side: str(_number(str(value), "image_size", integral=True)) for side, value in sides.items()}


def _size_object(raw: str) -> dict[str, str]:
    """`{"width": 1024, "height": 768}` sent as one text field."""
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not set(value) <= {"width", "height"}:
        raise InvalidInput(
            f'image_size must be a name or {{"width": W, "height": H}}, got {raw!r}', field="image_size"
        )
    return {side: str(size) for side, size in value.items()}


def _check_choice(fields: Mapping[str, str], name: str, allowed: tuple[str, ...], message: str) -> None:
    if name in fields and fields[name].strip().lower() not in allowed:
        raise InvalidInput(f"{message} (got {name}={fields[name]!r})", field=name)


def _check_background(fields: Mapping[str, str]) -> None:
    """OpenAI's `background`: auto or opaque; transparent, a value OpenAI takes, is refused for its reason."""
    _check_choice(fields, "background", (*BACKGROUNDS, "transparent"), "background must be auto or opaque")
    _check_choice(fields, "background", BACKGROUNDS, "transparent backgrounds are not supported")


def _flag(raw: str, name: str) -> bool:
    """A form value as a boolean: the SDK sends extra_body's True as "true"."""
    text = raw.strip().lower()
    if text not in ("true", "false", "1", "0"):
        raise InvalidInput(f"{name} must be true or false, got {raw!r}", field=name)
    return text in ("true", "1")


def _number(raw: str, name: str, *, integral: bool) -> int | float:
    """A form value as a number: "90", "2.5"; for integer fields also "3.0" (but not "3.5")."""
    text = raw.strip()
    value: int | float | None = None
    with contextlib.suppress(ValueError, OverflowError):
        if integral and re.fullmatch(r"[+-]?\d{1,20}", text):
            value = int(text)
        else:
            number = float(text)
            if math.isfinite(number) and (not integral or number.is_integer()):
                value = int(number) if integral else number
    if value is None:
        kind = "an integer" if integral else "a number"
        if re.fullmatch(r"[+-]?\d{21,}", text):
            raise InvalidInput(
                f"{name} is too large: a number of {len(text.lstrip('+-')):,} digits", field=name
            )
        raise InvalidInput(f"{name} must be {kind}, got {raw!r}", field=name)
    return value


def _count(raw: str) -> int:
    count = _number(raw, "n", integral=True)
    if not 1 <= count <= MAX_OUTPUTS:
        raise InvalidInput(f"n must be between 1 and {MAX_OUTPUTS}, got {raw}", field="n")
    return int(count)


def _size(raw: str | None, data: Mapping[str, Any]) -> dict[str, int]:
    if raw is None or raw.strip().lower() == "auto":
        return {}
    match = re.fullmatch(r"\s*(\d{1,6})\s*x\s*(\d{1,6})\s*", raw.lower())
    if match is None:
        raise InvalidInput(
            f"size must be 'auto' or 'WIDTHxHEIGHT' (e.g. '1024x1024'), got {raw!r}", field="size"
        )
    if any(name in data for name in ("width", "height", "aspect_ratio")):
        raise InvalidInput("give either size or width/height/aspect_ratio, not both", field="size")
    return {"width": int(match[1]), "height": int(match[2])}


def _response_format(fields: Mapping[str, str]) -> ResponseFormat:
    requested = fields.get("response_format", "b64_json")
    if requested not in ("b64_json", "url"):
        raise InvalidInput(
            f"response_format must be b64_json or url, got {requested!r}", field="response_format"
        )
    return "url" if requested == "url" else "b64_json"


def _output(
    fields: Mapping[str, str],
    *,
    acceleration_given: bool,
    qualities: Mapping[str, str | None] = QUALITY_ACCELERATION,
) -> dict[str, Any]:
    """output_format, output_compression and quality as native fields (`quality` sets `acceleration`
    unless the request gives its own)."""
    out: dict[str, Any] = {}
    if "output_format" in fields:
        fmt = fields["output_format"].strip().lower()
        if fmt not in OUTPUT_FORMATS:
            raise InvalidInput(
                f"output_format must be one of {', '.join(OUTPUT_FORMATS)}, got {fmt!r}",
                field="output_format",
            )
        out["output_format"] = fmt
    if "output_compression" in fields:
        compression = _number(fields["output_compression"], "output_compression", integral=True)
        if not 0 <= compression <= 100:
            raise InvalidInput(
                f"output_compression must be between 0 and 100, got {compression}", field="output_compression"
            )
        out["quality"] = max(1, int(compression))
    if "quality" in fields:
        quality = fields["quality"].strip().lower()
        if quality not in qualities:
            choices = ", ".join(qualities)
            raise InvalidInput(f"quality must be one of {choices}, got {quality!r}", field="quality")
        if qualities[quality] and not acceleration_given:
            out["acceleration"] = qualities[quality]
    return out


def openai_ids() -> list[str]:
    """The served models an images route takes, under the ids this dialect lists them by (the catalog's
    `openai` id, else their own). Models of other tasks (wan-2.7-image) are served by other dialects."""
    tasks = (*EDIT_TASKS, TEXT_TO_IMAGE_TASK)
    return [
        spec.entry.dialect_id("openai") or spec.id for spec in MODELS.values() if spec.entry.task in tasks
    ]


def served_models(tasks: Sequence[str]) -> dict[str, str]:
    """The served models of these tasks: each one's id, OpenAI id and fal id -> its id."""
    served: dict[str, str] = {}
    for spec in MODELS.values():
        if spec.entry.task in tasks:
            for name in (spec.id, spec.entry.dialect_id("openai"), *fal_names(spec.entry.dialect_id("fal"))):
                if name:
                    served[name] = spec.id
    return served


def fal_names(fal_id: str | None) -> tuple[str, ...]:
    """The names a fal model id is taken by: bare, and as fal's endpoint id (`fal-ai/<name>`)."""
    if not fal_id:
        return ()
    bare = fal_id.removeprefix(FAL_OWNER_PREFIX)
    return (bare, FAL_OWNER_PREFIX + bare)


def edit_models() -> dict[str, str]:
    """The served edit models by the names this dialect takes (fal's camera model's name names the shipped
    camera model unless the catalog gives it to another)."""
    served = served_models(EDIT_TASKS)
    if CAMERA_EDIT in MODELS:
        for name in fal_names(FAL_CAMERA_MODEL):
            served.setdefault(name, CAMERA_EDIT)
    return served


def _listed(served: Mapping[str, str]) -> list[str]:
    """The names to offer in a message: each fal name once, without fal's owner prefix."""
    return [name for name in served if not name.startswith(FAL_OWNER_PREFIX)]


def _model(raw: str | None, data: Mapping[str, Any], prompt: str) -> str:
    name = (raw or "auto").strip()
    served = edit_models()
    if name in served:
        return served[name]
    if name != "auto" and not name.lower().startswith(AUTO_MODEL_PREFIXES):
        choices = ", ".join([*_listed(served), "auto"])
        generators = served_models((TEXT_TO_IMAGE_TASK,))
        kind = "does not edit images here" if name in MODELS or name in generators else "is unknown"
        raise InvalidInput(
            f"model {name!r} {kind}; choose one of {choices} (or an OpenAI image model)",
            field="model",
            hint="POST /images/generations takes the text-to-image models" if name in generators else None,
        )
    if any(field in data for field in CAMERA_FIELDS) or parse_camera_text(prompt).pose is not None:
        return CAMERA_EDIT
    if prompt.strip():
        return INSTRUCTION_EDIT
    raise InvalidInput(
        "prompt is empty and no camera move is given",
        field="prompt",
        hint="write an instruction, or send camera fields such as horizontal_angle via extra_body",
    )


def translate_generation(body: Mapping[str, Any]) -> EditCall:
    """The native model and input for an /images/generations JSON body (pure, given the served models)."""
    given = {name: value for name, value in body.items() if value is not None}  # null: as if omitted
    for name in given:
        _check_generation_field(name)
    prompt = given.get("prompt")
    if not isinstance(prompt, str):
        problem = "is required" if prompt is None else f"must be a string, not {json_kind(prompt)}"
        raise InvalidInput(f"prompt {problem}: say what to generate", field="prompt")
    if not prompt.strip():
        raise InvalidInput("prompt must not be empty: say what to generate", field="prompt")
    fields = {
        name: _text(given[name], name) for name in GENERATION_FIELDS if name in given and name != "prompt"
    }
    _check_background(fields)
    _check_choice(fields, "stream", ("false",), "streaming is not supported; leave stream unset")
    _check_choice(fields, "moderation", ("auto", "low"), "moderation must be auto or low")
    response_format = _response_format(fields)
    data: dict[str, Any] = {"prompt": prompt}
    data.update((name, given[name]) for name in GENERATION_NATIVE_FIELDS if name in given)
    if "n" in fields:
        count = _number(fields["n"], "n", integral=True)
        if count < 1:
            raise InvalidInput(f"n must be at least 1, got {fields['n']}", field="n")
        data["num_outputs"] = count  # the upper bound (4, or 8 for an image set) is the core's
    size = _generation_size(fields.get("size"))
    if size is not None:
        data["size"] = size
    data.update(
        _output(fields, acceleration_given="acceleration" in given, qualities=GENERATION_QUALITY_ACCELERATION)
    )
    return EditCall(model=_generation_model(fields.get("model")), input=data, response_format=response_format)


def _check_generation_field(name: str) -> None:
    if name in (*GENERATION_FIELDS, *GENERATION_IGNORED_FIELDS, *GENERATION_NATIVE_FIELDS):
        return
    if name in GENERATION_UNSUPPORTED_FIELDS:
        raise InvalidInput(GENERATION_UNSUPPORTED_FIELDS[name], field=name)
    raise InvalidInput(
        f"Unknown parameter: {name!r}.",
        field=name,
        hint="text-to-image fields: " + ", ".join(GENERATION_NATIVE_FIELDS),
    )


def _text(value: Any, name: str) -> str:
    """A JSON scalar as the text a form would have carried (true -> "true", 2 -> "2")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise InvalidInput(f"{name} must be a string or a number, not {json_kind(value)}", field=name)


def _generation_size(raw: str | None) -> str | None:
    """OpenAI's `size` as the native text-to-image `size` ("WxH", 1K, 2K); None for auto."""
    if raw is None or raw.strip().lower() == "auto":
        return None
    if raw.strip().upper() in SIZE_PRESETS:
        return raw.strip().upper()
    match = re.fullmatch(r"\s*(\d{1,6})\s*x\s*(\d{1,6})\s*", raw.lower())
    if match is None:
        presets = ", ".join(SIZE_PRESETS)
        raise InvalidInput(
            f"size must be 'auto', 'WIDTHxHEIGHT' (e.g. '1024x1024') or {presets}, got {raw!r}", field="size"
        )
    return f"{int(match[1])}x{int(match[2])}"


def _generation_model(raw: str | None) -> str:
    served = served_models((TEXT_TO_IMAGE_TASK,))
    name = (raw or "auto").strip()
    if name in served:
        return served[name]
    choices = ", ".join([*_listed(served), "auto"])
    if name != "auto" and not name.lower().startswith(AUTO_MODEL_PREFIXES):
        edits = edit_models()
        served_elsewhere = name in MODELS or name in edits
        kind = "does not generate images from a prompt here" if served_elsewhere else "is unknown"
        raise InvalidInput(
            f"model {name!r} {kind}; choose one of {choices} (or an OpenAI image model)",
            field="model",
            hint="POST /images/edits takes the image-editing models" if name in edits else None,
        )
    if not served:
        raise InvalidInput("this server serves no text-to-image model", field="model")
    return TEXT_TO_IMAGE if TEXT_TO_IMAGE in served.values() else next(iter(served.values()))


# response rendering ----------------------------------------------------------------------------------


def render_edit(
    job: Job,
    response_format: ResponseFormat,
    *,
    read: Callable[[str], bytes],
    url_for: Callable[[str], str | None],
) -> dict[str, Any]:
    """A succeeded job (an edit or a generation) as an ImagesResponse (pure, given how to read an asset and
    link to it)."""
    data = []
    for output in job.outputs:
        revised = _revised_prompt(job, output)
        if response_format == "url":
            url = url_for(output.asset_id)
            if url is None:
                raise NotFound(f"the result {output.asset_id} of job {job.id} has expired")
            item: dict[str, Any] = {"url": url}
        else:
            item = {"b64_json": base64.b64encode(read(output.asset_id)).decode("ascii")}
        if revised is not None:
            item["revised_prompt"] = revised
        data.append(item)
    body: dict[str, Any] = {"created": int(job.created_at), "data": data}
    body["output_format"] = job.input.get("output_format", "png")
    if job.outputs:
        body["size"] = f"{job.outputs[0].width}x{job.outputs[0].height}"
    return body


def _revised_prompt(job: Job, output: OutputAsset) -> str | None:
    """The prompt the model was given for `output` when it differs from the caller's: with the camera phrase
    (`<sks> right side view ...`), or rewritten; None for plain instruction edits as given."""
    sent = output.plan.get("prompt") if output.plan else None
    if not isinstance(sent, str) or sent.strip() == str(job.input.get("prompt", "")).strip():
        return None
    return sent


def model_object(model_id: str) -> dict[str, Any]:
    """A served model as an OpenAI model object."""
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "reangle"}
