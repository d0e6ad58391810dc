"""Bake the default request's LoRAs into the transformer's base weights (REANGLE_FUSE_LORAS=default).

The default request then runs no LoRA op at all; every other request runs only what differs from the bake
(`residual_loras`), so each request still gets exactly its own LoRA weights. peft's own `merge` is not used:
peft skips every adapter of a merged layer in forward, and unmerging subtracts in the weight dtype (lossy).

torch is imported inside `bake_loras` only.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from reangle.core.edit import EditRequest, LoraUse, SizeLimits, plan_edit
from reangle.errors import EngineError

FUSE_SETTING = "REANGLE_FUSE_LORAS"


def default_loras(configured: Collection[str]) -> dict[str, float]:
    """Adapter -> weight of the default request (`EditRequest()`), for the configured adapters only."""
    plan = plan_edit(EditRequest(), [(1024, 1024)], limits=SizeLimits(), target_area=1024 * 1024)
    return {lora.adapter: lora.weight for lora in plan.loras if lora.adapter in configured}


def residual_loras(plan: Sequence[LoraUse], baked: Mapping[str, float]) -> tuple[LoraUse, ...]:
    """The adapters to run for `plan` on weights holding `baked`: each at its plan weight (0 if absent) minus
    its baked weight (0 if absent). A baked adapter left at 0 does not run; one that is not baked keeps its
    plan weight, even 0, so with nothing baked this is the plan and REANGLE_FUSE_LORAS=off changes nothing."""
    wanted = {lora.adapter: lora.weight for lora in plan}
    residual = []
    for adapter in [*wanted, *(name for name in baked if name not in wanted)]:
        weight = wanted.get(adapter, 0.0) - baked.get(adapter, 0.0)
        if weight != 0 or adapter not in baked:
            residual.append(LoraUse(adapter=adapter, weight=weight))
    return tuple(residual)


def bake_default_loras(transformer: Any, configured: Collection[str]) -> tuple[dict[str, float], int]:
    """Bake `default_loras(configured)` into `transformer`; returns what was baked and the layers changed."""
    weights = default_loras(configured)
    try:
        return weights, bake_loras(transformer, weights)
    except Exception as exc:
        raise EngineError(
            f"cannot bake the LoRAs into the weights ({FUSE_SETTING}=default): {type(exc).__name__}: {exc}",
            hint=f"set {FUSE_SETTING}=off",
        ) from exc


def bake_loras(model: Any, weights: Mapping[str, float]) -> int:
    """Add `sum_a weights[a] * scaling_a * B_a @ A_a` to the base weight of each LoRA layer of `model` that
    holds any of these adapters, computed in float32 and rounded to the weight's dtype once. The adapters stay
    loaded. Returns the number of layers changed."""
    import torch
    from peft.tuners.lora import LoraLayer

    changed = 0
    with torch.no_grad():
        for name, layer in model.named_modules():
            if not isinstance(layer, LoraLayer):
                continue
            adapters = [adapter for adapter in weights if adapter in layer.lora_A]
            if not adapters:
                continue
            weight = layer.get_base_layer().weight
            delta = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
            for adapter in adapters:
                _check_plain_lora(name, layer, adapter)
                down = layer.lora_A[adapter].weight.to(device=weight.device, dtype=torch.float32)
                up = layer.lora_B[adapter].weight.to(device=weight.device, dtype=torch.float32)
                delta += (up @ down) * _scaling(layer, adapter, weights[adapter])
            weight.copy_(delta.add_(weight))  # the float32 sum, rounded once by copy_
            changed += 1
    return changed


def _scaling(layer: Any, adapter: str, weight: float) -> float:
    """peft's `set_scale(adapter, weight)`, in its order of operations: weight * alpha / r (or sqrt(r))."""
    rank = layer.r[adapter]
    if layer.use_rslora.get(adapter, False):
        return float(weight * layer.lora_alpha[adapter] / math.sqrt(rank))
    return float(weight * layer.lora_alpha[adapter] / rank)


def _check_plain_lora(name: str, layer: Any, adapter: str) -> None:
    """Only plain LoRA on a linear layer's weight is `scaling * B @ A`; DoRA and friends are not."""
    import torch

    if (
        adapter in getattr(layer, "lora_variant", {})
        or getattr(layer, "lora_bias", {}).get(adapter, False)
        or getattr(layer, "fan_in_fan_out", False)
        or not isinstance(layer.get_base_layer(), torch.nn.Linear)
    ):
        raise ValueError(f"{name}: adapter {adapter} is not a plain LoRA on a linear layer")
