"""Which transformer is on the GPU when the edit and the text-to-image pipelines share one.

Both pipelines share the text encoder and the VAE; each has its own transformer of 20.43 B parameters
(38.05 GiB in bf16, plus its LoRA adapters). The edit engine measured 55.7 GiB of weights and a 59.9 GiB
peak at 1 MP (docs/benchmarks.md 1.9); the text-to-image transformer with its two Lightning LoRAs adds
39.6 GiB. So:

- `both`: the two transformers stay on the GPU, about 95 GiB of weights and a ~100 GiB peak: an H200 (139 GiB
  usable) holds them, an 80 GB H100 (74.5 GiB usable) does not, even with FP8 (which leaves the modulation
  layers in bf16: ~74 GiB of weights). Switching between an edit and a generation costs nothing.
- `swap`: one transformer on the GPU at a time, the other parked in host memory (~40 GiB of RAM). The first
  job of the other kind moves ~40 GiB out and ~40 GiB in over PCIe: a few seconds (3 s at 25 GB/s each way,
  8 s at 10 GB/s; to be measured); then jobs of that kind pay nothing until the kind changes. The GPU peak
  stays the single-model one.
- `auto` (the default): `both` when the GPU's free memory, once the edit model is loaded, holds another
  transformer the size of the edit one plus `HEADROOM_BYTES` for activations; `swap` otherwise. On a CPU
  there is nothing to move: `both`.
- With REANGLE_CPU_OFFLOAD every component moves to the GPU only while it runs anyway (`offload`); the
  pipeline about to run takes over the offload hooks of the shared text encoder and VAE.

torch is imported inside the functions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

from reangle.errors import EngineError

RESIDENCY_SETTING = "REANGLE_TEXT_TO_IMAGE_RESIDENCY"
Residency = Literal["auto", "both", "swap"]
ResidencyMode = Literal["both", "swap", "offload"]
#: What a pipeline is for: the one loaded first (edits) or the text-to-image one.
Kind = Literal["edit", "generate"]
#: GPU memory `auto` keeps free beside both transformers: activations of a 2K generation (16k image tokens),
#: the VAE decode (tiled above REANGLE_VAE_TILE_AREA) and the allocator's slack.
HEADROOM_BYTES = 12 * 1024**3
PARK_DEVICE = "cpu"


def module_bytes(module: Any) -> int:
    """Bytes of a module's parameters and buffers (FP8 weights count one byte an element)."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(int(tensor.numel()) * int(tensor.element_size()) for tensor in tensors)


def free_device_bytes(device: str) -> int | None:
    """Free memory of a CUDA device, None for a device without its own memory to manage (a CPU)."""
    import torch

    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    free, _total = torch.cuda.mem_get_info(torch.device(device))
    return int(free)


def resolve_residency(
    setting: Residency, *, cpu_offload: bool, transformer_bytes: int, free_bytes: int | None
) -> ResidencyMode:
    """What `setting` means on this device; `free_bytes` None is a device with no memory of its own."""
    if cpu_offload:
        return "offload"
    if setting not in ("auto", "both", "swap"):
        raise EngineError(
            f"{RESIDENCY_SETTING} must be auto, both or swap, not {setting!r}",
            hint=f"set {RESIDENCY_SETTING}",
        )
    if setting != "auto":
        return setting
    if free_bytes is None:
        return "both"
    return "both" if free_bytes >= transformer_bytes + HEADROOM_BYTES else "swap"


def move_module(module: Any, device: str) -> None:
    module.to(device)


class TransformerPlacement:
    """Keeps the transformer of the pipeline about to run on the device, in the resolved mode.

    Not thread-safe: the engine calls it under its one-job-at-a-time lock.
    """

    def __init__(
        self, mode: ResidencyMode, device: str, *, move: Callable[[Any, str], None] = move_module
    ) -> None:
        self.mode = mode
        self.device = device
        self._move = move
        self._pipes: dict[Kind, Any] = {}
        #: The kind whose transformer (or offload hooks) the device holds; None while unknown.
        self.current: Kind | None = None

    def add(self, kind: Kind, pipe: Any, *, resident: bool) -> None:
        """Start tracking `pipe`; `resident` says its transformer (or its offload hooks) is in place now."""
        self._pipes[kind] = pipe
        if resident:
            self.current = kind

    def use(self, kind: Kind) -> float:
        """Put `kind`'s transformer in place; returns the seconds spent moving weights (0 when none moved)."""
        if self.mode == "both" or self.current == kind or kind not in self._pipes:
            return 0.0
        started = time.perf_counter()
        self.current = None  # unknown until the move is complete: a failed move is retried whole
        if self.mode == "offload":
            self._pipes[kind].enable_model_cpu_offload(device=self.device)
        else:
            for other, pipe in self._pipes.items():
                if other != kind:
                    self._move(pipe.transformer, PARK_DEVICE)
            _empty_device_cache(self.device)
            self._move(self._pipes[kind].transformer, self.device)
        self.current = kind
        return time.perf_counter() - started

    def park(self, kind: Kind) -> None:
        """Move `kind`'s transformer off the device (swap mode), e.g. before the other one is loaded."""
        if self.mode == "swap" and kind in self._pipes:
            self._move(self._pipes[kind].transformer, PARK_DEVICE)
            _empty_device_cache(self.device)
            if self.current == kind:
                self.current = None


def _empty_device_cache(device: str) -> None:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()
