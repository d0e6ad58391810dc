"""Measuring engine variants one after another in one process, on identical random weights.

Each variant gets its own pipeline: built from the same seed (its weights fingerprint is recorded and
compared), loaded by a `QwenEngine` configured with the variant's options, timed, then released before the
next one, so that in-place changes (FP8 quantisation, compiled blocks) never leak into another variant. A
variant that fails is recorded with its error and the sweep goes on.
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import json
import math
import statistics
import time
import traceback
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpu_model import Build, pipeline_factory
from gpu_profile import profile_edit
from gpu_timing import (
    ACCOUNTED_PHASES,
    PhaseTimer,
    Workload,
    memory_gib,
    run_once,
    run_orbit,
    summarise,
    synchronize,
)
from gpu_variants import BASELINE, Variant, compare, image_stats
from PIL import Image

#: QwenConfig fields the benchmark sets itself; every other field is an engine option a variant may set.
RESERVED_FIELDS = frozenset(
    {
        "model",
        "loras",
        "device",
        "offline",
        "target_area",
        "reference_area",
        "limits",
        "name",
        "demo",
        "pipeline_factory",
    }
)


def engine_options() -> dict[str, Any]:
    """The engine options of this reangle's QwenConfig, with their defaults."""
    from reangle.engine.qwen import QwenConfig

    return {
        field.name: field.default
        for field in dataclasses.fields(QwenConfig)
        if field.name not in RESERVED_FIELDS and field.default is not dataclasses.MISSING
    }


def option_problem(overrides: dict[str, Any]) -> str | None:
    """Why these engine options would fail when the engine loads: a value its type does not allow, an
    attention backend diffusers does not know. None when they look valid."""
    from reangle.engine.acceleration import attention_backend_names
    from reangle.engine.qwen import QwenConfig

    try:
        hints = typing.get_type_hints(QwenConfig)
    except NameError:  # an annotation only a type checker resolves: the engine still checks when it loads
        hints = {}
    for key, value in overrides.items():
        allowed: Sequence[Any] = ()
        if typing.get_origin(hints.get(key)) is typing.Literal:
            allowed = typing.get_args(hints[key])
        elif key == "attention_backend":
            allowed = attention_backend_names()
        if allowed and value not in allowed:
            return f"{key}={value} is not one of {', '.join(map(str, allowed))}"
    return None


@dataclass(frozen=True, kw_only=True)
class Reference:
    """A baseline output to compare variants with, where it came from, and the weights that made it."""

    image: Image.Image
    source: str
    fingerprint: dict[str, float] | None


#: PNG text chunk holding the weights fingerprint of a saved baseline output.
FINGERPRINT_CHUNK = "reangle-weights-fingerprint"


def save_reference(image: Image.Image, fingerprint: dict[str, float], path: Path) -> None:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(FINGERPRINT_CHUNK, json.dumps(fingerprint))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", pnginfo=info)


def read_reference(path: Path) -> Reference:
    """A PNG saved by `save_reference` (or any picture, then without a fingerprint); OSError if unreadable."""
    with Image.open(path) as picture:
        text = getattr(picture, "text", {})
        fingerprint = json.loads(text[FINGERPRINT_CHUNK]) if FINGERPRINT_CHUNK in text else None
        return Reference(image=picture.convert("RGB"), source=str(path), fingerprint=fingerprint)


@dataclass(frozen=True, kw_only=True)
class SweepPlan:
    config: str
    device: str
    variants: list[Variant]
    loras: dict[str, str]
    work: Workload
    seed: int
    runs: int
    warmup: int
    edits: int
    #: Names of the variants that also time an 8-view orbit.
    orbit: frozenset[str]
    orbit_runs: int
    #: An earlier run's baseline output (--reference).
    reference: Reference | None = None
    #: Wall seconds the sweep may take; a variant is skipped when less is left than the longest one so far.
    budget_s: float | None = None
    #: Names of the variants that also profile one edit (--profile), and where their files go.
    profile: frozenset[str] = frozenset()
    profile_dir: Path | None = None


def run_sweep(
    plan: SweepPlan,
    report: dict[str, Any],
    on_variant: Callable[[dict[str, Any], Image.Image | None], None],
) -> None:
    """Measure each variant into `report["variants"]`, calling `on_variant` after each (to save progress)."""
    started = time.perf_counter()
    durations: list[float] = []
    reference = plan.reference
    first_fingerprint: dict[str, float] | None = None
    for variant in plan.variants:
        head = {
            "name": variant.name,
            "overrides": variant.overrides,
            "settings_text": variant.settings_text(),
        }
        left = None if plan.budget_s is None else plan.budget_s - (time.perf_counter() - started)
        if left is not None and durations and left < max(durations):
            longest = max(durations)
            record: dict[str, Any] = head | {
                "skipped": f"time budget: {left:.0f} s left, the longest variant so far took {longest:.0f} s"
            }
            report["variants"].append(record)
            on_variant(record, None)
            continue
        variant_started = time.perf_counter()
        output: Image.Image | None = None
        build = Build()
        try:
            record, output = measure_variant(plan, variant, build)
        except Exception as exc:  # a variant failing (out of memory, an unsupported backend) ends only itself
            record = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=-12)}
        finally:
            release(plan.device)
        record = (
            head
            | record
            | {
                "seconds": time.perf_counter() - variant_started,
                # a pipeline still alive here would stay in memory under the next variant's
                "pipeline_released": build.released(),
                "memory_after_release_gib": memory_gib(plan.device, "memory_allocated"),
            }
        )
        durations.append(record["seconds"])
        if output is not None:
            fingerprint = record["weights_fingerprint"]
            first_fingerprint = first_fingerprint or fingerprint
            record["same_weights_as_first_variant"] = fingerprint == first_fingerprint
            if plan.reference is not None and plan.reference.fingerprint is not None:
                record["same_weights_as_reference"] = fingerprint == plan.reference.fingerprint
            quality = record["quality"]
            if variant.name == BASELINE:
                if plan.reference is not None:
                    quality["vs_reference_file"] = compared(plan.reference, output)
                reference = Reference(
                    image=output, source=f"variant {BASELINE} of this run", fingerprint=fingerprint
                )
            if reference is not None:
                quality["vs_baseline"] = compared(reference, output)
        report["variants"].append(record)
        on_variant(record, output)


def compared(reference: Reference, output: Image.Image) -> dict[str, Any]:
    return compare(reference.image, output) | {"reference": reference.source}


def measure_variant(plan: SweepPlan, variant: Variant, build: Build) -> tuple[dict[str, Any], Image.Image]:
    """Build, load, warm up and time one variant; returns its record and the output of the quality seed."""
    import torch

    from reangle.core.edit import SizeLimits
    from reangle.engine.qwen import QwenConfig, QwenEngine

    device, work = plan.device, plan.work
    engine = QwenEngine(
        QwenConfig(
            model=f"random-weight {plan.config} architecture (bench)",
            loras=plan.loras,
            device=device,
            offline=True,
            target_area=work.size * work.size,
            reference_area=work.size * work.size,
            limits=SizeLimits(min_side=16, max_side=2048),
            name="qwen",
            demo=True,
            pipeline_factory=pipeline_factory(plan.config, device, work.instruction, build),
            **variant.overrides,
        )
    )
    cuda = device.startswith("cuda")
    memory: dict[str, float | None] = {"before_load_gib": memory_gib(device, "memory_allocated")}
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    engine.load()
    synchronize(device)
    load_s = time.perf_counter() - started  # build + LoRA loading + the engine's own warm-up
    memory |= {
        "weights_gib": memory_gib(device, "memory_allocated"),
        "peak_load_gib": memory_gib(device, "max_memory_allocated"),
    }
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)

    for index in range(plan.warmup):
        run_once(engine, work, plan.seed + index, None)
    timer = PhaseTimer(device)
    timer.install(engine.pipeline)  # read-only access: the timers wrap the pipeline from outside
    try:
        timed = [run_once(engine, work, plan.seed + index, timer) for index in range(plan.runs)]
        # the next angle of the picture the last timed run edited
        same_picture = [
            run_once(engine, work, plan.seed + index, timer, same_picture=True) for index in range(plan.runs)
        ]
    finally:
        timer.uninstall()
    clean = [run_once(engine, work, plan.seed + index, None) for index in range(plan.runs)]
    started = time.perf_counter()
    for index in range(plan.edits):
        run_once(engine, work, plan.seed + index, None)
    wall = time.perf_counter() - started
    memory |= {
        "peak_edit_gib": memory_gib(device, "max_memory_allocated"),
        "peak_edit_reserved_gib": memory_gib(device, "max_memory_reserved"),
    }

    phases = summarise([run.timings for run in timed])
    clean_runs = [{"end_to_end_clean": run.timings["end_to_end"]} for run in clean]
    phases["end_to_end_clean"] = summarise(clean_runs)["end_to_end_clean"]
    accounted = sum(phases[name]["median"] for name in ACCOUNTED_PHASES if name in phases)
    steps = [name for name in phases if name.startswith("step_")]
    output = clean[0].images[0]  # seed plan.seed, as the first timed run: the two must match
    record: dict[str, Any] = {
        "engine_options": {name: getattr(engine.config, name) for name in engine_options()},
        "setup_s": {"build_s": build.seconds, "load_s": load_s},
        "warmup_s": getattr(engine, "warmup_s", None),
        "fp8_report": getattr(engine, "fp8_report", None),
        "baked_loras": getattr(engine, "baked_loras", None),
        "baked_layers": getattr(engine, "baked_layers", None),
        "weights_fingerprint": build.fingerprint,
        "params": build.params,
        "text_tokens": timer.text_tokens,
        "phases_s": phases,
        "medians_s": {name: stats["median"] for name, stats in phases.items()},
        "same_picture_phases_s": summarise([run.timings for run in same_picture]),
        "step_median_s": statistics.median(phases[name]["median"] for name in steps) if steps else None,
        "edit_unaccounted_s": phases["edit"]["median"] - accounted,
        "memory": memory,
        "throughput": {
            "edits": plan.edits,
            "wall_s": wall,
            "edits_per_minute": 60 * plan.edits / wall if plan.edits and wall > 0 else None,
        },
        "quality": {
            "seed": plan.seed,
            "output_stats": image_stats(output),
            "repeat": compare(timed[0].images[0], output),
        },
    }
    if variant.name in plan.orbit:
        record["orbit"] = measure_orbit(engine, work, plan.seed, plan.orbit_runs)
    if variant.name in plan.profile and plan.profile_dir is not None:
        record["profile"] = profile_edit(engine, work, plan.seed, plan.profile_dir, variant.name)
    return record, output


def measure_orbit(engine: Any, work: Workload, seed: int, runs: int) -> dict[str, Any]:
    """8 views through `edit_views` (after one untimed orbit) and through 8 `edit` calls, end to end."""
    run_orbit(engine, work, seed, batched=True)
    batched = [run_orbit(engine, work, seed, batched=True) for _ in range(runs)]
    loop = [run_orbit(engine, work, seed, batched=False) for _ in range(runs)]
    comparisons = [compare(a, b) for a, b in zip(loop[0].images, batched[0].images, strict=True)]
    return {
        "views": len(loop[0].images),
        "loop": summarise([run.timings for run in loop]),
        "edit_views": summarise([run.timings for run in batched]),
        "views_vs_loop": comparisons,
        "views_vs_loop_min": min(comparisons, key=_psnr_value),
    }


def _psnr_value(comparison: dict[str, Any]) -> float:
    value = comparison["psnr_db"]
    return math.inf if value == "inf" else float(value)


def release(device: str) -> None:
    """Free what the last variant left: its modules, compiled graphs, and the allocator's cache."""
    import torch

    gc.collect()
    torch._dynamo.reset()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def new_report(plan: SweepPlan, **header: Any) -> dict[str, Any]:
    return {
        "bench": "gpu_edit",
        "schema": 2,
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "config": plan.config,
        "meaningful_for_speed": plan.config == "real",
        **header,
        "reference": plan.reference.source if plan.reference else None,
        "variants": [],
    }
