"""Edit and text-to-image requests and their resolution into a concrete plan (size, steps, guidance, LoRAs),
without torch.

The same plan drives every engine and is what `reangle edit --dry-run` prints.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from reangle.core.camera import CameraPose
from reangle.core.json_values import is_finite, shown_number
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
#: The same for text-to-image (Qwen-Image: 50 steps at true CFG 4 is its model card's recipe). The adapter
#: names are the edit's: the text-to-image pipeline holds its own Lightning LoRAs under the same names.
GENERATION_PRESETS: dict[Acceleration, Preset] = {
    "none": Preset(steps=50, true_cfg_scale=4.0, lightning_lora=None, scheduler="default"),
    "regular": Preset(steps=8, true_cfg_scale=1.0, lightning_lora=LIGHTNING_8STEP, scheduler="lightning"),
    "high": Preset(steps=4, true_cfg_scale=1.0, lightning_lora=LIGHTNING_4STEP, scheduler="lightning"),
}
#: Text-to-image `size` presets: the output area in pixels (the shape comes from `aspect_ratio`).
SIZE_PRESETS: dict[str, int] = {"1K": 1024 * 1024, "2K": 2048 * 2048}
_WXH = re.compile(r"\s*(\d{1,6})\s*[xX*]\s*(\d{1,6})\s*")


@dataclass(frozen=True, kw_only=True)
class SizeLimits:
    """Output sizes an engine accepts, per side, after flooring to a multiple of 16; and how elongated an
    input image may be (long side over short side, below `max_input_ratio`)."""

    min_side: int = 256
    max_side: int = 2048
    max_input_ratio: float = math.inf


def elongation_limit(smallest_area: int) -> float:
    """The `max_input_ratio` of a pipeline that scales each input image to areas of at least
    `smallest_area` pixels, rounding each side to a multiple of 32: a side of 16 or less there rounds to
    none (the pipeline then fails), and the short side of an image of ratio r is sqrt(area / r)."""
    return smallest_area / 16**2


@dataclass(frozen=True, kw_only=True)
class LoraUse:
    """One adapter a plan runs, at `weight`."""

    adapter: str
    weight: float
    #: The file of a request's own LoRA (loaded on demand); None for the model's own adapters, loaded with it.
    path: Path | None = None


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
    #: A request's own LoRAs, run after the model's own.
    extra_loras: tuple[LoraUse, ...] = ()


@dataclass(frozen=True, kw_only=True)
class GenerateRequest:
    """One text-to-image request as a user asks for it (see `plan_generation` for the size rules)."""

    prompt: str
    negative_prompt: str | None = None
    #: "1K", "2K" or "WxH" (also "W*H").
    size: str | None = None
    width: int | None = None
    height: int | None = None
    aspect_ratio: str | None = None
    num_outputs: int = 1
    steps: int | None = None
    guidance_scale: float | None = None
    acceleration: Acceleration = "high"
    seed: int | None = None
    #: A request's own LoRAs, run after the model's own.
    extra_loras: tuple[LoraUse, ...] = ()


@dataclass(frozen=True, kw_only=True)
class EditPlan:
    """A fully resolved edit or generation (`pose=None`): exactly what the pipeline will be called with."""

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
    _check_inputs(request, input_sizes, limits)
    preset = PRESETS[request.acceleration]
    width, height = _output_size(request, input_sizes[-1], limits, target_area)
    true_cfg = preset.true_cfg_scale if request.guidance_scale is None else request.guidance_scale
    loras = []
    if preset.lightning_lora:
        loras.append(LoraUse(adapter=preset.lightning_lora, weight=1.0))
    if request.pose is not None:
        loras.append(LoraUse(adapter=ANGLES, weight=request.lora_scale))
    loras.extend(request.extra_loras)
    _check_loras(loras)
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


def _check_inputs(request: EditRequest, input_sizes: Sequence[tuple[int, int]], limits: SizeLimits) -> None:
    if not 1 <= len(input_sizes) <= MAX_INPUT_IMAGES:
        raise InvalidInput(
            f"give 1 to {MAX_INPUT_IMAGES} input images, got {len(input_sizes)}", field="images"
        )
    for index, (width, height) in enumerate(input_sizes):
        if max(width, height) / min(width, height) >= limits.max_input_ratio:
            raise InvalidInput(
                f"input.images.{index} is {width}x{height}, too elongated for this model: its sides must be "
                f"less than {limits.max_input_ratio:g} times one another",
                field=f"input.images.{index}",
                hint="crop the image closer to square",
            )
    check_request(request)


def check_request(request: EditRequest | GenerateRequest) -> None:
    """The ranges of a request's numbers (outputs, steps, guidance, seed, LoRA scale) and its acceleration."""
    _check_common(request)
    if isinstance(request, EditRequest):
        _check_range("lora_scale", request.lora_scale, 0, MAX_LORA_SCALE)


def _check_common(request: EditRequest | GenerateRequest) -> None:
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
    if request.seed is not None:
        _check_range("seed", request.seed, 0, MAX_SEED)


def _check_loras(loras: Sequence[LoraUse]) -> None:
    """Each adapter once (the same file named twice is one adapter), each weight finite and bounded."""
    seen: set[str] = set()
    for lora in loras:
        if lora.adapter in seen:
            raise InvalidInput(f"the LoRA {lora.adapter} is given twice; give it once", field="loras")
        seen.add(lora.adapter)
        weight = lora.weight
        if isinstance(weight, bool) or not is_finite(weight) or abs(weight) > MAX_LORA_SCALE:
            raise InvalidInput(
                f"the strength of LoRA {lora.adapter} must be between {-MAX_LORA_SCALE:g} and "
                f"{MAX_LORA_SCALE:g}, got {shown_number(weight)}",
                field="loras",
            )


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if isinstance(value, bool) or not is_finite(value) or not low <= value <= high:
        raise InvalidInput(f"{name} must be between {low} and {high}, got {shown_number(value)}", field=name)


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
        if limits.min_side <= side <= limits.max_side:
            continue
        bounds = f"between {limits.min_side} and {limits.max_side} after rounding down to a multiple of 16"
        image_ratio = f"{last_input[0]}x{last_input[1]}"
        if asked is not None:
            raise InvalidInput(f"{name} must be {bounds}, got {given}", field=name)
        if explicit:  # the other side was given; this one follows the input image's aspect ratio
            other = "height" if name == "width" else "width"
            raise InvalidInput(
                f"{name} would be {given}, from the {other} asked for and the input image's aspect ratio "
                f"({image_ratio}); it must be {bounds}",
                field=name,
                hint=f"give the output's {name} as well, or crop the image closer to square",
            )
        if request.aspect_ratio not in (None, MATCH_INPUT):
            raise InvalidInput(
                f"aspect_ratio {request.aspect_ratio} gives a {name} of {given}; it must be {bounds}",
                field="aspect_ratio",
            )
        # Dialects name their size fields differently: the hint says "output size", not a field name.
        raise InvalidInput(
            f"the input image's aspect ratio ({image_ratio}) is too extreme for this model's output sizes: "
            f"at that ratio the output's {name} would be {given}, and each side must be {bounds}",
            field="images",
            hint="crop the image closer to square, or give the output size explicitly",
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


def plan_generation(request: GenerateRequest, *, limits: SizeLimits, target_area: int) -> EditPlan:
    """Validate a text-to-image `request` and resolve every default; the plan has no pose.

    Output size, always in whole multiples of 16 (the pipeline's latent grid), floored:
    - `size="1K"` / `"2K"`: an area of 1024x1024 / 2048x2048 pixels at `aspect_ratio` (default 1:1), scaled
      down as a whole when its longer side would pass `limits.max_side` (2K at 16:9 is 2048x1152 under the
      default limits). 1K at 1:1 is 1024x1024, at 16:9 1360x768.
    - `size="WxH"` (or `W*H`): exactly that, floored; it excludes `aspect_ratio`, `width` and `height`.
    - `width` and `height`: exactly that, floored; they exclude `aspect_ratio` and `size`. One of them alone:
      the other from `aspect_ratio` (default 1:1).
    - nothing: `target_area` pixels at `aspect_ratio`, as a preset is.
    A side the request gave that falls outside `limits` after flooring is an error naming that field; a
    preset or the default never is (they are scaled to fit). `aspect_ratio` is one of ASPECT_RATIOS
    (`match_input` has no input here).

    The negative prompt runs only with true CFG (guidance above 1: acceleration `none`, or a
    `guidance_scale` given); the Lightning presets run at guidance 1 and leave it out of the plan.
    """
    prompt = request.prompt.strip()
    if not prompt:
        raise InvalidInput("prompt must not be empty: say what to generate", field="prompt")
    _check_length("prompt", prompt)
    if request.negative_prompt is not None:
        _check_length("negative_prompt", request.negative_prompt)
    _check_common(request)
    preset = GENERATION_PRESETS[request.acceleration]
    width, height = _generation_size(request, limits, target_area)
    true_cfg = preset.true_cfg_scale if request.guidance_scale is None else request.guidance_scale
    loras = [LoraUse(adapter=preset.lightning_lora, weight=1.0)] if preset.lightning_lora else []
    loras.extend(request.extra_loras)
    _check_loras(loras)
    cfg_runs = request.acceleration == "none" or true_cfg > 1
    return EditPlan(
        prompt=prompt,
        negative_prompt=((request.negative_prompt or "").strip() or " ") if cfg_runs else None,
        pose=None,
        width=width,
        height=height,
        steps=request.steps or preset.steps,
        true_cfg_scale=true_cfg,
        scheduler=preset.scheduler,
        loras=tuple(loras),
        num_outputs=request.num_outputs,
        seed=request.seed,
    )


def _check_length(name: str, text: str) -> None:
    if len(text) > MAX_PROMPT_CHARS:
        raise InvalidInput(f"{name} has {len(text)} characters; at most {MAX_PROMPT_CHARS}", field=name)


def _generation_size(request: GenerateRequest, limits: SizeLimits, target_area: int) -> tuple[int, int]:
    sides_given = request.width is not None or request.height is not None
    if request.size is not None and sides_given:
        raise InvalidInput("give either size or width/height, not both", field="size")
    ratio = _generation_ratio(request.aspect_ratio)
    if request.size is not None:
        area = SIZE_PRESETS.get(request.size.strip().upper())
        if area is not None:
            return _fitted(area, ratio, limits, request)
        wxh = _WXH.fullmatch(request.size)
        if wxh is None:
            raise InvalidInput(
                f"size must be {', '.join(SIZE_PRESETS)} or WxH (like 1328x1328), got {request.size!r}",
                field="size",
            )
        if request.aspect_ratio is not None:
            raise InvalidInput("give either a WxH size or aspect_ratio, not both", field="aspect_ratio")
        width, height = int(wxh[1]), int(wxh[2])
        return _within(width, "size", limits), _within(height, "size", limits)
    if request.width is not None and request.height is not None:
        if request.aspect_ratio is not None:
            raise InvalidInput("give either width and height or aspect_ratio, not both", field="aspect_ratio")
        return _within(request.width, "width", limits), _within(request.height, "height", limits)
    derived_from = f"the aspect ratio {request.aspect_ratio or '1:1'}"
    if request.width is not None:
        width = _within(request.width, "width", limits)
        return width, _within(round(request.width / ratio), "height", limits, derived_from=derived_from)
    if request.height is not None:
        height = _within(request.height, "height", limits)
        return _within(round(request.height * ratio), "width", limits, derived_from=derived_from), height
    return _fitted(target_area, ratio, limits, request)


def _generation_ratio(aspect_ratio: str | None) -> float:
    if aspect_ratio is None:
        return 1.0
    if aspect_ratio not in ASPECT_RATIOS:
        raise InvalidInput(
            f"aspect_ratio must be one of {', '.join(ASPECT_RATIOS)}, got {aspect_ratio!r}",
            field="aspect_ratio",
        )
    w, h = ASPECT_RATIOS[aspect_ratio]
    return w / h


def _fitted(area: int, ratio: float, limits: SizeLimits, request: GenerateRequest) -> tuple[int, int]:
    """`area` pixels at `ratio`, scaled down whole until the longer side fits, floored to multiples of 16."""
    width = math.sqrt(area * ratio)
    height = width / ratio
    scale = min(1.0, limits.max_side / max(width, height))
    fitted = _floor16(width * scale), _floor16(height * scale)
    if min(fitted) < limits.min_side:
        field = "aspect_ratio" if request.aspect_ratio is not None else "size"
        raise InvalidInput(
            f"{fitted[0]}x{fitted[1]} is below the smallest side of {limits.min_side}", field=field
        )
    return fitted


def _floor16(side: float) -> int:
    """Down to a multiple of 16; a side a rounding error below one (2047.9999...) counts as that one."""
    return int(side + 1e-6) // 16 * 16


def _within(side: int, name: str, limits: SizeLimits, *, derived_from: str | None = None) -> int:
    """`side` floored to a multiple of 16, or InvalidInput about `name`: a side the request gave, or one it
    did not give that follows from the other side and `derived_from` (which the error then names)."""
    if isinstance(side, bool) or not isinstance(side, int):
        raise InvalidInput(f"{name} must be a whole number of pixels, got {side!r}", field=name)
    floored = side // 16 * 16
    if not limits.min_side <= floored <= limits.max_side:
        bounds = f"between {limits.min_side} and {limits.max_side} after rounding down to a multiple of 16"
        if derived_from is None:
            raise InvalidInput(f"{name} must be {bounds}, got {side}", field=name)
        raise InvalidInput(
            f"{name} would be {side}, from the other side asked for and {derived_from}; it must be {bounds}",
            field=name,
            hint=f"give the output's {name} as well, or another aspect ratio",
        )
    return floored
