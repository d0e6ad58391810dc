"""One edit under torch.profiler: how long the GPU sits idle, in which phase, and which kernels take its time.

The phase timers of `gpu_timing` synchronise around every phase, so they cannot show the work the device
waits for (Python between kernels, host copies, launches). This profile runs one unsynchronised edit with
the same phases labelled (`record_function`), then reports the GPU's busy time (the union of its kernels),
its idle gaps with the phase the host was in when each began, and the kernels by total time. The profiler's
own cost makes the edit slower than the timed runs; compare its shares, not its seconds.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gpu_timing import PhaseTimer, Workload, run_once

#: The outermost label; its CPU span is the profiled edit's wall time.
EDIT_LABEL = "bench_edit"
LABELS = (
    "decode_input",
    "lora_select",
    "preprocess",
    "text_encode",
    "vae_encode",
    "vae_decode",
    "postprocess",
    "encode_png",
)


class PhaseLabels(PhaseTimer):
    """The timer's wrappers, labelling each phase for the profiler instead of timing it (no synchronising)."""

    def now(self) -> float:
        return time.perf_counter()

    def install(self, pipe: Any) -> None:
        import reangle.core.images as images

        super().install(pipe)
        self.wrap(images, "decode_image", "decode_input")  # run_once imports both when it runs
        self.wrap(images, "encode_image", "encode_png")

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        from torch.profiler import record_function

        with record_function(name):
            yield


def profile_edit(engine: Any, work: Workload, seed: int, out_dir: Path, name: str) -> dict[str, Any]:
    """Profile one edit (after one labelled but unprofiled edit); write the kernel table and the trace."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    device = engine.info.device
    cuda = device.startswith("cuda")
    labels = PhaseLabels(device)
    labels.install(engine.pipeline)
    try:
        run_once(engine, work, seed, None)
        activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
        with profile(activities=activities) as prof:
            with record_function(EDIT_LABEL):
                run_once(engine, work, seed, None)
            if cuda:
                torch.cuda.synchronize(device)
    finally:
        labels.uninstall()

    summary = summarise_events(list(prof.events()))
    out_dir.mkdir(parents=True, exist_ok=True)
    safe = name.replace("+", "_").replace("=", "-")
    table_path = out_dir / f"profile-{safe}.txt"
    averages = prof.key_averages()
    table_path.write_text(
        "kernels and ops by self device time\n"
        + averages.table(
            sort_by="self_device_time_total" if cuda else "self_cpu_time_total",
            row_limit=40,
            max_name_column_width=90,
        )
        + "\n\nops by CPU time\n"
        + averages.table(sort_by="cpu_time_total", row_limit=40, max_name_column_width=90)
    )
    trace_path = out_dir / f"trace-{safe}.json"
    prof.export_chrome_trace(str(trace_path))
    with trace_path.open("rb") as source, gzip.open(f"{trace_path}.gz", "wb", compresslevel=6) as target:
        target.write(source.read())
    trace_path.unlink()
    return summary | {"table": table_path.name, "trace": f"{trace_path.name}.gz"}


def summarise_events(events: list[Any]) -> dict[str, Any]:
    """GPU busy and idle time inside the edit label, per phase label, and the ten longest idle gaps."""
    from torch.autograd import DeviceType

    cpu_ranges: dict[str, list[tuple[float, float]]] = defaultdict(list)
    kernels: list[tuple[float, float]] = []
    for event in events:
        start, end = float(event.time_range.start), float(event.time_range.end)
        if event.device_type == DeviceType.CUDA:
            if end > start:
                kernels.append((start, end))
        elif event.name == EDIT_LABEL or event.name in LABELS:
            cpu_ranges[event.name].append((start, end))
    if not cpu_ranges.get(EDIT_LABEL) or not kernels:
        return {"error": "the profile holds no edit label or no device kernels"}
    edit_start, edit_end = cpu_ranges[EDIT_LABEL][0]
    inside = [(max(a, edit_start), min(b, edit_end)) for a, b in kernels if b > edit_start and a < edit_end]
    busy = merge(inside)
    gaps = [(end, start) for (_, end), (start, _) in itertools.pairwise(busy) if start > end]
    gaps = [(edit_start, busy[0][0]), *gaps, (busy[-1][1], edit_end)]

    def phase_at(moment: float) -> str:
        for label, ranges in cpu_ranges.items():
            if label != EDIT_LABEL and any(a <= moment <= b for a, b in ranges):
                return label
        return "other"

    idle_by_phase: dict[str, float] = defaultdict(float)
    for start, end in gaps:
        idle_by_phase[phase_at(start)] += (end - start) / 1000
    longest = sorted(gaps, key=lambda gap: gap[0] - gap[1])[:10]
    wall_ms = (edit_end - edit_start) / 1000
    busy_ms = sum(b - a for a, b in busy) / 1000
    return {
        "wall_ms": wall_ms,
        "gpu_busy_ms": busy_ms,
        "gpu_idle_ms": wall_ms - busy_ms,
        "gpu_idle_by_host_phase_ms": dict(sorted(idle_by_phase.items(), key=lambda item: -item[1])),
        "host_phase_ms": {
            label: sum(b - a for a, b in ranges) / 1000
            for label, ranges in cpu_ranges.items()
            if label in LABELS
        },
        "longest_gaps": [
            {"at_ms": (start - edit_start) / 1000, "ms": (end - start) / 1000, "host_phase": phase_at(start)}
            for start, end in longest
        ],
    }


def merge(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The union of intervals, sorted and non-overlapping."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged
