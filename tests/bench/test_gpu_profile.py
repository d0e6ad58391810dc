"""The GPU-idle arithmetic of bench/gpu_profile.py, on fake profiler events (the real profile runs in
test_gpu_edit.py's tiny sweep, which has no GPU kernels)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from torch.autograd import DeviceType

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from gpu_profile import EDIT_LABEL, merge, summarise_events


@dataclass
class FakeRange:
    start: float
    end: float


@dataclass
class FakeEvent:
    """What summarise_events reads of torch's FunctionEvent: a name, a device type, a range in µs."""

    name: str
    device_type: DeviceType
    time_range: FakeRange


def cpu(name: str, start: float, end: float) -> FakeEvent:
    return FakeEvent(name, DeviceType.CPU, FakeRange(start, end))


def kernel(start: float, end: float) -> FakeEvent:
    return FakeEvent("gemm", DeviceType.CUDA, FakeRange(start, end))


def test_merge_joins_overlapping_and_touching_intervals() -> None:
    assert merge([(5, 7), (0, 2), (1, 3), (3, 4), (9, 10)]) == [(0, 4), (5, 7), (9, 10)]
    assert merge([]) == []


def test_idle_time_is_the_edit_minus_the_union_of_kernels_charged_to_the_host_phase() -> None:
    events = [
        cpu(EDIT_LABEL, 0, 10_000),
        cpu("text_encode", 0, 3_000),
        cpu("vae_decode", 8_000, 10_000),
        cpu("aten::mm", 100, 200),  # an op, not a phase label
        kernel(1_000, 2_000),
        kernel(1_500, 2_500),  # overlaps the first: counted once
        kernel(4_000, 8_500),
        kernel(9_000, 9_500),
        kernel(20_000, 21_000),  # after the edit: ignored
    ]

    summary = summarise_events(events)

    assert summary["wall_ms"] == 10
    assert summary["gpu_busy_ms"] == pytest.approx(1.5 + 4.5 + 0.5)
    assert summary["gpu_idle_ms"] == pytest.approx(3.5)
    # idle 0-1 and 2.5-4 ms begin while the host encodes text; 8.5-9 and 9.5-10 ms while it decodes
    assert summary["gpu_idle_by_host_phase_ms"] == pytest.approx({"text_encode": 2.5, "vae_decode": 1.0})
    assert summary["host_phase_ms"] == {"text_encode": 3, "vae_decode": 2}
    assert [gap["ms"] for gap in summary["longest_gaps"]] == [1.5, 1.0, 0.5, 0.5]
    assert summary["longest_gaps"][0] == {"at_ms": 2.5, "ms": 1.5, "host_phase": "text_encode"}


def test_a_profile_without_kernels_says_so() -> None:
    summary = summarise_events([cpu(EDIT_LABEL, 0, 10)])
    assert summary == {"error": "the profile holds no edit label or no device kernels"}
