"""The model registry: each served model's id, description and input schema, declared as data.

Inputs are validated here once, whatever API dialect they arrived through; `edit_requests` turns a validated
input into the engine's EditRequest(s).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from reangle.core.camera import CameraPose, pose_from_snapped, resolve_pose
from reangle.core.edit import MAX_PROMPT_CHARS, EditRequest
from reangle.core.jobs import JobKind
from reangle.errors import InvalidInput

CAMERA_EDIT = "qwen-edit-multiangle-2511"
INSTRUCTION_EDIT = "qwen-image-edit-2511"

ImageRef = Annotated[
    str, Field(min_length=1, description="an uploaded asset id, a data URL, raw base64, or an http(s) URL")
]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = Field(default="", max_length=MAX_PROMPT_CHARS, description="your own instruction")
    num_inference_steps: int | None = Field(default=None, description="default from acceleration")
    guidance_scale: float | None = Field(default=None, description="true CFG scale; above 1 doubles the cost")
    acceleration: Literal["none", "regular", "high"] = Field(
        default="high", description="high: Lightning 4 steps; regular: 8 steps; none: base model, 40 steps"
    )
    seed: int | None = Field(default=None, description="random when absent; output k uses seed + k")
    width: int | None = None
    height: int | None = None
    aspect_ratio: str | None = Field(
        default=None, description="1:1 2:3 3:2 3:4 4:3 4:5 5:4 9:16 16:9 21:9 match_input"
    )
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
        return resolve_pose(
            horizontal_angle=self.horizontal_angle,
            vertical_angle=self.vertical_angle,
            zoom=self.zoom,
            azimuth=self.azimuth,
            elevation=self.elevation,
            distance=self.distance,
        )

    def edit_requests(self) -> list[EditRequest]:
        return [self._request(pose=self.pose(), lora_scale=self.lora_scale, num_outputs=self.num_outputs)]


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


class OrbitPose(BaseModel):
    """One view of an orbit path, in either parametrization (one field per axis, as in a camera edit)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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


AnyInput = CameraEditInput | InstructionEditInput | OrbitInput


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    id: str
    description: str
    inputs: dict[JobKind, type[AnyInput]]

    def input_schema(self, kind: JobKind = JobKind.EDIT) -> dict[str, Any]:
        return self.inputs[kind].model_json_schema()

    def validate(self, kind: JobKind, data: Any) -> AnyInput:
        if kind not in self.inputs:
            raise InvalidInput(f"model {self.id} does not run {kind.value} jobs", field="kind")
        try:
            return self.inputs[kind].model_validate(data)
        except ValidationError as exc:
            raise invalid_input_from(exc, prefix="input") from None


MODELS: dict[str, ModelSpec] = {
    spec.id: spec
    for spec in (
        ModelSpec(
            id=CAMERA_EDIT,
            description="Qwen-Image-Edit-2511 + Multiple-Angles LoRA: the scene from another camera pose",
            inputs={JobKind.EDIT: CameraEditInput, JobKind.ORBIT: OrbitInput},
        ),
        ModelSpec(
            id=INSTRUCTION_EDIT,
            description="Qwen-Image-Edit-2511: edit 1-3 images by instruction",
            inputs={JobKind.EDIT: InstructionEditInput},
        ),
    )
}


#: Errors found by a whole-input check, and the field each is about (pydantic gives them no location).
_WHOLE_INPUT_ERROR_FIELDS: dict[str, tuple[str, ...]] = {"poses_clash": ("poses",)}


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
