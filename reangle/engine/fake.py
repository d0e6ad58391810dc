"""The fake engine: no torch, deterministic pictures that show the requested pose and prompt.

It sleeps `fake_step_seconds` per step and reports progress like the real engine. A prompt containing
`fake:fail` makes it raise an EngineError: a test hook of this engine only. It edits and generates; its
LoRA layers are the real Qwen-Image transformer's names (shapes unchecked), so that a request's LoRA is
checked by name as the real engine would check it.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from reangle.core.edit import EditPlan, SizeLimits
from reangle.engine.base import (
    EditResult,
    EngineInfo,
    StepCallback,
    StopCheck,
    offset_progress,
    random_seed,
)
from reangle.engine.lora_check import ModelLayers
from reangle.errors import Canceled, EngineError
from reangle.settings import Settings

FAIL_MARKER = "fake:fail"
#: The Qwen-Image (and -Edit) transformer: 60 blocks of these linear layers, and the layers around them.
QWEN_IMAGE_BLOCKS = 60
QWEN_IMAGE_BLOCK_LAYERS = (
    "img_mod.1",
    "attn.to_q",
    "attn.to_k",
    "attn.to_v",
    "attn.add_k_proj",
    "attn.add_v_proj",
    "attn.add_q_proj",
    "attn.to_out.0",
    "attn.to_add_out",
    "img_mlp.net.0.proj",
    "img_mlp.net.2",
    "txt_mod.1",
    "txt_mlp.net.0.proj",
    "txt_mlp.net.2",
)
QWEN_IMAGE_OUTER_LAYERS = (
    "time_text_embed.timestep_embedder.linear_1",
    "time_text_embed.timestep_embedder.linear_2",
    "img_in",
    "txt_in",
    "norm_out.linear",
    "proj_out",
)


class FakeEngine:
    def __init__(self, settings: Settings) -> None:
        self.step_seconds = settings.fake_step_seconds
        self.info = EngineInfo(
            name="fake",
            device="cpu",
            demo=True,
            limits=SizeLimits(min_side=16, max_side=2048),
            target_area=settings.target_area,
            can_generate=True,
        )

    def load(self) -> None:
        pass

    def lora_layers(self, text_to_image: bool) -> ModelLayers:
        return qwen_image_layer_names()

    def edit(
        self,
        images: Sequence[Image.Image],
        plan: EditPlan,
        *,
        on_step: StepCallback | None = None,
        should_stop: StopCheck | None = None,
    ) -> EditResult:
        return self._run(plan, plan.steps, on_step, should_stop)

    def edit_views(
        self,
        images: Sequence[Image.Image],
        plans: Sequence[EditPlan],
        *,
        on_step: StepCallback | None = None,
        should_stop: StopCheck | None = None,
    ) -> list[EditResult]:
        total = sum(plan.steps for plan in plans)
        results, done = [], 0
        for plan in plans:
            progress = offset_progress(on_step, done, total)
            results.append(self.edit(images, plan, on_step=progress, should_stop=should_stop))
            done += plan.steps
        return results

    def generate(
        self,
        plans: Sequence[EditPlan],
        *,
        on_step: StepCallback | None = None,
        should_stop: StopCheck | None = None,
    ) -> list[EditResult]:
        """As the real engine counts them, each output's steps count."""
        total = sum(plan.steps * plan.num_outputs for plan in plans)
        results, done = [], 0
        for plan in plans:
            steps = plan.steps * plan.num_outputs
            results.append(self._run(plan, steps, offset_progress(on_step, done, total), should_stop))
            done += steps
        return results

    def _run(
        self, plan: EditPlan, steps: int, on_step: StepCallback | None, should_stop: StopCheck | None
    ) -> EditResult:
        seed = random_seed() if plan.seed is None else plan.seed
        started = time.perf_counter()
        for step in range(1, steps + 1):
            if should_stop is not None and should_stop():
                raise Canceled("the job was canceled")
            time.sleep(self.step_seconds)
            if FAIL_MARKER in plan.prompt and step == max(1, steps // 2):
                raise EngineError(f"the fake engine failed on purpose (prompt contains {FAIL_MARKER!r})")
            if on_step is not None:
                on_step(step, steps)
        pictures = [render_fake(plan, seed + k) for k in range(plan.num_outputs)]
        return EditResult(images=pictures, seed=seed, timings={"inference_s": time.perf_counter() - started})


def qwen_image_layer_names() -> dict[str, None]:
    """The LoRA-able layers of the real Qwen-Image transformer, by name only."""
    blocks = (
        f"transformer_blocks.{block}.{layer}"
        for block in range(QWEN_IMAGE_BLOCKS)
        for layer in QWEN_IMAGE_BLOCK_LAYERS
    )
    return dict.fromkeys([*QWEN_IMAGE_OUTER_LAYERS, *blocks])


def render_fake(plan: EditPlan, seed: int) -> Image.Image:
    """A flat colour from (prompt, seed), a compass arrow at the azimuth, and the prompt as text."""
    digest = hashlib.sha256(f"{plan.prompt}|{seed}".encode()).digest()
    image = Image.new("RGB", (plan.width, plan.height), (digest[0], digest[1], digest[2]))
    draw = ImageDraw.Draw(image)
    ink = (255, 255, 255) if sum(digest[:3]) < 384 else (0, 0, 0)
    if plan.pose is not None:
        cx, cy = plan.width / 2, plan.height / 2
        radius = min(plan.width, plan.height) * 0.35
        angle = math.radians(plan.pose.azimuth_deg)
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), outline=ink)
        draw.line((cx, cy, cx + radius * math.sin(angle), cy - radius * math.cos(angle)), fill=ink, width=3)
    size = max(8, min(plan.width, plan.height) // 24)
    font = ImageFont.load_default(size=size)
    draw.multiline_text(
        (size // 2, size // 2), _wrap(plan.prompt, max(8, 2 * plan.width // size)), fill=ink, font=font
    )
    return image


def _wrap(text: str, width: int) -> str:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])
