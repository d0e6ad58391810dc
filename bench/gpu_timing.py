"""Timing edits through the engine, phase by phase, as the server's runner does them.

`PhaseTimer` wraps pipeline internals from the outside (encode_prompt, the VAE's encode/decode, the image
processor, forward hooks on the text encoder and the transformer, the engine's step callback), each
synchronising the device before and after. `run_once` is one edit from input bytes to output bytes;
`run_orbit` one 8-view orbit job. Both stand for a new picture: the engine's kept reference latents are
dropped first, unless `run_once` is asked for another edit of the same picture.
"""

from __future__ import annotations

import contextlib
import io
import statistics
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

    from reangle.core.edit import Acceleration, EditRequest

GIB = 1024**3

#: Phases every run reports (per-step phases `step_<k>` come on top).
CORE_PHASES = (
    "decode_input",
    "plan",
    "lora_select",
    "preprocess",
    "text_encode",
    "text_encoder_forward",
    "vae_encode",
    "denoise",
    "vae_decode",
    "postprocess",
    "edit",
    "encode_png",
    "end_to_end",
)


#: Phases inside engine.edit that do not overlap; the rest of `edit` is reported as `edit_unaccounted_s`.
ACCOUNTED_PHASES = (
    "lora_select",
    "preprocess",
    "text_encode",
    "vae_encode",
    "denoise",
    "vae_decode",
    "postprocess",
)


# Timing ---------------------------------------------------------------------------------------------------


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


class PhaseTimer:
    """Wraps pipeline internals from the outside and records per-phase seconds for the current run."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.samples: dict[str, float] = defaultdict(float)
        self._depth: dict[str, int] = defaultdict(int)
        self._restore: list[Callable[[], None]] = []
        self._step_started: float | None = None
        self._denoise_started: float | None = None
        self.text_tokens: int | None = None

    def now(self) -> float:
        synchronize(self.device)
        return time.perf_counter()

    def reset(self) -> None:
        # the engine switches adapters only when an edit needs other ones: often 0, still reported
        self.samples = defaultdict(float, lora_select=0.0)
        self._step_started = None
        self._denoise_started = None

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the outermost entry into `name` (nested calls, e.g. preprocess -> resize, count once)."""
        self._depth[name] += 1
        started = self.now() if self._depth[name] == 1 else 0.0
        try:
            yield
        finally:
            self._depth[name] -= 1
            if self._depth[name] == 0:
                self.samples[name] += self.now() - started

    def wrap(self, owner: Any, attribute: str, name: str) -> None:
        original = getattr(owner, attribute)
        had_own = attribute in vars(owner)

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.phase(name):
                return original(*args, **kwargs)

        setattr(owner, attribute, timed)  # an instance attribute shadows the class's method

        def restore() -> None:
            if had_own:
                setattr(owner, attribute, original)
            else:
                delattr(owner, attribute)

        self._restore.append(restore)

    def hook_module(self, module: Any, name: str) -> None:
        def before(_module: Any, _args: Any) -> None:
            self._depth[name] += 1
            if self._depth[name] == 1:
                self.samples[f"_{name}_start"] = self.now()

        def after(_module: Any, _args: Any, _output: Any) -> None:
            self._depth[name] -= 1
            if self._depth[name] == 0:
                self.samples[name] += self.now() - self.samples.pop(f"_{name}_start")

        handles = [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
        self._restore.extend(handle.remove for handle in handles)

    def install(self, pipe: Any) -> None:
        import reangle.engine.qwen as qwen_engine

        self.wrap(pipe, "encode_prompt", "text_encode")
        self.wrap(pipe.vae, "encode", "vae_encode")
        self.wrap(pipe.vae, "decode", "vae_decode")
        self.wrap(pipe.image_processor, "preprocess", "preprocess")
        self.wrap(pipe.image_processor, "resize", "preprocess")
        self.wrap(pipe.image_processor, "postprocess", "postprocess")
        self.wrap(qwen_engine, "to_pil_images", "postprocess")  # the engine's uint8 conversion and host copy
        for method in ("set_adapters", "enable_lora", "disable_lora"):
            self.wrap(pipe, method, "lora_select")
        self.hook_module(pipe.text_encoder, "text_encoder_forward")
        visual = getattr(getattr(pipe.text_encoder, "model", None), "visual", None)
        if visual is not None:
            self.hook_module(visual, "vision_tower_forward")

        def step_start(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
            if self._step_started is None:  # the first forward of a step (true CFG runs two)
                self._step_started = self.now()
                if self._denoise_started is None:
                    self._denoise_started = self._step_started
            prompt = kwargs.get("encoder_hidden_states")
            if prompt is not None:
                self.text_tokens = int(prompt.shape[1])

        handle = pipe.transformer.register_forward_pre_hook(step_start, with_kwargs=True)
        self._restore.append(handle.remove)

    def step_end(self, step: int, steps: int) -> None:
        """The engine's on_step callback: called after the scheduler step of each denoising step."""
        ended = self.now()
        if self._step_started is not None:
            self.samples[f"step_{step}"] += ended - self._step_started
        self._step_started = None
        if step == steps and self._denoise_started is not None:
            self.samples["denoise"] += ended - self._denoise_started

    def uninstall(self) -> None:
        while self._restore:
            self._restore.pop()()


@dataclass(frozen=True, kw_only=True)
class Workload:
    input_png: bytes
    size: int
    steps: int | None
    acceleration: Acceleration
    instruction: str


def make_input_png(size: int) -> bytes:
    """A photo-like picture (smooth gradients, shapes, mild noise), PNG-encoded."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    base = np.stack([200 * x + 30, 160 * y + 50, 120 * (1 - x * y) + 60], axis=-1)
    noisy = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype("uint8")
    image = Image.fromarray(noisy, "RGB")
    draw = ImageDraw.Draw(image)
    draw.ellipse((size * 0.3, size * 0.3, size * 0.7, size * 0.75), fill=(180, 60, 40))
    draw.rectangle((size * 0.1, size * 0.7, size * 0.35, size * 0.95), fill=(40, 90, 170))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True, kw_only=True)
class Run:
    """Seconds per phase of one timed run, and the pictures it produced."""

    timings: dict[str, float]
    images: list[Image.Image]


def camera_request(work: Workload, seed: int, azimuth: int) -> EditRequest:
    from reangle.core.camera import pose_from_snapped
    from reangle.core.edit import EditRequest

    return EditRequest(
        prompt=work.instruction,
        pose=pose_from_snapped(azimuth=azimuth),
        acceleration=work.acceleration,
        steps=work.steps,
        seed=seed,
        width=work.size,
        height=work.size,
    )


def run_once(
    engine: Any, work: Workload, seed: int, timer: PhaseTimer | None, *, same_picture: bool = False
) -> Run:
    """Input bytes -> decoded image -> plan -> engine.edit -> PNG bytes, as the server's runner does it.

    `same_picture`: the engine may reuse what it kept of an earlier edit of this input (its VAE latents)."""
    from reangle.core.images import decode_image, encode_image
    from reangle.engine.base import plan_for

    device = engine.info.device
    marks: dict[str, float] = {}
    if not same_picture:
        engine.forget_references()
    if timer is not None:
        timer.reset()
    synchronize(device)
    started = time.perf_counter()
    image = decode_image(work.input_png, name="input").image
    marks["decode_input"] = time.perf_counter()
    plan = plan_for(engine, camera_request(work, seed, azimuth=90), [image])
    marks["plan"] = time.perf_counter()
    on_step = timer.step_end if timer is not None else _no_progress
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # random weights may give NaN pixels
        result = engine.edit([image], plan, on_step=on_step)
    synchronize(device)
    marks["edit"] = time.perf_counter()
    encode_image(result.images[0], "png")
    marks["encode_png"] = time.perf_counter()
    timings = {
        "decode_input": marks["decode_input"] - started,
        "plan": marks["plan"] - marks["decode_input"],
        "edit": marks["edit"] - marks["plan"],
        "encode_png": marks["encode_png"] - marks["edit"],
        "end_to_end": marks["encode_png"] - started,
    }
    if timer is not None:
        timings |= {name: value for name, value in timer.samples.items() if not name.startswith("_")}
    return Run(timings=timings, images=list(result.images))


def run_orbit(engine: Any, work: Workload, seed: int, *, batched: bool) -> Run:
    """One orbit job of the server's default 8 views, input bytes -> 8 PNGs: all views through one
    `engine.edit_views` call (`batched`), or one `engine.edit` call per view as the runner's loop does."""
    from reangle.core.images import decode_image, encode_image
    from reangle.core.models import EIGHT_VIEWS
    from reangle.engine.base import plan_for

    device = engine.info.device
    engine.forget_references()
    synchronize(device)
    started = time.perf_counter()
    image = decode_image(work.input_png, name="input").image
    plans = [plan_for(engine, camera_request(work, seed, azimuth), [image]) for azimuth in EIGHT_VIEWS]
    planned = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if batched:
            results = engine.edit_views([image], plans)
        else:
            results = [engine.edit([image], plan) for plan in plans]
    synchronize(device)
    edited = time.perf_counter()
    images = [picture for result in results for picture in result.images]
    for picture in images:
        encode_image(picture, "png")
    ended = time.perf_counter()
    timings = {"prepare": planned - started, "edit": edited - planned, "encode_png": ended - edited}
    return Run(timings=timings | {"end_to_end": ended - started}, images=images)


def _no_progress(_step: int, _steps: int) -> None:
    pass


def summarise(runs: Sequence[dict[str, float]]) -> dict[str, dict[str, Any]]:
    names = sorted({name for run in runs for name in run}, key=_phase_order)
    return {
        name: {
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
            "n": len(values),
            "values": values,
        }
        for name in names
        if (values := [run[name] for run in runs if name in run])
    }


def _phase_order(name: str) -> tuple[int, int, str]:
    split = CORE_PHASES.index("denoise")
    order = [*CORE_PHASES[:split], "vision_tower_forward", "step_", *CORE_PHASES[split:]]
    if name.startswith("step_"):
        return (order.index("step_"), int(name.removeprefix("step_")), name)
    if name in order:
        return (order.index(name), 0, name)
    return (len(order), 0, name)


def memory_gib(device: str, what: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    import torch

    value = getattr(torch.cuda, what)(device)
    return round(float(value) / GIB, 3)
