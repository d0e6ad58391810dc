"""The Scenario dialect's pure translations: model inputs, request bodies, jobs, assets and models as JSON.

No HTTP and no I/O here, so that golden tests can drive every mapping directly. The routes live in
`reangle.dialects.scenario`. Field names and required fields follow scenario-sdk 2.4.0's response models.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from reangle.api.render import iso
from reangle.catalog import ModelEntry
from reangle.core.edit import GENERATION_PRESETS, MAX_OUTPUTS, PRESETS
from reangle.core.images import OutputFormat
from reangle.core.inputs import NUL
from reangle.core.jobs import Job, JobStatus
from reangle.core.json_values import is_finite, shown_number
from reangle.core.models import (
    AXIS_PAIRS,
    CAMERA_EDIT,
    INSTRUCTION_EDIT,
    MAX_SET_SIZE,
    TEXT_TO_IMAGE,
    WAN_IMAGE,
)
from reangle.core.models import MODELS as NATIVE_MODELS
from reangle.core.ports import AssetKey, AssetRecord
from reangle.core.wan_image import MAX_OUTPUTS as WAN_MAX_OUTPUTS
from reangle.core.wan_image import MAX_SET_OUTPUTS as WAN_MAX_SET_OUTPUTS
from reangle.errors import InvalidInput, NotFound

MODEL_PREFIX = "model_"
#: Scenario's spellings of the core statuses; the terminal ones are success, failure, canceled.
STATUS: dict[JobStatus, str] = {
    JobStatus.QUEUED: "queued",
    JobStatus.PROCESSING: "in-progress",
    JobStatus.SUCCEEDED: "success",
    JobStatus.FAILED: "failure",
    JobStatus.CANCELED: "canceled",
}
#: `GET /jobs?status=` filter values -> the core status they select.
STATUS_FILTER: dict[str, JobStatus] = {name: status for status, name in STATUS.items()}
JOB_TYPE = "custom"
#: Scenario's `acceleration` spellings -> reangle's presets (none: base model; regular/high: Lightning 8/4).
ACCELERATION = {"none": "none", "regular": "regular", "high": "high"}
MAX_SEED = 2_147_483_647
#: POST /assets/get-bulk reads at most this many ids (Scenario's own limit).
MAX_BULK_ASSETS = 200
#: Models are declared data, not records: one fixed date for their createdAt/updatedAt.
MODEL_DATE = "2025-12-23T00:00:00.000Z"
PER_PRESET = "default for acceleration none; regular and high choose their own unless given"
TARGET_FORMATS: dict[str, OutputFormat] = {"png": "png", "jpeg": "jpeg", "jpg": "jpeg", "webp": "webp"}
#: The asset types `GET /assets?type=` (or `types=`, comma separated) takes, as scenario-sdk 2.4.0 lists them.
ASSET_TYPES = frozenset(
    {
        *("inference-txt2img", "inference-txt2img-ip-adapter", "inference-txt2img-texture"),
        *("inference-img2img", "inference-img2img-ip-adapter", "inference-img2img-texture"),
        *("inference-inpaint", "inference-inpaint-ip-adapter", "inference-reference"),
        *("inference-reference-texture", "inference-controlnet", "inference-controlnet-ip-adapter"),
        *("inference-controlnet-img2img", "inference-controlnet-reference", "inference-controlnet-inpaint"),
        *("inference-controlnet-inpaint-ip-adapter", "inference-controlnet-texture", "background-removal"),
        *("canvas", "canvas-export", "canvas-drawing", "detection", "patch", "pixelization", "upscale"),
        *("upscale-texture", "upscale-skybox", "vectorization", "segment", "segmentation-image"),
        *("segmentation-mask", "skybox-base-360", "skybox-hdri", "skybox-3d", "restyle", "reframe"),
        *("generative-fill", "texture", "texture-height", "texture-normal", "texture-smoothness"),
        *("texture-metallic", "texture-edge", "texture-ao", "texture-albedo", "image-prompt-editing"),
        *("unknown", "img23d", "txt23d", "video23d", "3d23d", "img2splat", "3d23d-texture", "3d-texture"),
        *("3d-texture-mtl", "3d-texture-albedo", "3d-texture-normal", "3d-texture-roughness"),
        *("3d-texture-metallic", "img2video", "txt2audio", "audio2audio", "audio2video", "video2audio"),
        *("voice-clone", "video2video", "video2img", "txt2img", "img2img", "txt2video", "uploaded"),
        *("uploaded-video", "uploaded-audio", "uploaded-3d", "uploaded-avatar", "upscale-video"),
        *("uploaded-text", "audio2txt", "txt2txt", "img2txt", "video2txt"),
    }
)
#: The asset types reangle makes (an asset's `source`): uploads, outputs made from images or from a prompt.
MADE_ASSET_TYPES = frozenset({"uploaded", "img2img", "txt2img"})
#: `GET /assets?privacy=` values -> whether reangle's assets (all private to their key) match.
ASSET_PRIVACY = {"private": True, "public": False, "unlisted": False}
#: `GET /assets?sortBy=`: an asset here never changes, so its updatedAt is its createdAt.
ASSET_SORT_FIELDS = ("createdAt", "updatedAt")
#: Each native camera field -> the other field of its axis (vertical_angle <-> elevation).
AXIS_OTHER_FIELD: Mapping[str, str] = {
    **{first: second for first, second in AXIS_PAIRS},
    **{second: first for first, second in AXIS_PAIRS},
}


@dataclass(frozen=True, kw_only=True)
class InputSpec:
    """One body key of a Scenario model: its native field, type, range and default."""

    name: str
    native: str
    type: str  #: number | string | boolean | file_array
    description: str = ""
    label: str = ""  #: default: from the name, horizontalAngle -> "Horizontal angle"
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    integer: bool = False
    required: bool = False
    allowed: tuple[str, ...] = ()
    #: filled with `default` only when acceleration is "none" (Lightning presets choose their own)
    per_preset: bool = False

    def to_json(self) -> dict[str, Any]:
        label = self.label or re.sub(r"(?<=[a-z])(?=[A-Z])", " ", self.name).capitalize()
        out: dict[str, Any] = {"name": self.name, "type": self.type, "label": label}
        if self.description:
            out["description"] = self.description
        if self.type == "file_array":
            out["kind"] = "image"
        if self.default is not None:
            out["default"] = self.default
        if self.minimum is not None:
            out["min"] = self.minimum
        if self.maximum is not None:
            out["max"] = self.maximum
        if self.integer:
            out["step"] = 1
        if self.allowed:
            out["allowedValues"] = list(self.allowed)
        if self.required:
            out["required"] = {"always": True}
        return out


@dataclass(frozen=True, kw_only=True)
class ScenarioModel:
    id: str
    native: str
    name: str
    description: str
    inputs: tuple[InputSpec, ...]
    capabilities: tuple[str, ...] = ("img2img",)
    #: Why this server cannot run it now (a setting is missing); empty when it can.
    unavailable: str = ""
    #: The most `numOutputs` one job makes; with `imageSetMode` true, `max_set_outputs` (None: no set mode).
    max_outputs: int = MAX_OUTPUTS
    max_set_outputs: int | None = None

    def to_json(self) -> dict[str, Any]:
        description = self.description
        if self.unavailable:
            description = f"{description}. Unavailable on this server: {self.unavailable}"
        return {
            "id": self.id,
            "name": self.name,
            "shortDescription": description,
            "type": "custom",
            "status": "trained",
            "source": "other",
            "privacy": "public",
            "custom": False,
            "capabilities": list(self.capabilities),
            "collectionIds": [],
            "exampleAssetIds": [],
            "tags": ["unavailable"] if self.unavailable else [],
            "trainingImagesNumber": 0,
            "createdAt": MODEL_DATE,
            "updatedAt": MODEL_DATE,
            "inputs": [spec.to_json() for spec in self.inputs],
        }


def _num(name: str, native: str, default: float | None, low: float, high: float, about: str) -> InputSpec:
    return InputSpec(
        name=name, native=native, type="number", description=about, default=default, minimum=low, maximum=high
    )


def _images(about: str) -> InputSpec:
    return InputSpec(
        name="images",
        native="images",
        type="file_array",
        description=about,
        minimum=1,
        maximum=3,
        required=True,
    )


def _outputs(maximum: int, max_set: int | None = None) -> InputSpec:
    """`numOutputs`, whose `max` is the most any request may ask for (in image set mode, when it has one)."""
    if max_set is None:
        spec = _num("numOutputs", "num_outputs", 1, 1, maximum, "images to make")
    else:
        about = f"images to make (above {maximum} only in image set mode)"
        spec = _num("numOutputs", "num_outputs", 1, 1, max_set, about)
    return replace(spec, integer=True, label="Outputs")


def _shared(steps: int, guidance: float, max_set_outputs: int | None = None) -> tuple[InputSpec, ...]:
    return (
        _outputs(MAX_OUTPUTS, max_set_outputs),
        replace(
            _num("numInferenceSteps", "num_inference_steps", steps, 1, 50, PER_PRESET),
            integer=True,
            per_preset=True,
            label="Steps",
        ),
        replace(_num("guidanceScale", "guidance_scale", guidance, 1, 20, PER_PRESET), per_preset=True),
        InputSpec(
            name="acceleration",
            native="acceleration",
            type="string",
            default="none",
            description="none: base model; regular: Lightning 8 steps; high: Lightning 4 steps",
            allowed=tuple(ACCELERATION),
        ),
        replace(_num("seed", "seed", None, 0, MAX_SEED, "random when absent"), integer=True),
    )


CAMERA_MODEL = ScenarioModel(
    id=MODEL_PREFIX + CAMERA_EDIT,
    native=CAMERA_EDIT,
    name="Qwen Edit Multiangle 2511",
    description="Qwen-Image-Edit-2511 + Multiple-Angles LoRA: the scene from another camera pose",
    inputs=(
        _images("the image to re-photograph: asset id, data URL or http(s) URL"),
        _num(
            "horizontalAngle", "horizontal_angle", 0, 0, 360, "azimuth: 0 front, 90 right, 180 back, 270 left"
        ),
        _num(
            "verticalAngle", "vertical_angle", 0, -30, 90, "elevation: -30 low, 0 eye-level, 30, 60, 90 top"
        ),
        _num("zoom", "zoom", 5, 0, 10, "0 wide shot, 5 medium shot, 10 close-up"),
        replace(
            _num("loraScale", "lora_scale", 1.5, 0, 4, "strength of the camera LoRA"), label="LoRA scale"
        ),
        InputSpec(name="prompt", native="prompt", type="string", description="optional extra instruction"),
        *_shared(steps=28, guidance=4.5),
    ),
)

INSTRUCTION_MODEL = ScenarioModel(
    id=MODEL_PREFIX + INSTRUCTION_EDIT,
    native=INSTRUCTION_EDIT,
    name="Qwen Image Edit 2511",
    description="Qwen-Image-Edit-2511: edit 1-3 images by instruction",
    inputs=(
        _images("the image(s) to edit: asset ids, data URLs or http(s) URLs"),
        InputSpec(name="prompt", native="prompt", type="string", description="what to change", required=True),
        *_shared(steps=PRESETS["none"].steps, guidance=PRESETS["none"].true_cfg_scale),
    ),
)

WAN_MODEL = ScenarioModel(
    id=MODEL_PREFIX + "wan-2-7-image",
    native=WAN_IMAGE,
    name="Wan 2.7 Image",
    capabilities=("txt2img", "img2img"),
    description="Alibaba's Wan 2.7 image through DashScope: text-to-image, editing with up to 9 images, sets",
    max_outputs=WAN_MAX_OUTPUTS,
    max_set_outputs=WAN_MAX_SET_OUTPUTS,
    inputs=(
        InputSpec(
            name="prompt", native="prompt", type="string", description="the image or edit", required=True
        ),
        replace(
            _images("0-9 reference images: asset ids, data URLs or http(s) URLs"),
            minimum=0,
            maximum=9,
            required=False,
        ),
        InputSpec(name="size", native="size", type="string", default="2K", description="1K, 2K or WxH"),
        _outputs(WAN_MAX_OUTPUTS, WAN_MAX_SET_OUTPUTS),
        InputSpec(
            name="imageSetMode",
            native="image_set_mode",
            type="boolean",
            default=False,
            description="a set of related images from one prompt",
        ),
        InputSpec(
            name="thinkingMode",
            native="thinking_mode",
            type="boolean",
            default=True,
            description="plan the image first (text-to-image only)",
        ),
        replace(_num("seed", "seed", None, 0, MAX_SEED, "random when absent"), integer=True),
    ),
)

TEXT_TO_IMAGE_MODEL = ScenarioModel(
    id=MODEL_PREFIX + TEXT_TO_IMAGE,
    native=TEXT_TO_IMAGE,
    name="Qwen Image 2512",
    description="Qwen-Image-2512: images from a prompt",
    capabilities=("txt2img",),
    max_set_outputs=MAX_SET_SIZE,
    inputs=(
        InputSpec(name="prompt", native="prompt", type="string", description="what to make", required=True),
        InputSpec(
            name="negativePrompt", native="negative_prompt", type="string", description="what to avoid"
        ),
        InputSpec(
            name="size", native="size", type="string", description="1K, 2K or WxH (default: 1K square)"
        ),
        InputSpec(
            name="imageSetMode",
            native="image_set",
            type="boolean",
            default=False,
            description="a coherent set of views of one subject, one per output",
        ),
        # a generation's own recipe (50 steps), not an edit's
        *_shared(
            steps=GENERATION_PRESETS["none"].steps,
            guidance=GENERATION_PRESETS["none"].true_cfg_scale,
            max_set_outputs=MAX_SET_SIZE,
        ),
    ),
)

#: The Scenario model of each task; a catalog model is listed as its task's, under its own id and defaults.
TASK_MODELS: dict[str, ScenarioModel] = {
    "camera_edit": CAMERA_MODEL,
    "instruction_edit": INSTRUCTION_MODEL,
    "text_to_image": TEXT_TO_IMAGE_MODEL,
    "image_edit_or_generate": WAN_MODEL,
}


def scenario_models() -> dict[str, ScenarioModel]:
    """The served models that have a Scenario id, by that id."""
    models = {}
    for spec in NATIVE_MODELS.values():
        model_id = spec.entry.dialect_id("scenario")
        if model_id is not None:
            model = _for_entry(TASK_MODELS[spec.entry.task], model_id, spec.entry)
            models[model_id] = replace(model, unavailable=spec.unavailable or "")
    return models


def by_native(native_id: str) -> ScenarioModel | None:
    return next((model for model in scenario_models().values() if model.native == native_id), None)


def _for_entry(template: ScenarioModel, model_id: str, entry: ModelEntry) -> ScenarioModel:
    inputs = tuple(_with_catalog_default(spec, entry.defaults) for spec in template.inputs)
    model = replace(
        template, id=model_id, native=entry.id, name=entry.name, description=entry.description, inputs=inputs
    )
    return _capped_images(_capped_outputs(model, entry.limits.max_outputs), entry.limits.max_images)


def _with_catalog_default(spec: InputSpec, defaults: Mapping[str, object]) -> InputSpec:
    """`spec` with the catalog entry's default for its native field. A camera axis the entry gives a default
    by its other field (`elevation` for `verticalAngle`) gets none of Scenario's: sent, it would override the
    model's own; its description says what the model uses instead."""
    if spec.native in defaults:
        return replace(spec, default=defaults[spec.native], required=False)
    other = AXIS_OTHER_FIELD.get(spec.native)
    if other is None or other not in defaults:
        return spec
    value = defaults[other]
    shown = _shown(value) if isinstance(value, int | float) else str(value)
    return replace(
        spec, default=None, description=f"{spec.description}; default: this model's {other} {shown}"
    )


def _capped_images(model: ScenarioModel, limit: int | None) -> ScenarioModel:
    """The model with a catalog entry's lower bound on input images as its `images` input's maximum."""
    if limit is None:
        return model
    inputs = tuple(
        replace(spec, maximum=min(spec.maximum, limit))
        if spec.name == "images" and spec.maximum is not None
        else spec
        for spec in model.inputs
    )
    return replace(model, inputs=inputs)


def _capped_outputs(model: ScenarioModel, limit: int | None) -> ScenarioModel:
    """The model with a catalog entry's lower bound on outputs, in both modes, and its `numOutputs` input
    showing it."""
    if limit is None:
        return model
    max_outputs = min(model.max_outputs, limit)
    max_set = None if model.max_set_outputs is None else min(model.max_set_outputs, limit)
    outputs = _outputs(max_outputs, max_set if max_set is not None and max_set > max_outputs else None)
    inputs = tuple(
        replace(outputs, default=spec.default) if spec.name == "numOutputs" else spec for spec in model.inputs
    )
    return replace(model, inputs=inputs, max_outputs=max_outputs, max_set_outputs=max_set)


def scenario_model(model_id: str) -> ScenarioModel:
    models = scenario_models()
    if model_id not in models:
        raise NotFound(f"no model {model_id}; this server runs {', '.join(models)}")
    return models[model_id]


# requests ------------------------------------------------------------------------------------------------


def _shown_key(key: str) -> str:
    """A body key as a message names it: bare when it is a plain name (`negativePrompt`), as fields are named,
    else quoted, so that no text the client put in it reads as part of the message."""
    return key if key.isidentifier() else repr(key)


def translate_request(model_id: str, body: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """A `POST /generate/custom/{modelId}` body -> (native model id, native input), Scenario defaults filled.

    Ranges are Scenario's (narrower than reangle's); an unknown key or acceleration value is an error. An
    absent acceleration is the model's default (the catalog's, else Scenario's `none`), which picks the
    steps and guidance defaults. A text-to-image model takes no images: an empty `images` (null or []) is no
    image, not an unknown input.
    """
    model = scenario_model(model_id)
    known = {spec.name: spec for spec in model.inputs}
    unknown = sorted(name for name in set(body) - set(known) if not _no_images(name, body[name]))
    if unknown:
        raise InvalidInput(
            f"{_shown_key(unknown[0])}: unknown input for {model.id}; its inputs are {', '.join(known)}",
            field=unknown[0],
            hint=f"see GET /models/{model.id}",
        )
    accelerated = "acceleration" in known
    acceleration = _acceleration(_given_or_default(body, known["acceleration"])) if accelerated else "none"
    native: dict[str, Any] = {}
    for spec in model.inputs:
        if spec.name == "acceleration":
            continue
        value = body.get(spec.name)
        if value is None:
            if spec.required:
                raise InvalidInput(f"{spec.name}: field required", field=spec.name)
            if spec.default is not None and (acceleration == "none" or not spec.per_preset):
                native[spec.native] = spec.default
            continue
        if spec.name == "numOutputs":  # its range depends on imageSetMode: `_check_outputs` checks it
            spec = replace(spec, minimum=None, maximum=None)
        native[spec.native] = _value(spec, value)
    if accelerated:
        native["acceleration"] = acceleration
    _check_outputs(model, native)
    return model.native, native


def _no_images(name: str, value: object) -> bool:
    return name == "images" and value in (None, [])


def _given_or_default(body: Mapping[str, Any], spec: InputSpec) -> object:
    value = body.get(spec.name)
    return spec.default if value is None else value


def _check_outputs(model: ScenarioModel, native: Mapping[str, Any]) -> None:
    """`numOutputs` within the model's limit for the mode the request runs in (image set or not)."""
    count = next((native.get(spec.native) for spec in model.inputs if spec.name == "numOutputs"), None)
    if not isinstance(count, int):
        return
    image_set = any(native.get(spec.native) is True for spec in model.inputs if spec.name == "imageSetMode")
    max_set = model.max_set_outputs
    limit, mode = model.max_outputs, ""
    if image_set and max_set is not None:
        limit, mode = max_set, " in image set mode"
    elif max_set is not None and max_set > limit:
        mode = f" without imageSetMode (up to {max_set} with it)"
    if not 1 <= count <= limit:
        raise InvalidInput(f"numOutputs must be between 1 and {limit}{mode}, got {count}", field="numOutputs")


def _acceleration(value: object) -> str:
    spelled = value.strip().lower() if isinstance(value, str) else value
    if not isinstance(spelled, str) or spelled not in ACCELERATION:
        raise InvalidInput(
            f"acceleration must be one of {', '.join(ACCELERATION)}, got {value!r}", field="acceleration"
        )
    return ACCELERATION[spelled]


def _value(spec: InputSpec, value: object) -> object:
    if spec.type == "file_array":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(item, str) and item for item in items):
            raise InvalidInput(f"{spec.name} must be a list of asset ids or image URLs", field=spec.name)
        low, high = spec.minimum or 0, spec.maximum or 1
        if not low <= len(items) <= high:
            raise InvalidInput(
                f"{spec.name} takes {low:g} to {high:g} images, got {len(items)}", field=spec.name
            )
        return items
    if spec.type == "boolean":
        if not isinstance(value, bool):
            raise InvalidInput(f"{spec.name} must be true or false, got {value!r}", field=spec.name)
        return value
    if spec.type == "string":
        if not isinstance(value, str):
            raise InvalidInput(f"{spec.name} must be a string, got {value!r}", field=spec.name)
        return value
    return _number(spec, value)


def _shown(number: float) -> str:
    """A bound or value as written: 2147483647, not 2.14748e+09."""
    if isinstance(number, int) or math.isinf(number):
        return shown_number(number)
    return str(int(number)) if number.is_integer() and abs(number) < 1e16 else f"{number:g}"


def _number(spec: InputSpec, value: object) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not is_finite(value):
        raise InvalidInput(f"{spec.name} must be a number, got {value!r}", field=spec.name)
    low = -math.inf if spec.minimum is None else spec.minimum
    high = math.inf if spec.maximum is None else spec.maximum
    if not low <= value <= high:
        raise InvalidInput(
            f"{spec.name} must be between {_shown(low)} and {_shown(high)}, got {_shown(value)}",
            field=spec.name,
        )
    if spec.integer:
        if value != int(value):
            raise InvalidInput(f"{spec.name} must be a whole number, got {value:g}", field=spec.name)
        return int(value)
    return value


def as_sent(exc: InvalidInput, model_id: str) -> InvalidInput:
    """A core refusal of a native input field (`input.horizontal_angle`, `input.images.0`) named by the body
    key the client sent (`horizontalAngle`, `images.0`); other refusals as they are."""
    head, _, rest = (exc.field or "").removeprefix("input.").partition(".")
    if not (exc.field or "").startswith("input."):
        return exc
    model = scenario_model(model_id)
    name = next((spec.name for spec in model.inputs if spec.native == head), head)
    field = f"{name}.{rest}" if rest else name
    return type(exc)(exc.message.replace(exc.field or "", field, 1), field=field, hint=exc.hint)


def echo_input(job: Job) -> dict[str, Any]:
    """The job's input as Scenario body keys (`metadata.input`), image references as asset ids."""
    model = by_native(job.model)
    if model is None:
        return {}
    echoed = {}
    for spec in model.inputs:
        value = job.input.get(spec.native)
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # the core stores angles as floats; echo 90, as sent, not 90.0
        if value is not None and value not in ("", []):
            echoed[spec.name] = value
    return echoed


# responses -----------------------------------------------------------------------------------------------


def updated_at(job: Job) -> float:
    """When the job last changed (Scenario's `updatedAt`)."""
    moments = [job.created_at, job.started_at, job.finished_at, *(change.at for change in job.history)]
    return max(moment for moment in moments if moment is not None)


def job_json(job: Job) -> dict[str, Any]:
    """A core Job as Scenario's Job object (every field scenario-sdk marks required)."""
    metadata: dict[str, Any] = {"input": echo_input(job)}
    if job.status == JobStatus.SUCCEEDED:
        metadata["assetIds"] = [output.asset_id for output in job.outputs]
    if job.error is not None:
        metadata["error"] = job.error.message
        if job.error.hint:
            metadata["hint"] = job.error.hint
    return {
        "jobId": job.id,
        "jobType": JOB_TYPE,
        "status": STATUS[job.status],
        "progress": 1.0 if job.status == JobStatus.SUCCEEDED else round(job.progress, 4),
        "createdAt": iso(job.created_at),
        "updatedAt": iso(updated_at(job)),
        "statusHistory": [
            {"status": STATUS[change.status], "date": iso(change.at)} for change in job.history
        ],
        "metadata": metadata,
        "authorId": job.owner,
        "ownerId": job.owner,
    }


def job_source(job: Job) -> str:
    """How Scenario names what made a job's outputs: `img2img` from images, `txt2img` from a prompt alone."""
    made_from_images = bool(job.input.get("images") or job.input.get("image"))
    return "img2img" if made_from_images else "txt2img"


def bulk_asset_ids(given: Any) -> list[str]:
    """POST /assets/get-bulk's `assetIds`: a list of up to MAX_BULK_ASSETS ids, each once, in order."""
    if not isinstance(given, list) or not all(isinstance(item, str) for item in given):
        raise InvalidInput("assetIds must be a list of asset ids", field="assetIds")
    if len(given) > MAX_BULK_ASSETS:
        raise InvalidInput(
            f"assetIds may hold at most {MAX_BULK_ASSETS} ids, got {len(given)}", field="assetIds"
        )
    return list(dict.fromkeys(given))


def asset_json(record: AssetRecord, url: str, *, job: Job | None = None) -> dict[str, Any]:
    """An asset as Scenario's Asset object: an upload, or an output of `job` (source img2img when the job
    was given images, txt2img when it made its images from a prompt alone)."""
    source = "uploaded" if job is None else job_source(job)
    fmt = record.mime_type.removeprefix("image/")
    metadata: dict[str, Any] = {
        "kind": "image",
        "type": source,
        "width": record.width,
        "height": record.height,
    }
    if record.name is not None:
        metadata["name"] = record.name
    if job is not None:
        metadata.update(parentJobId=job.id, numOutputs=len(job.outputs))
        model = by_native(job.model)
        if model is not None:
            metadata["modelId"] = model.id
        for index, output in enumerate(job.outputs):
            if output.asset_id == record.id:
                metadata["outputIndex"] = index
                if output.seed is not None:
                    metadata["seed"] = str(output.seed)  # a string in Scenario's asset metadata
    created = iso(record.created_at)
    return {
        "id": record.id,
        "url": url,
        "mimeType": record.mime_type,
        "kind": "image",
        "source": source,
        "status": "success",
        "privacy": "private",
        "tags": [],
        "collectionIds": [],
        "editCapabilities": [],
        "createdAt": created,
        "updatedAt": created,
        "authorId": record.owner,
        "ownerId": record.owner,
        "metadata": metadata,
        "properties": {"size": record.bytes, "width": record.width, "height": record.height, "format": fmt},
    }


def target_format(value: object) -> OutputFormat | None:
    """`targetFormat` of a download request -> png | jpeg | webp, None for the original file."""
    if value is None:
        return None
    if not isinstance(value, str) or value.lower() not in TARGET_FORMATS:
        raise InvalidInput(
            f"targetFormat must be one of {', '.join(TARGET_FORMATS)} for images, got {value!r}",
            field="targetFormat",
        )
    return TARGET_FORMATS[value.lower()]


def asset_types(one: str | None, several: str | None) -> frozenset[str] | None:
    """The types of `GET /assets?type=` or `?types=` (comma separated); None when neither is given."""
    if one is not None and several is not None:
        raise InvalidInput('"type" and "types" cannot be used together', field="types")
    field, given = ("type", one) if several is None else ("types", several)
    names = [name.strip() for name in (given or "").split(",") if name.strip()]
    for name in names:
        if name not in ASSET_TYPES:
            raise InvalidInput(
                f"{field} holds {name!r}, not a Scenario asset type; this server makes "
                f"{', '.join(sorted(MADE_ASSET_TYPES))}",
                field=field,
            )
    return frozenset(names) or None


def asset_page_token(key: AssetKey) -> str:
    """The opaque `nextPaginationToken` that resumes the asset listing after `key`."""
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def asset_page_key(token: str) -> AssetKey:
    """The key an `asset_page_token` holds, or InvalidInput when the token is not one."""
    created_at = math.nan
    try:
        when, asset_id = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if isinstance(when, int | float) and not isinstance(when, bool):
            created_at = float(when)
    # not base64, not JSON (or nested too deep), not a pair, a number too large for a time
    except (binascii.Error, ValueError, TypeError, RecursionError, OverflowError):
        asset_id = None
    # no id this server hands out holds a NUL, which PostgreSQL cannot even compare
    if not (math.isfinite(created_at) and isinstance(asset_id, str) and NUL not in asset_id):
        raise InvalidInput("paginationToken is not one this server returned", field="paginationToken")
    return created_at, asset_id
