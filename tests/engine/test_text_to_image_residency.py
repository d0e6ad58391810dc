"""Which transformer is on the GPU: the `auto` rule, and the moves of each mode, on stand-in pipelines."""

from __future__ import annotations

from typing import Any

import pytest

from reangle.engine.text_to_image_residency import (
    HEADROOM_BYTES,
    PARK_DEVICE,
    TransformerPlacement,
    module_bytes,
    resolve_residency,
)
from reangle.errors import EngineError

GB = 10**9
#: The real transformer in bf16: 20 430 401 088 parameters.
TRANSFORMER = 40_860_802_176


@pytest.mark.parametrize(
    ("setting", "cpu_offload", "free", "expected"),
    [
        ("auto", False, None, "both"),  # a CPU: nothing to move
        ("auto", False, 141 * GB - 58 * GB, "both"),  # H200 with the edit model loaded
        ("auto", False, 80 * GB - 58 * GB, "swap"),  # H100
        ("auto", False, TRANSFORMER + HEADROOM_BYTES, "both"),
        ("auto", False, TRANSFORMER + HEADROOM_BYTES - 1, "swap"),
        ("both", False, 1 * GB, "both"),
        ("swap", False, None, "swap"),
        ("auto", True, 141 * GB, "offload"),
        ("both", True, 141 * GB, "offload"),
    ],
)
def test_resolve_residency(setting: Any, cpu_offload: bool, free: int | None, expected: str) -> None:
    mode = resolve_residency(setting, cpu_offload=cpu_offload, transformer_bytes=TRANSFORMER, free_bytes=free)
    assert mode == expected


def test_an_unknown_residency_names_the_setting() -> None:
    with pytest.raises(EngineError, match="REANGLE_TEXT_TO_IMAGE_RESIDENCY"):
        resolve_residency("always", cpu_offload=False, transformer_bytes=1, free_bytes=None)  # type: ignore[arg-type]


def test_module_bytes_counts_parameters_and_buffers() -> None:
    import torch

    layer = torch.nn.Linear(4, 8, dtype=torch.bfloat16)
    layer.register_buffer("scale", torch.zeros(8, dtype=torch.float32))
    assert module_bytes(layer) == (4 * 8 + 8) * 2 + 8 * 4


class Pipe:
    def __init__(self, name: str) -> None:
        self.transformer = name
        self.offloads: list[str] = []

    def enable_model_cpu_offload(self, device: str) -> None:
        self.offloads.append(device)


def placement(mode: Any) -> tuple[TransformerPlacement, list[tuple[str, str]], Pipe, Pipe]:
    moves: list[tuple[str, str]] = []
    edit, generate = Pipe("edit-transformer"), Pipe("generate-transformer")
    placed = TransformerPlacement(mode, "cuda", move=lambda module, device: moves.append((module, device)))
    placed.add("edit", edit, resident=True)
    return placed, moves, edit, generate


def test_swap_parks_the_other_transformer_first_and_moves_only_when_the_kind_changes() -> None:
    placed, moves, _edit, generate = placement("swap")
    placed.park("edit")  # before the text-to-image transformer is read onto the device
    placed.add("generate", generate, resident=True)
    assert moves == [("edit-transformer", PARK_DEVICE)]
    moves.clear()
    assert placed.use("generate") == 0
    assert placed.use("edit") > 0
    assert placed.use("edit") == 0
    assert moves == [("generate-transformer", PARK_DEVICE), ("edit-transformer", "cuda")]


def test_both_never_moves_and_offload_hands_the_hooks_to_the_pipeline_about_to_run() -> None:
    placed, moves, _edit, generate = placement("both")
    placed.add("generate", generate, resident=True)
    placed.park("edit")
    assert (placed.use("generate"), placed.use("edit"), moves) == (0, 0, [])

    placed, moves, edit, generate = placement("offload")
    placed.add("generate", generate, resident=False)
    placed.use("generate")
    placed.use("generate")
    placed.use("edit")
    assert (generate.offloads, edit.offloads, moves) == (["cuda"], ["cuda"], [])


def test_a_failed_move_is_retried_whole() -> None:
    placed, moves, _edit, generate = placement("swap")
    placed.add("generate", generate, resident=False)
    failing = [True]

    def move(module: str, device: str) -> None:
        if failing.pop(0) if failing else False:
            raise RuntimeError("CUDA out of memory")
        moves.append((module, device))

    placed._move = move
    with pytest.raises(RuntimeError):
        placed.use("generate")
    assert placed.current is None
    placed.use("generate")
    assert moves == [("edit-transformer", PARK_DEVICE), ("generate-transformer", "cuda")]
