"""Edit requests and their resolution into a concrete plan (size, steps, guidance, LoRAs), without torch.

The same plan drives every engine and is what `reangle edit --dry-run` prints.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from reangle.core.camera import CameraPose
from reangle.errors import InvalidInput

Acceleration = Literal["none", "regular", "high"]
SchedulerKind = Literal["default", "lightning"]

ACCELERATIONS: tuple[Acceleration, ...] = ("none", "regular", "high")
ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    "1:1": (1, 1),
    "2:3": (2, 3),
    "3:2": (3, 2),
    "3:4": (3, 4),
    "4:3": (4, 3),
    "4:5": (4, 5),
    "5:4": (5, 4),
    "9:16": (9, 16),
    "16:9": (16, 9),
    "21:9": (21, 9),
}
MATCH_INPUT = "match_input"
MAX_INPUT_IMAGES = 3
#: Longest prompt a request may carry, in characters.
MAX_PROMPT_CHARS = 2000
MAX_OUTPUTS = 4
MAX_STEPS = 100
MAX_GUIDANCE = 20.0
MAX_LORA_SCALE = 4.0
MAX_SEED = 2**63 - 1 - MAX_OUTPUTS  # output k uses seed + k on a 64-bit generator

#: Adapter names under which the engine loads each LoRA.
LIGHTNING_4STEP = "lightning_4step"
LIGHTNING_8STEP = "lightning_8step"
ANGLES = "angles"


@dataclass(frozen=True, kw_only=True)
class Preset:
    """What an `acceleration` value means: base model with true CFG, or a Lightning LoRA."""

    steps: int
    true_cfg_scale: float
    lightning_lora: str | None
    scheduler: SchedulerKind


PRESETS: dict[Acceleration, Preset] = {
    "none": Preset(steps=40, true_cfg_scale=4.0, lightning_lora=None, scheduler="default"),
    "regular": Preset(steps=8, true_cfg_scale=1.0, lightning_lora=LIGHTNING_8STEP, scheduler="lightning"),
    "high": Preset(steps=4, true_cfg_scale=1.0, lightning_lora=LIGHTNING_4STEP, scheduler="lightning"),
}


@dataclass(frozen=True, kw_only=True)
class SizeLimits:
    """Output sizes an engine accepts, per side, after flooring to a multiple of 16."""

    min_side: int = 256
    max_side: int = 2048


@dataclass(frozen=True, kw_only=True)
class EditRequest:
    """One edit as a user asks for it. `pose=None` is a plain instruction edit without the angle LoRA."""

    prompt: str = ""
    pose: CameraPose | None = field(default_factory=CameraPose)
    lora_scale: float = 1.0
    num_outputs: int = 1
    steps: int | None = None
    guidance_scale: float | None = None
    acceleration: Acceleration = "high"
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    aspect_ratio: str | None = None


@dataclass(frozen=True, kw_only=True)
class LoraUse:
    adapter: str
    weight: float


@dataclass(frozen=True, kw_only=True)
class EditPlan:
    """A fully resolved edit: exactly what the pipeline will be called with."""

    prompt: str
    negative_prompt: str | None
    pose: CameraPose | None
    width: int
    height: int
    steps: int
    true_cfg_scale: float
    scheduler: SchedulerKind
    loras: tuple[LoraUse, ...]
    num_outputs: int
    seed: int | None

    def with_seed(self, seed: int) -> EditPlan:
        return replace(self, seed=seed)

    def to_dict(self) -> dict[str, object]:
        return {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "width": self.width,
            "height": self.height,
            "steps": self.steps,
            "true_cfg_scale": self.true_cfg_scale,
            "scheduler": self.scheduler,
            "loras": [{"adapter": lora.adapter, "weight": lora.weight} for lora in self.loras],
            "num_outputs": self.num_outputs,
            "seed": self.seed,
        }


def plan_edit(
    request: EditRequest,
    input_sizes: Sequence[tuple[int, int]],
    *,
    limits: SizeLimits,
    target_area: int,
) -> EditPlan:
    """Validate `request` against the input image sizes (w, h) and resolve every default."""
    _check_inputs(request, input_sizes)
    preset = PRESETS[request.acceleration]
    width, height = _output_size(request, input_sizes[-1], limits, target_area)
    true_cfg = preset.true_cfg_scale if request.guidance_scale is None else request.guidance_scale
    loras = []
    if preset.lightning_lora:
        loras.append(LoraUse(adapter=preset.lightning_lora, weight=1.0))
    if request.pose is not None:
        loras.append(LoraUse(adapter=ANGLES, weight=request.lora_scale))
    instruction = request.prompt.strip()
    return EditPlan(
        prompt=request.pose.prompt(instruction) if request.pose else instruction,
        # true CFG runs only with a negative prompt; the base recipe always passes " "
        negative_prompt=" " if request.acceleration == "none" or true_cfg > 1 else None,
        pose=request.pose,
        width=width,
        height=height,
        steps=request.steps or preset.steps,
        true_cfg_scale=true_cfg,
        scheduler=preset.scheduler,
        loras=tuple(loras),
        num_outputs=request.num_outputs,
        seed=request.seed,
    )


def _check_inputs(request: EditRequest, input_sizes: Sequence[tuple[int, int]]) -> None:
    if not 1 <= len(input_sizes) <= MAX_INPUT_IMAGES:
        raise InvalidInput(
            f"give 1 to {MAX_INPUT_IMAGES} input images, got {len(input_sizes)}", field="images"
        )
    if request.acceleration not in PRESETS:
        raise InvalidInput(
            f"acceleration must be one of {', '.join(ACCELERATIONS)}, got {request.acceleration!r}",
            field="acceleration",
        )
    _check_range("num_outputs", request.num_outputs, 1, MAX_OUTPUTS)
    if request.steps is not None:
        _check_range("num_inference_steps", request.steps, 1, MAX_STEPS)
    if request.guidance_scale is not None:
        _check_range("guidance_scale", request.guidance_scale, 0, MAX_GUIDANCE)
    _check_range("lora_scale", request.lora_scale, 0, MAX_LORA_SCALE)
    if request.seed is not None:
        _check_range("seed", request.seed, 0, MAX_SEED)


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if isinstance(value, bool) or not math.isfinite(value) or not low <= value <= high:
        raise InvalidInput(f"{name} must be between {low} and {high}, got {value}", field=name)


def _output_size(
    request: EditRequest, last_input: tuple[int, int], limits: SizeLimits, target_area: int
) -> tuple[int, int]:
    explicit = request.width is not None or request.height is not None
    if explicit and request.aspect_ratio not in (None, MATCH_INPUT):
        raise InvalidInput("give either width/height or aspect_ratio, not both", field="aspect_ratio")
    input_ratio = last_input[0] / last_input[1]
    if request.width is not None and request.height is not None:
        size = (request.width, request.height)
    elif request.width is not None:
        size = (request.width, round(request.width / input_ratio))
    elif request.height is not None:
        size = (round(request.height * input_ratio), request.height)
    else:
        size = size_for_area(target_area, _ratio(request.aspect_ratio, input_ratio))
    width, height = (side // 16 * 16 for side in size)
    sides = [("width", width, size[0], request.width), ("height", height, size[1], request.height)]
    for name, side, given, asked in sorted(sides, key=lambda item: item[3] is None):  # asked-for sides first
        if not limits.min_side <= side <= limits.max_side:
            origin = "" if asked is not None else f" (from the aspect ratio {last_input[0]}x{last_input[1]})"
            raise InvalidInput(
                f"{name} must be between {limits.min_side} and {limits.max_side} after rounding down to a "
                f"multiple of 16, got {given}{origin}",
                field=name,
                hint="give width and height explicitly" if not explicit else None,
            )
    return width, height


def _ratio(aspect_ratio: str | None, input_ratio: float) -> float:
    if aspect_ratio in (None, MATCH_INPUT):
        return input_ratio
    if aspect_ratio not in ASPECT_RATIOS:
        choices = ", ".join([*ASPECT_RATIOS, MATCH_INPUT])
        raise InvalidInput(
            f"aspect_ratio must be one of {choices}, got {aspect_ratio!r}", field="aspect_ratio"
        )
    w, h = ASPECT_RATIOS[aspect_ratio]
    return w / h


def size_for_area(area: int, ratio: float) -> tuple[int, int]:
    """Width and height near `area` pixels at aspect `ratio`, each a multiple of 32 (the pipeline's rule)."""
    width = math.sqrt(area * ratio)
    height = width / ratio
    return max(32, round(width / 32) * 32), max(32, round(height / 32) * 32)
