"""The Engine protocol every adapter implements, and the factory that picks one. No torch here."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image

from reangle.core.edit import EditPlan, EditRequest, GenerateRequest, SizeLimits, plan_edit, plan_generation
from reangle.engine.lora_check import ModelLayers
from reangle.errors import InvalidInput
from reangle.settings import Settings

#: Called after each denoising step with (steps done, total steps).
StepCallback = Callable[[int, int], None]
#: Polled between steps; returning True cancels the call (it raises `Canceled`, and no image is returned).
StopCheck = Callable[[], bool]


@dataclass(frozen=True, kw_only=True)
class EngineInfo:
    name: str
    device: str
    #: True when images come from random weights and are meaningless.
    demo: bool
    limits: SizeLimits
    target_area: int
    #: Speed options in effect once loaded (setting name -> value), for /healthz and the serve log.
    options: dict[str, str | int] = field(default_factory=dict)
    #: What an operator should know about how the engine loaded (a speed option that fell back), for the log.
    notes: tuple[str, ...] = ()
    #: Whether `generate` (text-to-image) is available.
    can_generate: bool = False


@dataclass(frozen=True, kw_only=True)
class EditResult:
    images: list[Image.Image]
    #: Seed of output 0; output k was generated with seed + k.
    seed: int
    timings: dict[str, float] = field(default_factory=dict)


class Engine(Protocol):
    info: EngineInfo

    def load(self) -> None:
        """Load weights; idempotent. Errors here are EngineError with a message naming what failed."""

    def edit(
        self,
        images: Sequence[Image.Image],
        plan: EditPlan,
        *,
        on_step: StepCallback | None = None,
        should_stop: StopCheck | None = None,
    ) -> EditResult:
        """Run one planned edit. One call at a time per engine."""

    def edit_views(
        self,
        images: Sequence[Image.Image],
        plans: Sequence[EditPlan],
        *,
        on_step: StepCallback | None = None,
        should_stop: StopCheck | None = None,
    ) -> list[EditResult]:
        """Run several plans over the same images (e.g. the views of an orbit), one result per plan.

        Progress counts the steps of all plans together; a stop cancels the whole call.
        """

    def generate(
        self,
        plans: Sequence[EditPlan],
        *,
        on_step: StepCallback | None = None,
        should_stop: StopCheck | None = None,
    ) -> list[EditResult]:
        """Text-to-image: one result per plan (from `plan_generation`); output k of a plan has its seed + k.

        Progress counts the steps of all plans and all their outputs together; a stop cancels the whole call.
        An engine without text-to-image (`info.can_generate` False) raises EngineError.
        """

    def lora_layers(self, text_to_image: bool) -> ModelLayers:
        """The layers a request's LoRA may target in the transformer of the edit or the text-to-image model
        (names, and shapes where known), for checking a LoRA file before a job runs."""


def offset_progress(on_step: StepCallback | None, done: int, total: int) -> StepCallback | None:
    """One plan's progress (step, steps) as (steps of the plans before it + step, steps of all plans)."""
    if on_step is None:
        return None
    return lambda step, _steps: on_step(done + step, total)


def plan_for(engine: Engine, request: EditRequest, images: Sequence[Image.Image]) -> EditPlan:
    return plan_edit(
        request,
        [image.size for image in images],
        limits=engine.info.limits,
        target_area=engine.info.target_area,
    )


def plan_generation_for(engine: Engine, request: GenerateRequest) -> EditPlan:
    return plan_generation(request, limits=engine.info.limits, target_area=engine.info.target_area)


def random_seed() -> int:
    return secrets.randbelow(2**31)


ENGINE_NAMES = ("qwen", "tiny", "fake")


def create_engine(name: str, settings: Settings) -> Engine:
    """Build (not load) the engine called `name`; `auto` is qwen with CUDA, else tiny."""
    if name == "auto":
        name = "qwen" if cuda_available() else "tiny"
    if name == "fake":
        from reangle.engine.fake import FakeEngine

        return FakeEngine(settings)
    if name == "qwen":
        from reangle.engine.qwen import QwenEngine

        return QwenEngine.from_settings(settings)
    if name == "tiny":
        from reangle.engine.tiny import tiny_engine

        return tiny_engine(settings)
    raise InvalidInput(
        f"unknown engine {name!r}; choose one of auto, {', '.join(ENGINE_NAMES)}", field="engine"
    )


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
