"""The model registry: each served model's id, description and input schema, declared as data.

Inputs are validated here once, whatever API dialect they arrived through; `edit_requests` turns a validated
input into the engine's EditRequest(s).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from types import NoneType, UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from reangle.catalog import (
    Catalog,
    CatalogError,
    ModelEntry,
    availability,
    entry_inputs,
    load_catalog,
)
from reangle.catalog.errors import entry_label
from reangle.core.camera import CameraPose, pose_from_snapped, resolve_pose, views_given_twice
from reangle.core.edit import (
    ASPECT_RATIOS,
    GENERATION_PRESETS,
    MATCH_INPUT,
    MAX_INPUT_IMAGES,
    MAX_OUTPUTS,
    MAX_PROMPT_CHARS,
    PRESETS,
    Acceleration,
    EditRequest,
    GenerateRequest,
    Preset,
    check_request,
)
from reangle.core.jobs import JobKind
from reangle.core.lora_refs import KINDS, MAX_LORAS, MAX_SCALE, LoraRef, RefKind
from reangle.core.wan_image import IMAGE_SIDE_RANGE as WAN_IMAGE_SIDES
from reangle.core.wan_image import MAX_ASPECT_RATIO as WAN_MAX_ASPECT
from reangle.core.wan_image import MAX_IMAGE_BYTES as WAN_MAX_IMAGE_BYTES
from reangle.core.wan_image import MAX_IMAGES as WAN_MAX_IMAGES
from reangle.core.wan_image import MAX_PROMPT_CHARS as WAN_MAX_PROMPT_CHARS
from reangle.core.wan_image import MAX_SET_OUTPUTS as WAN_MAX_SET_OUTPUTS
from reangle.core.wan_image import SEED_RANGE as WAN_SEED_RANGE
from reangle.core.wan_image import WanImageRequest, elongated, request_from_scenario
from reangle.errors import InvalidInput, TooLarge

CAMERA_EDIT = "qwen-edit-multiangle-2511"
INSTRUCTION_EDIT = "qwen-image-edit-2511"
TEXT_TO_IMAGE = "qwen-image-2512"
WAN_IMAGE = "wan-2.7-image"

ImageRef = Annotated[
    str, Field(min_length=1, description="an uploaded asset id, a data URL, raw base64, or an http(s) URL")
]


def _is_number(annotation: object) -> bool:
    """int or float, optional or not."""
    if get_origin(annotation) in (Union, UnionType):
        return all(_is_number(arg) or arg is NoneType for arg in get_args(annotation))
    return annotation in (int, float)


def _is_number_list(annotation: object) -> bool:
    return get_origin(annotation) is list and _is_number(get_args(annotation)[0])


def not_true_or_false(value: object) -> object:
    """A number field's check before pydantic's: JSON true or false is refused, not read as 1 or 0."""
    if isinstance(value, bool):
        raise PydanticCustomError("number_type", "Input should be a number, not true or false")
    return value


class _RequestModel(BaseModel):
    """A request's input: unknown fields refused, and JSON true or false never taken as a number (pydantic
    would read `"num_outputs": true` as 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: object, info: ValidationInfo) -> object:
        annotation = cls.model_fields[str(info.field_name)].annotation
        if _is_number(annotation):
            return not_true_or_false(value)
        if isinstance(value, list) and _is_number_list(annotation):
            for index, item in enumerate(value):
                if isinstance(item, bool):
                    raise PydanticCustomError(
                        "number_type",
                        "Input should be a list of numbers; item {index} is true or false",
                        {"index": index},
                    )
        return value


class LoraReference(_RequestModel):
    """A LoRA of the request's own, applied on top of the model's: exactly one of url, path or id."""

    url: str | None = Field(default=None, min_length=1, description="an http(s) URL of a .safetensors file")
    path: str | None = Field(default=None, min_length=1, description="a file in the server's LoRA folder")
    id: str | None = Field(default=None, min_length=1, description="a LoRA the operator registered")
    scale: float = Field(default=1.0, ge=-MAX_SCALE, le=MAX_SCALE, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_source(self) -> LoraReference:
        if len(self._given()) != 1:
            raise PydanticCustomError("lora_source", "give exactly one of url, path or id")
        return self

    @model_serializer(mode="wrap")
    def _dump_given(self, dump: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = dump(self)
        return {name: value for name, value in data.items() if value is not None}

    def _given(self) -> list[RefKind]:
        return [kind for kind in KINDS if getattr(self, kind) is not None]

    def ref(self, field: str) -> LoraRef:
        kind = self._given()[0]
        value: str = getattr(self, kind)
        return LoraRef(kind=kind, value=value.strip(), scale=self.scale, field=f"{field}.{kind}")


def _acceleration_help(presets: Mapping[Acceleration, Preset]) -> str:
    base = presets["none"]
    return (
        f"high: Lightning {presets['high'].steps} steps; regular: {presets['regular'].steps} steps; "
        f"none: base model, {base.steps} steps at true CFG {base.true_cfg_scale:g}"
    )


class _Input(_RequestModel):
    prompt: str = Field(default="", max_length=MAX_PROMPT_CHARS, description="your own instruction")
    rewrite_prompt: bool = Field(
        default=False,
        description="rewrite your words into a precise instruction with a vision-language model that sees "
        "the input images first (the camera phrase is never changed); the job's outputs record both",
    )
    loras: list[LoraReference] = Field(
        default_factory=list,
        max_length=MAX_LORAS,
        description="LoRAs of your own on top of the model's: [{url | path | id, scale}]",
    )
    num_inference_steps: int | None = Field(default=None, description="default from acceleration")
    guidance_scale: float | None = Field(default=None, description="true CFG scale; above 1 doubles the cost")
    acceleration: Literal["none", "regular", "high"] = Field(
        default="high", description=_acceleration_help(PRESETS)
    )
    seed: int | None = Field(default=None, description="random when absent; output k uses seed + k")
    width: int | None = None
    height: int | None = None
    aspect_ratio: str | None = Field(default=None, description=" ".join([*ASPECT_RATIOS, MATCH_INPUT]))
    output_format: Literal["png", "jpeg", "webp"] = "png"
    quality: int = Field(default=90, ge=1, le=100, description="JPEG/WebP quality")

    def _request(self, *, pose: CameraPose | None, lora_scale: float, num_outputs: int) -> EditRequest:
        return EditRequest(
            prompt=self.prompt,
            pose=pose,
            lora_scale=lora_scale,
            num_outputs=num_outputs,
            steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            acceleration=self.acceleration,
            seed=self.seed,
            width=self.width,
            height=self.height,
            aspect_ratio=self.aspect_ratio,
        )

    def lora_refs(self) -> list[LoraRef]:
        return [lora.ref(f"input.loras.{index}") for index, lora in enumerate(self.loras)]


class CameraEditInput(_Input):
    """Re-photograph 1-3 images from a camera pose (continuous angles + zoom, or snapped values)."""

    images: list[ImageRef] = Field(min_length=1, max_length=3)
    horizontal_angle: float | None = Field(default=None, description="degrees, any value (mod 360)")
    vertical_angle: float | None = Field(default=None, description="degrees, -90..90")
    zoom: float | None = Field(default=None, description="0 (wide shot) .. 10 (close-up)")
    azimuth: float | None = Field(default=None, description="degrees, snapped to 0, 45, ..., 315")
    elevation: float | None = Field(default=None, description="degrees, snapped to -30, 0, 30, 60")
    distance: float | None = Field(default=None, description="factor, snapped to 0.6, 1.0, 1.8")
    lora_scale: float = Field(default=1.0, description="weight of the Multiple-Angles LoRA, 0..4")
    num_outputs: int = Field(default=1, description="1..4")

    def pose(self) -> CameraPose:
        axes = {name: getattr(self, name) for pair in AXIS_PAIRS for name in pair}
        return resolve_pose(**(axes | dict.fromkeys(self._fields_giving_way(), None)))

    def _fields_giving_way(self) -> list[str]:
        """The fields holding a catalog default on an axis the request gave by its other field: the request's
        own wins, and these are left out."""
        left_out = []
        for pair in AXIS_PAIRS:
            given = [name for name in pair if name in self.model_fields_set]
            if len(given) == 1:
                left_out.append(pair[1 - pair.index(given[0])])
        return left_out

    @model_serializer(mode="wrap")
    def _dump_one_field_per_axis(self, dump: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """The stored input gives each axis as `pose` read it, so that it validates again as it did: with the
        default beside the request's own field, both would be given."""
        data: dict[str, Any] = dump(self)
        return data | {name: None for name in self._fields_giving_way() if data.get(name) is not None}

    def edit_requests(self) -> list[EditRequest]:
        return [self._request(pose=self.pose(), lora_scale=self.lora_scale, num_outputs=self.num_outputs)]


#: The two fields that can give each camera axis (continuous, snapped); a request gives at most one of each.
AXIS_PAIRS = (("horizontal_angle", "azimuth"), ("vertical_angle", "elevation"), ("zoom", "distance"))


class InstructionEditInput(_Input):
    """Edit 1-3 images by instruction, without the angle LoRA."""

    images: list[ImageRef] = Field(min_length=1, max_length=3)
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS, description="what to change")
    num_outputs: int = Field(default=1, description="1..4")

    def edit_requests(self) -> list[EditRequest]:
        return [self._request(pose=None, lora_scale=0.0, num_outputs=self.num_outputs)]


EIGHT_VIEWS = (0, 45, 90, 135, 180, 225, 270, 315)
MAX_ORBIT_VIEWS = 16
_SNAPPED_POSE_FIELDS = ("azimuths", "elevation", "distance")


class OrbitPose(_RequestModel):
    """One view of an orbit path, in either parametrization (one field per axis, as in a camera edit)."""

    horizontal_angle: float | None = Field(default=None, description="degrees, any value (mod 360)")
    vertical_angle: float | None = Field(default=None, description="degrees, -90..90")
    zoom: float | None = Field(default=None, description="0 (wide shot) .. 10 (close-up)")
    azimuth: float | None = Field(default=None, description="degrees, snapped to 0, 45, ..., 315")
    elevation: float | None = Field(default=None, description="degrees, snapped to -30, 0, 30, 60")
    distance: float | None = Field(default=None, description="factor, snapped to 0.6, 1.0, 1.8")

    @model_validator(mode="after")
    def _resolvable(self) -> OrbitPose:
        if not self.model_fields_set:
            raise PydanticCustomError(
                "empty_pose", "a pose needs at least one of " + ", ".join(type(self).model_fields)
            )
        try:
            self.pose()
        except InvalidInput as exc:
            raise PydanticCustomError("invalid_pose", exc.message) from None
        return self

    @model_serializer(mode="wrap")
    def _dump_given(self, dump: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = dump(self)
        return {name: value for name, value in data.items() if value is not None}

    def pose(self) -> CameraPose:
        return resolve_pose(**self.model_dump())


class OrbitInput(_Input):
    """One image seen from several poses, one output per pose, plus a turntable and a contact sheet.

    Either `azimuths` at one `elevation` and `distance` (the turntable), or `poses`: any path of poses, each
    in the camera edit's fields.
    """

    image: ImageRef
    azimuths: list[float] = Field(default=list(EIGHT_VIEWS), min_length=1, max_length=MAX_ORBIT_VIEWS)
    elevation: float = Field(default=0, description="degrees, snapped to -30, 0, 30, 60")
    distance: float = Field(default=1.0, description="factor, snapped to 0.6, 1.0, 1.8")
    poses: list[OrbitPose] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_ORBIT_VIEWS,
        description="the views in order, instead of azimuths/elevation/distance",
    )
    lora_scale: float = Field(default=1.0, description="weight of the Multiple-Angles LoRA, 0..4")

    @field_validator("azimuths")
    @classmethod
    def _each_view_once(cls, azimuths: list[float]) -> list[float]:
        """A turntable shows each view once: two azimuths that snap to one view would render it twice."""
        same = views_given_twice(azimuths)
        if same:
            raise PydanticCustomError(
                "same_view",
                "{same}: give each view once (azimuths snap to the nearest 45 degrees)",
                {"same": "; ".join(same)},
            )
        return azimuths

    @model_validator(mode="after")
    def _one_way_to_name_the_views(self) -> OrbitInput:
        if self.poses is not None:
            clashing = [name for name in _SNAPPED_POSE_FIELDS if name in self.model_fields_set]
            if clashing:
                raise PydanticCustomError(
                    "poses_clash", f"give either poses or {'/'.join(clashing)}, not both"
                )
        return self

    @model_serializer(mode="wrap")
    def _dump_one_way(self, dump: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """The stored input names its views one way only, so that it validates again as it did."""
        data: dict[str, Any] = dump(self)
        for name in _SNAPPED_POSE_FIELDS if self.poses is not None else ("poses",):
            data.pop(name, None)
        return data

    @property
    def images(self) -> list[str]:
        return [self.image]

    def poses_in_order(self) -> list[CameraPose]:
        if self.poses is not None:
            return [view.pose() for view in self.poses]
        return [
            pose_from_snapped(azimuth=azimuth, elevation=self.elevation, distance=self.distance)
            for azimuth in self.azimuths
        ]

    def edit_requests(self) -> list[EditRequest]:
        return [
            self._request(pose=pose, lora_scale=self.lora_scale, num_outputs=1)
            for pose in self.poses_in_order()
        ]


#: What each view of a local image set adds to the prompt, in order, when the request names none.
SET_SHOTS = (
    "wide establishing shot",
    "medium shot",
    "close-up on the main subject",
    "detail shot",
    "seen from the side",
    "seen from behind",
    "seen from a low angle",
    "seen from above",
)
MAX_SET_SIZE = len(SET_SHOTS)


class TextToImageInput(_Input):
    """Generate images from a prompt (no input image).

    `image_set`: a coherent set of views of one subject instead of independent images: every image shares one
    seed (so composition, colours and subject stay alike) and adds its own shot to the prompt, from
    `set_prompts` or, when absent, the first `num_outputs` of SET_SHOTS.
    """

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS, description="what to generate")
    acceleration: Literal["none", "regular", "high"] = Field(
        default="high", description=_acceleration_help(GENERATION_PRESETS)
    )
    aspect_ratio: str | None = Field(default=None, description=" ".join(ASPECT_RATIOS))
    negative_prompt: str | None = Field(
        default=None,
        max_length=MAX_PROMPT_CHARS,
        description="what to avoid; used only with true CFG (guidance_scale above 1, or acceleration none)",
    )
    size: str | None = Field(
        default=None,
        description="1K (1024x1024 at 1:1), 2K or WxH; default: the target area (1 MP) at aspect_ratio",
    )
    num_outputs: int = Field(default=1, description="1..4; with image_set, the set's size (up to 8)")
    image_set: bool = Field(default=False, description="a coherent set of views of one subject")
    set_prompts: list[Annotated[str, Field(max_length=MAX_PROMPT_CHARS)]] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_SET_SIZE,
        description="with image_set: what each image of the set adds to the prompt",
    )

    @model_validator(mode="before")
    @classmethod
    def _count_set_prompts(cls, data: Any) -> Any:
        """`num_outputs` left out beside `set_prompts` is their count (stored so, the job validates again)."""
        if isinstance(data, dict) and isinstance(data.get("set_prompts"), list) and "num_outputs" not in data:
            return {**data, "num_outputs": len(data["set_prompts"])}
        return data

    @model_validator(mode="after")
    def _set_fields(self) -> TextToImageInput:
        if self.set_prompts is not None and not self.image_set:
            raise PydanticCustomError("set_without_image_set", "set_prompts needs image_set: true")
        if self.image_set and self.set_prompts is None and not 1 <= self.num_outputs <= MAX_SET_SIZE:
            raise PydanticCustomError(
                "set_size", f"an image set has 1 to {MAX_SET_SIZE} images, not {self.num_outputs}"
            )
        given = self.set_prompts
        if given is not None and self.num_outputs != len(given):
            raise PydanticCustomError(
                "set_size",
                f"set_prompts makes one image each ({len(given)}), but num_outputs is {self.num_outputs}; "
                "leave num_outputs out or make it match",
            )
        return self

    @property
    def images(self) -> list[str]:
        return []

    def generate_requests(self, seed: int) -> list[GenerateRequest]:
        """One request, or one per image of a set, all on one seed (`seed` when the input names none)."""
        base = GenerateRequest(
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            size=self.size,
            width=self.width,
            height=self.height,
            aspect_ratio=self.aspect_ratio,
            num_outputs=self.num_outputs,
            steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            acceleration=self.acceleration,
            seed=self.seed if self.seed is not None else seed,
        )
        if not self.image_set:
            return [base]
        return [replace(base, prompt=prompt, num_outputs=1) for prompt in self.set_view_prompts()]

    def set_shots(self) -> list[str]:
        """What each image of a set adds to the prompt (none without image_set)."""
        if not self.image_set:
            return []
        return self.set_prompts or list(SET_SHOTS[: self.num_outputs])

    def set_view_prompts(self) -> list[str]:
        """The prompt of each image of a set: the prompt, then the image's shot."""
        return [f"{self.prompt.rstrip().rstrip('.')}. {shot}" for shot in self.set_shots()]


class WanImageInput(_RequestModel):
    """Wan 2.7 image through Alibaba's DashScope API: text-to-image, editing with up to 9 reference images,
    image sets; the images come back into this server's own asset store."""

    prompt: str = Field(min_length=1, max_length=WAN_MAX_PROMPT_CHARS, description="the image or the edit")
    images: list[ImageRef] = Field(default_factory=list, max_length=WAN_MAX_IMAGES, description="0-9 images")
    size: str = Field(default="2K", description="1K, 2K or WxH (768x768 to 2048x2048 pixels in all)")
    num_outputs: int = Field(default=1, description="1..4; an image set: 1..12")
    image_set_mode: bool = Field(default=False, description="a set of related images from one prompt")
    thinking_mode: bool = Field(default=True, description="plan the image first (text-to-image only)")
    seed: int | None = Field(default=None, ge=WAN_SEED_RANGE[0], le=WAN_SEED_RANGE[1])
    rewrite_prompt: bool = Field(
        default=False,
        description="have this server's prompt rewriter make the prompt precise (seeing the images) before "
        "it is sent; the outputs' plan records both",
    )
    output_format: Literal["png", "jpeg", "webp"] = "png"
    quality: int = Field(default=90, ge=1, le=100, description="JPEG/WebP quality")

    @model_validator(mode="after")
    def _vendor_limits(self) -> WanImageInput:
        try:
            self.vendor_request(images=())
        except InvalidInput as exc:
            field = _NATIVE_WAN_FIELDS.get(exc.field or "", "input")
            raise PydanticCustomError(f"wan_{field}", native_wan_text(exc.message)) from None
        return self

    def vendor_request(self, images: Sequence[bytes]) -> WanImageRequest:
        """The vendor request with the input images' bytes; InvalidInput naming Scenario's field."""
        return request_from_scenario(
            {
                "prompt": self.prompt,
                "images": list(images),
                "size": self.size,
                "numOutputs": self.num_outputs,
                "imageSetMode": self.image_set_mode,
                "thinkingMode": self.thinking_mode,
                "seed": self.seed,
            }
        )


#: Scenario's field names (as wan_image's errors name them) -> this API's.
_NATIVE_WAN_FIELDS = {"numOutputs": "num_outputs", "size": "size", "prompt": "prompt", "seed": "seed"}
#: Every Scenario field name a wan_image message may mention that this API spells otherwise.
_NATIVE_WAN_WORDS = {
    "numOutputs": "num_outputs",
    "imageSetMode": "image_set_mode",
    "thinkingMode": "thinking_mode",
}
_SCENARIO_WAN_WORD = re.compile(r"\b(" + "|".join(_NATIVE_WAN_WORDS) + r")\b")


def native_wan_text(message: str) -> str:
    """A wan_image message (in Scenario's field names) in this API's: `numOutputs ... without imageSetMode`
    -> `num_outputs ... without image_set_mode`."""
    return _SCENARIO_WAN_WORD.sub(lambda match: _NATIVE_WAN_WORDS[match[1]], message)


AnyInput = CameraEditInput | InstructionEditInput | OrbitInput | TextToImageInput | WanImageInput


def check_vendor_images(images: Sequence[tuple[int, int, int]]) -> None:
    """Wan 2.7's own limits on each input image (width, height, bytes), checked at submit rather than failing
    the job later."""
    low, high = WAN_IMAGE_SIDES
    for position, (width, height, size) in enumerate(images):
        where = f"input.images.{position}"
        if size > WAN_MAX_IMAGE_BYTES:
            raise TooLarge(
                f"{where} is {size:,} bytes; this model takes images of at most {WAN_MAX_IMAGE_BYTES:,}",
                field=where,
            )
        if not (low <= width <= high and low <= height <= high):
            raise InvalidInput(
                f"{where} is {width}x{height} pixels; this model takes sides of {low} to {high}", field=where
            )
        if max(width, height) / min(width, height) > WAN_MAX_ASPECT:
            raise InvalidInput(
                f"{where} is {width}x{height}, {elongated(width, height)} than the 1:8 to 8:1 it takes",
                field=where,
            )


#: The kinds of job each task runs, and their inputs.
TASK_INPUTS: dict[str, dict[JobKind, type[AnyInput]]] = {
    "camera_edit": {JobKind.EDIT: CameraEditInput, JobKind.ORBIT: OrbitInput},
    "instruction_edit": {JobKind.EDIT: InstructionEditInput},
    "text_to_image": {JobKind.EDIT: TextToImageInput},
    "image_edit_or_generate": {JobKind.EDIT: WanImageInput},
}


#: Each task's own bounds, which a catalog entry's limits may only lower: outputs per job, and the input
#: images a job takes (at least, at most).
TASK_BOUNDS: dict[str, tuple[int, int, int]] = {
    "camera_edit": (MAX_OUTPUTS, 1, MAX_INPUT_IMAGES),
    "instruction_edit": (MAX_OUTPUTS, 1, MAX_INPUT_IMAGES),
    "text_to_image": (MAX_SET_SIZE, 0, 0),
    "image_edit_or_generate": (WAN_MAX_SET_OUTPUTS, 0, WAN_MAX_IMAGES),
}


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """A served model: its catalog entry, and its inputs with the entry's defaults."""

    entry: ModelEntry
    inputs: dict[JobKind, type[AnyInput]]
    #: Why the model cannot run on this server (a setting is missing); None when it can.
    unavailable: str | None = None

    @property
    def id(self) -> str:
        return self.entry.id

    @property
    def description(self) -> str:
        return self.entry.description

    @property
    def remote(self) -> bool:
        return self.entry.remote

    @property
    def loras(self) -> tuple[LoraRef, ...]:
        return self.entry.lora_refs

    def input_schema(self, kind: JobKind = JobKind.EDIT) -> dict[str, Any]:
        """The input's JSON Schema, with the entry's limits (checked at submit) as the schema's bounds."""
        schema = self.inputs[kind].model_json_schema()
        fields, limits = schema.get("properties", {}), self.entry.limits
        outputs, images = fields.get("num_outputs"), fields.get("images")
        if limits.max_outputs is not None and outputs is not None:
            outputs["maximum"] = limits.max_outputs
            outputs["description"] = f"1..{limits.max_outputs} (this model's limit)"
        if limits.max_images is not None and images is not None:
            images["maxItems"] = min(images.get("maxItems", limits.max_images), limits.max_images)
        return schema

    def validate(self, kind: JobKind, data: Any) -> AnyInput:
        if kind not in self.inputs:
            raise InvalidInput(f"model {self.id} does not run {kind.value} jobs", field="kind")
        try:
            validated = self.inputs[kind].model_validate(data)
        except ValidationError as exc:
            raise invalid_input_from(exc, prefix="input") from None
        self._check_limits(validated)
        self._check_prompt_fits(validated)
        return validated

    def validate_stored(self, kind: JobKind, stored: dict[str, Any]) -> AnyInput:
        """`validate` for a queued job's stored input. Inputs stored before `num_outputs` had to match
        `set_prompts` hold the default 1 beside them: their count is what ran, and runs."""
        if stored.get("set_prompts"):
            stored = {name: value for name, value in stored.items() if name != "num_outputs"}
        return self.validate(kind, stored)

    def _check_prompt_fits(self, validated: AnyInput) -> None:
        """A prompt within the request's limit can pass the model's once in its template, with a set's shot:
        refused here rather than failing the job when it runs."""
        excess = prompt_excess(self, validated)
        if excess is not None:
            raise InvalidInput(
                f"input.prompt: {excess.describe()}",
                field="input.prompt",
                hint=f"shorten the prompt by {excess.excess:,} or more characters",
            )

    def _check_limits(self, validated: AnyInput) -> None:
        limits = self.entry.limits
        outputs = getattr(validated, "num_outputs", None)
        if limits.max_outputs is not None and isinstance(outputs, int) and outputs > limits.max_outputs:
            raise InvalidInput(
                f"input.num_outputs: model {self.id} makes at most {limits.max_outputs} images per job",
                field="input.num_outputs",
            )
        if limits.max_images is not None and len(validated.images) > limits.max_images:
            raise InvalidInput(
                f"input.images: model {self.id} takes at most {limits.max_images} images",
                field="input.images",
            )


def rendered(spec: ModelSpec, validated: AnyInput, words: str | None = None) -> str:
    """The prompt the model runs: `words` (the request's own prompt when None) in the model's prompt
    template. The one rendering, for the check at submit and for the runner."""
    return spec.entry.render_prompt(validated.prompt if words is None else words)


def prompt_limit(validated: AnyInput) -> int:
    """The longest prompt, in characters, that the model of `validated` takes."""
    return WAN_MAX_PROMPT_CHARS if isinstance(validated, WanImageInput) else MAX_PROMPT_CHARS


@dataclass(frozen=True, kw_only=True)
class PromptExcess:
    """Words that make a prompt longer than the model takes, once rendered."""

    words: int
    #: The longest prompt the engine would get, in characters.
    length: int
    limit: int
    #: What made the words longer (" in model x's prompt template with set_prompts.2 added"); may be empty.
    how: str

    @property
    def excess(self) -> int:
        return self.length - self.limit

    def describe(self) -> str:
        return (
            f"{self.words:,} characters become {self.length:,}{self.how}, {self.excess:,} more than the "
            f"model's limit of {self.limit:,}"
        )


def prompt_excess(spec: ModelSpec, validated: AnyInput, words: str | None = None) -> PromptExcess | None:
    """How much `words` (the request's own prompt when None) pass the model's prompt limit once in its
    template and, for an image set, with the longest image's shot; None when every prompt fits."""
    own = validated.prompt if words is None else words
    final = validated.model_copy(update={"prompt": rendered(spec, validated, own)})
    prompts = [final.prompt]
    if isinstance(final, TextToImageInput) and final.image_set:
        prompts = final.set_view_prompts() or prompts
    longest = max(range(len(prompts)), key=lambda index: len(prompts[index].strip()))
    length, limit = len(prompts[longest].strip()), prompt_limit(validated)
    if length <= limit:
        return None
    how = f" in model {spec.id}'s prompt template" if spec.entry.prompt_template is not None else ""
    if isinstance(final, TextToImageInput) and final.image_set:
        if final.set_prompts:
            how += f" with set_prompts.{longest} added"
        else:
            how += f" with the image set's shot {final.set_shots()[longest]!r} added"
    return PromptExcess(words=len(own), length=length, limit=limit, how=how)


#: The served models, by id: the shipped catalog until `install_catalog` puts the server's own in place.
MODELS: dict[str, ModelSpec] = {}


def install_catalog(catalog: Catalog, settings_values: Mapping[str, object]) -> None:
    """Serve the models of `catalog`, each available or not by `settings_values` (the settings, as a dict)."""
    specs = {
        entry.id: ModelSpec(
            entry=entry,
            inputs=entry_inputs(entry, TASK_INPUTS[entry.task]),
            unavailable=availability(entry, settings_values),
        )
        for entry in catalog
    }
    for spec in specs.values():
        check_limits(spec.entry)
        check_defaults(spec)
    MODELS.clear()
    MODELS.update(specs)


#: Stands for what a request brings itself when its model's defaults are checked alone.
PROBE = {"images": ["asset_probe"], "prompt": "probe"}


def check_limits(entry: ModelEntry) -> None:
    """An entry's limits within its task's own bounds (TASK_BOUNDS): a limit above them would be shown in
    the model's schema and never allowed, one of no images would refuse every request of a task that needs
    one."""
    max_outputs, least_images, most_images = TASK_BOUNDS[entry.task]
    limits, label = entry.limits, entry_label(entry.id, 0)
    if limits.max_outputs is not None and limits.max_outputs > max_outputs:
        problem = f"{limits.max_outputs} is more than a job of task {entry.task} makes: at most {max_outputs}"
        raise CatalogError(entry.source, problem, entry=label, field="limits.max_outputs")
    if limits.max_images is not None and not least_images <= limits.max_images <= most_images:
        taken = f"{least_images} to {most_images} images"
        problem = f"{limits.max_images} is not what a job of task {entry.task} takes: {taken}"
        raise CatalogError(entry.source, problem, entry=label, field="limits.max_images")


def check_defaults(spec: ModelSpec) -> None:
    """A request of the entry's defaults alone (with a stand-in image and prompt) through the checks a submit
    runs: a default no request could use (`num_outputs = 9`) stops the start, naming it, instead of failing
    every request that leaves it as it is."""
    defaults = spec.entry.defaults
    for kind, model in spec.inputs.items():
        probe = {
            name: value for name, value in (PROBE | dict(defaults)).items() if name in model.model_fields
        }
        try:
            validated = spec.validate(kind, probe)
            requests = (
                validated.edit_requests()
                if isinstance(validated, CameraEditInput | InstructionEditInput | OrbitInput)
                else validated.generate_requests(seed=0)
                if isinstance(validated, TextToImageInput)
                else []
            )
            for request in requests:
                check_request(request)
        except InvalidInput as exc:
            field = (exc.field or "").removeprefix("input.")
            if field not in defaults:
                continue  # the stand-ins' doing, not the defaults'
            label = entry_label(spec.id, 0)
            raise CatalogError(
                spec.entry.source, exc.message, entry=label, field=f"defaults.{field}"
            ) from None


def check_one_base_per_engine(catalog: Catalog) -> None:
    """A local engine runs one base model (set by REANGLE_MODEL and REANGLE_TEXT_TO_IMAGE_MODEL): an entry
    naming other base weights than the shipped models of its engine is refused rather than silently run on
    those weights."""
    shipped = {entry.engine: entry.base for entry in shipped_catalog() if not entry.remote}
    for entry in catalog:
        expected = shipped.get(entry.engine)
        if expected is not None and entry.base != expected:
            raise CatalogError(
                entry.source,
                f"the {entry.engine} engine runs one base model, {expected} (where its weights are is a "
                f"setting); use base = {json.dumps(expected)}",
                entry=f'model "{entry.id}"',
                field="base",
            )


def shipped_catalog() -> Catalog:
    return load_catalog(inputs=TASK_INPUTS)


#: Errors found by a whole-input check, and the field each is about (pydantic gives them no location).
_WHOLE_INPUT_ERROR_FIELDS: dict[str, tuple[str, ...]] = {
    "poses_clash": ("poses",),
    "set_without_image_set": ("set_prompts",),
    "set_size": ("num_outputs",),
    **{f"wan_{name}": (name,) for name in _NATIVE_WAN_FIELDS.values()},
}


def invalid_input_from(exc: ValidationError, *, prefix: str = "") -> InvalidInput:
    """The first pydantic error as one InvalidInput naming the field (`input.images.0`)."""
    first = exc.errors()[0]
    loc = first["loc"] or _WHOLE_INPUT_ERROR_FIELDS.get(first["type"], ())
    field = ".".join(str(part) for part in (prefix, *loc) if part != "")
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    elif first["type"] == "missing":
        message = "field required"
    return InvalidInput(f"{field}: {message}", field=field)


install_catalog(shipped_catalog(), {})  # last: it runs every check above


def catalog_defaulted(model: str) -> frozenset[str]:
    """The input fields `model`'s catalog entry gives a default, which a dialect's own defaults must not
    override: a camera axis counts by either of its fields (`elevation = 60` defaults `vertical_angle` too).
    Empty for the shipped models, which have none."""
    defaults = MODELS[model].entry.defaults
    axes = {name for pair in AXIS_PAIRS if any(field in defaults for field in pair) for name in pair}
    return frozenset(defaults) | axes
