#!/usr/bin/env python
"""Time camera edits through reangle's `qwen` engine, phase by phase, for a sweep of engine variants.

`--config real` builds the real-size Qwen-Image-Edit-2511 architecture (60-layer MMDiT, Qwen-Image VAE,
Qwen2.5-VL-7B text encoder) with random bf16 weights created directly on the GPU, writes random LoRA files
of the real shapes (Lightning: rank 64 on the attention and MLP linears; Multiple-Angles: rank 16 on those
plus the modulation linears), and runs `QwenEngine.edit` exactly as the server does, through the engine's
`pipeline_factory` seam. Weights are random, so the images are noise: only the timings, the memory and the
numerical agreement between variants mean anything. The arithmetic (shapes, token counts, kernels) is that of
the real model.

`--config tiny` uses reangle's tiny random pipeline on any device in seconds: it checks that this script works
and says nothing about speed.

`--variants baseline,cudnn,fp8,fp8+compile` measures each variant (a set of QwenConfig options; see
`gpu_variants.py`) on its own pipeline built from the same seed, and compares each variant's output with the
baseline's for the same input and seed (PSNR on 8-bit RGB). `--orbit` adds an 8-view orbit job per variant,
through `QwenEngine.edit_views` and through 8 `edit` calls; `--profile` adds one edit under torch.profiler
(`gpu_profile.py`). Phase timings come from wrappers installed on the
pipeline from outside (`gpu_timing.py`); separate "clean" runs without any wrapper give the end-to-end number
and the back-to-back throughput. It prints a Markdown table per sweep and writes JSON after every variant.

    .venv/bin/python bench/gpu_edit.py --config real --variants baseline,cudnn,fp8 --json-out bench-h100.json
    .venv/bin/python bench/gpu_edit.py --config tiny --runs 1 --warmup 1 --size 64

Exit status: 0 done, 2 bad usage (including `--config real` without CUDA, an unknown variant), 1 a variant
failed (the others are still measured and reported).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from gpu_model import REAL_LORAS, TINY_LORAS, build_real_transformer, write_loras
from gpu_sweep import (
    Reference,
    SweepPlan,
    engine_options,
    new_report,
    option_problem,
    read_reference,
    run_sweep,
    save_reference,
)
from gpu_timing import GIB, Workload, make_input_png
from gpu_variants import BASELINE, Variant, VariantError, orbit_table, parse_variants, variants_table
from PIL import Image

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


# Environment ----------------------------------------------------------------------------------------------


def versions() -> dict[str, str | None]:
    import diffusers
    import peft
    import PIL
    import pydantic
    import torch
    import transformers

    import reangle

    cudnn: Any = torch.backends.cudnn
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": str(cudnn.version()) if cudnn.is_available() else None,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "pillow": PIL.__version__,
        "pydantic": pydantic.__version__,
        "reangle": reangle.__version__,
    }


def device_info(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "device": device,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        info |= {
            "name": props.name,
            "total_memory_gib": round(props.total_memory / GIB, 2),
            "capability": f"{props.major}.{props.minor}",
            "multiprocessors": props.multi_processor_count,
        }
    else:
        info["name"] = f"CPU ({info['cpu']}, {info['cpu_count']} cores)"
    return info


# Arguments ------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="gpu_edit.py",
        description="Time camera edits through reangle's qwen engine on a random-weight pipeline, "
        "for one or more engine variants.",
    )
    parser.add_argument(
        "--config", choices=("real", "tiny"), default="real", help="model size (default real)"
    )
    parser.add_argument("--device", help="cuda, cuda:1, cpu ... (default: cuda if available, else cpu)")
    parser.add_argument(
        "--variants",
        default=BASELINE,
        help="comma-separated engine variants, each named option sets (baseline, cudnn, flash, efficient, "
        "math, compile, fp8, fused) and/or QwenConfig options as key=value, joined by '+' (default baseline)",
    )
    parser.add_argument(
        "--orbit",
        nargs="?",
        const="*",
        help="also time an 8-view orbit (edit_views and 8 x edit) for these variants (default: all)",
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="*",
        help="also profile one edit (torch.profiler) of these comma-separated variants; the kernel table and "
        "the trace go beside --json-out (default: all)",
    )
    parser.add_argument("--orbit-runs", type=int, default=1, help="timed orbits of each kind (default 1)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs with phase timers (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    parser.add_argument("--edits", type=int, help="back-to-back edits for the throughput (default: 2 x runs)")
    parser.add_argument(
        "--size", type=int, default=1024, help="input and output side in pixels (default 1024)"
    )
    parser.add_argument("--steps", type=int, help="denoising steps (default: the acceleration's, 4 for high)")
    parser.add_argument(
        "--acceleration", choices=("none", "regular", "high"), default="high", help="(default high)"
    )
    parser.add_argument("--prompt", default="", help="instruction after the camera phrase (default none)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument(
        "--reference", type=Path, help="a baseline output PNG of an earlier run (same config, size and seed)"
    )
    parser.add_argument("--save-reference", type=Path, help="write the baseline variant's output PNG here")
    parser.add_argument(
        "--budget-s",
        type=float,
        help="wall seconds for the sweep: skip a variant when less is left than the longest one took",
    )
    parser.add_argument("--work-dir", type=Path, help="where the random LoRA files go (default: a temp dir)")
    parser.add_argument("--json-out", type=Path, help="write the report here as JSON (after every variant)")
    args = parser.parse_args(argv)
    for name in ("runs", "size", "orbit_runs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0 or (args.edits is not None and args.edits < 0):
        parser.error("--warmup and --edits must not be negative")
    if args.size % 16:
        parser.error("--size must be a multiple of 16")
    if args.budget_s is not None and args.budget_s <= 0:
        parser.error("--budget-s must be positive")
    return args


def fail_usage(message: str) -> None:
    print(f"gpu_edit.py: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def resolve_device(args: argparse.Namespace) -> str:
    """The device to run on; exits with 2 when the real configuration is asked for without CUDA."""
    import torch

    device: str = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        fail_usage(f"--device {device} was given, but torch sees no CUDA device")
    if args.config == "real" and not device.startswith("cuda"):
        fail_usage(
            "--config real needs a CUDA GPU with about 70 GB of memory (H100 80 GB, H200); "
            f"this machine {'has none' if not torch.cuda.is_available() else f'was asked for {device}'}. "
            "Use --config tiny to check the script on a CPU."
        )
    return device


def resolve_variants(args: argparse.Namespace) -> tuple[list[Variant], frozenset[str], frozenset[str]]:
    """The variants to sweep, those that also time an orbit and those profiled; exits with 2 on a bad name."""
    try:
        variants = parse_variants(args.variants, engine_options())
    except VariantError as exc:
        fail_usage(f"--variants: {exc}")
    for variant in variants:
        problem = option_problem(variant.overrides)
        if problem:
            fail_usage(f"--variants: variant {variant.name!r}: {problem}")
    names = [variant.name for variant in variants]
    return (
        variants,
        chosen_variants("--orbit", args.orbit, names),
        chosen_variants("--profile", args.profile, names),
    )


def chosen_variants(option: str, text: str | None, names: list[str]) -> frozenset[str]:
    """The variants an option names (`*`: all of them); exits with 2 on a name not among --variants."""
    if text is None:
        return frozenset()
    if text == "*":
        return frozenset(names)
    chosen = [name.strip() for name in text.split(",")]
    unknown = [name for name in chosen if name not in names]
    if unknown:
        fail_usage(f"{option}: {', '.join(unknown)} is not among --variants ({', '.join(names)})")
    return frozenset(chosen)


def load_reference(args: argparse.Namespace) -> Reference | None:
    if args.reference is None:
        return None
    try:
        reference = read_reference(args.reference)
    except (OSError, ValueError) as exc:
        fail_usage(f"--reference {args.reference}: not a readable picture ({exc})")
    if reference.image.size != (args.size, args.size):
        fail_usage(f"--reference {args.reference} is {reference.image.size}, not {args.size} pixels square")
    return reference


# Main -----------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    variants, orbit, profile = resolve_variants(args)  # before resolve_device: no torch import to refuse them
    device = resolve_device(args)
    reference = load_reference(args)
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="reangle-bench-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        report = benchmark(args, device, variants, orbit, profile, reference, work_dir)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    print_tables(report)
    if args.json_out is not None:
        print(f"\nwrote {args.json_out}")
    return EXIT_FAILED if any(record.get("error") for record in report["variants"]) else EXIT_OK


def benchmark(
    args: argparse.Namespace,
    device: str,
    variants: list[Variant],
    orbit: frozenset[str],
    profile: frozenset[str],
    reference: Reference | None,
    work_dir: Path,
) -> dict[str, Any]:
    import torch

    from reangle.core.edit import PRESETS, Acceleration
    from reangle.engine.qwen import quiet_libraries
    from reangle.engine.tiny import build_tiny_components

    quiet_libraries()
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    started = time.perf_counter()
    if args.config == "real":
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            shape_source = build_real_transformer()
        specs = REAL_LORAS
    else:
        shape_source = build_tiny_components()["transformer"]
        specs = TINY_LORAS
    loras, lora_bytes = write_loras(
        work_dir, shape_source, specs, torch.bfloat16 if args.config == "real" else dtype
    )
    lora_files_s = time.perf_counter() - started

    acceleration = cast("Acceleration", args.acceleration)
    edits = args.edits if args.edits is not None else 2 * args.runs
    plan = SweepPlan(
        config=args.config,
        device=device,
        variants=variants,
        loras=loras,
        work=Workload(
            input_png=make_input_png(args.size),
            size=args.size,
            steps=args.steps,
            acceleration=acceleration,
            instruction=args.prompt,
        ),
        seed=args.seed,
        runs=args.runs,
        warmup=args.warmup,
        edits=edits,
        orbit=orbit,
        orbit_runs=args.orbit_runs,
        reference=reference,
        budget_s=args.budget_s,
        profile=profile,
        profile_dir=args.json_out.parent if args.json_out is not None else Path.cwd(),
    )
    report = new_report(
        plan,
        device=device_info(device),
        versions=versions(),
        settings={
            "size": args.size,
            "steps": args.steps or PRESETS[acceleration].steps,
            "acceleration": args.acceleration,
            "runs": args.runs,
            "warmup": args.warmup,
            "edits": edits,
            "seed": args.seed,
            "dtype": str(dtype).removeprefix("torch."),
            "prompt": args.prompt,
            "loras": {
                name: {"rank": spec.rank, "linears_per_block": len(spec.targets), "bytes": lora_bytes[name]}
                for name, spec in specs.items()
            },
            "image_tokens": (args.size // 16) ** 2,
            "reference_tokens": (args.size // 16) ** 2,
            "variants": [variant.name for variant in variants],
            "orbit": sorted(orbit),
            "orbit_runs": args.orbit_runs,
            "profile": sorted(profile),
            "budget_s": args.budget_s,
        },
        setup_s={"lora_files_s": lora_files_s},
    )
    print_header(report)

    def on_variant(record: dict[str, Any], output: Image.Image | None) -> None:
        print_variant(record)
        if output is not None and record["name"] == BASELINE and args.save_reference is not None:
            save_reference(output, record["weights_fingerprint"], args.save_reference)
        if args.json_out is not None:
            write_json(report, args.json_out)

    run_sweep(plan, report, on_variant)
    return report


def write_json(report: dict[str, Any], path: Path) -> None:
    """Replace `path` whole, so that a run stopped mid-sweep leaves the variants done so far."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(jsonable(report), indent=2, allow_nan=False) + "\n")
    partial.replace(path)


def jsonable(value: Any) -> Any:
    """Plain JSON: non-finite floats as strings, dataclasses as objects, anything unknown as text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(item) for item in value]
    if hasattr(value, "__dataclass_fields__"):
        return jsonable({name: getattr(value, name) for name in value.__dataclass_fields__})
    if hasattr(value, "item") and callable(value.item):  # a numpy or torch scalar
        return jsonable(value.item())
    return str(value)


# Printing -------------------------------------------------------------------------------------------------


def print_header(report: dict[str, Any]) -> None:
    settings, device = report["settings"], report["device"]
    print(
        f"reangle gpu_edit: config {report['config']} on {device['name']}; "
        f"{settings['size']}x{settings['size']} in and out, {settings['steps']} steps "
        f"({settings['acceleration']}), {settings['dtype']}, {settings['runs']} runs after "
        f"{settings['warmup']} warm-up, {settings['edits']} back to back; "
        f"variants {', '.join(settings['variants'])}",
        flush=True,
    )
    versions = ", ".join(f"{name} {value}" for name, value in report["versions"].items())
    print(f"versions: {versions}", flush=True)
    if not report["meaningful_for_speed"]:
        print(
            "NOTE: the tiny configuration only checks that this script works; "
            "its times say nothing about speed",
            flush=True,
        )


def print_variant(record: dict[str, Any]) -> None:
    print(f"\n== variant {record['name']} ({record['settings_text']})")
    if record.get("skipped"):
        print(f"skipped: {record['skipped']}", flush=True)
        return
    if record.get("error"):
        print(f"FAILED after {record['seconds']:.1f} s: {record['error']}\n{record['traceback']}", flush=True)
        return
    print(f"{'phase':<24}{'median ms':>12}{'min ms':>12}{'max ms':>12}{'n':>5}")
    for name, stats in record["phases_s"].items():
        print(
            f"{name:<24}{stats['median'] * 1e3:>12.2f}{stats['min'] * 1e3:>12.2f}"
            f"{stats['max'] * 1e3:>12.2f}{stats['n']:>5}"
        )
    memory, throughput, quality = record["memory"], record["throughput"], record["quality"]
    if memory["peak_edit_gib"] is not None:
        print(
            f"memory: weights {memory['weights_gib']} GiB, peak while loading {memory['peak_load_gib']} GiB,"
            f" peak while editing {memory['peak_edit_gib']} GiB"
            f" (reserved {memory['peak_edit_reserved_gib']} GiB)"
        )
    if throughput["edits_per_minute"] is not None:
        print(
            f"throughput: {throughput['edits']} edits back to back in {throughput['wall_s']:.2f} s = "
            f"{throughput['edits_per_minute']:.1f} edits/min"
        )
    setup = ", ".join(f"{name} {value:.1f} s" for name, value in record["setup_s"].items())
    warmup = record["warmup_s"]
    print(f"setup: {setup}" + (f" (engine warm-up {warmup:.1f} s)" if warmup is not None else ""))
    stats = quality["output_stats"]
    print(
        f"output (seed {quality['seed']}): mean {stats['mean']:.1f}, std {stats['std']:.1f}, "
        f"black {stats['black_fraction']:.1%}; PSNR same seed twice {_db(quality['repeat'])}, "
        f"vs baseline {_db(quality.get('vs_baseline'))}, "
        f"vs --reference {_db(quality.get('vs_reference_file'))}"
    )
    same = [f"{key} {value}" for key, value in record.items() if key.startswith("same_weights_as_")]
    print(f"weights: {', '.join(same)}; pipeline released after: {record['pipeline_released']}")
    if record.get("fp8_report") is not None:
        print(f"fp8: {json.dumps(jsonable(record['fp8_report']))[:400]}")
    print(f"variant took {record['seconds']:.1f} s", flush=True)


def _db(comparison: dict[str, Any] | None) -> str:
    if comparison is None:
        return "-"
    value = comparison["psnr_db"]
    return f"{value} dB" if isinstance(value, str) else f"{value:.2f} dB"


def print_tables(report: dict[str, Any]) -> None:
    settings = report["settings"]
    print(
        f"\n### {report['device']['name']}, config {report['config']}: "
        f"{settings['size']}x{settings['size']}, "
        f"{settings['steps']} steps ({settings['acceleration']}), {settings['dtype']}; medians of "
        f"{settings['runs']} warm runs; {report['versions']['torch']}, diffusers "
        f"{report['versions']['diffusers']}\n"
    )
    print(variants_table(report["variants"]))
    orbit = orbit_table(report["variants"])
    if orbit:
        print(f"\n{orbit}")
    for record in report["variants"]:
        profile = record.get("profile")
        if profile and "gpu_busy_ms" in profile:
            by_phase = profile["gpu_idle_by_host_phase_ms"].items()
            idle = ", ".join(f"{phase} {ms:.0f}" for phase, ms in by_phase)
            print(
                f"\nprofile of `{record['name']}` (one edit, profiler on): {profile['wall_ms']:.0f} ms, "
                f"GPU busy {profile['gpu_busy_ms']:.0f} ms, idle {profile['gpu_idle_ms']:.0f} ms "
                f"(by host phase: {idle})"
            )
    if not report["meaningful_for_speed"]:
        print("\n(tiny configuration: these times say nothing about speed)")


if __name__ == "__main__":
    sys.exit(main())
