"""FP8 (e4m3) weights and activations for the linear layers of the transformer blocks, on `torch._scaled_mm`.

This is the recipe of torchao's float8 dynamic-activation / float8-weight config with per-row scales (torchao
itself does not build against the pinned torch): every weight row and every token gets its own float32 scale,
and the matmul runs in FP8 and accumulates in float32. Storing FP8 weights and upcasting them before a BF16
matmul would be slower than plain BF16, so the matmul itself has to run in FP8.

This module imports torch at the top: import it lazily, only where the transformer gets quantized.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

FP8_DTYPE = torch.float8_e4m3fn
E4M3_MAX = float(torch.finfo(FP8_DTYPE).max)  # 448
#: Rows whose largest magnitude is below this are scaled as if it were this, so all-zero rows divide safely.
_MIN_AMAX = 1e-12
#: The CUDA kernel needs the inner (in_features) and outer (out_features) sizes to be multiples of 16.
_ALIGNMENT = 16
#: Modulation linears see one token per sample, where FP8 only adds quantization work; SGLang keeps
#: `img_mlp.net.2` (the image MLP's output projection) in BF16 for quality.
_KEPT_BY_DEFAULT = re.compile(r"(^|\.)(img_mod|txt_mod)\.|(^|\.)img_mlp\.net\.2$")


def to_float8_saturated(values: torch.Tensor) -> torch.Tensor:
    """Cast to e4m3, clamping to ±448 first: e4m3fn has no infinity, and some casts turn overflow into NaN."""
    return values.clamp(-E4M3_MAX, E4M3_MAX).to(FP8_DTYPE)


def quantize_rows(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """e4m3 copy of a 2-D tensor, scaled per row, and its float32 scales [rows, 1]: values ≈ fp8 * scale."""
    amax = torch.linalg.vector_norm(values, ord=float("inf"), dim=-1, keepdim=True, dtype=torch.float32)
    scale = amax.clamp(min=_MIN_AMAX) / E4M3_MAX
    return to_float8_saturated(values / scale), scale  # a float32 division, as `scale` is float32


def fits_fp8(linear: nn.Linear) -> bool:
    """Whether the FP8 kernel accepts this layer's shape."""
    return linear.in_features % _ALIGNMENT == 0 and linear.out_features % _ALIGNMENT == 0


class Fp8Linear(nn.Module):
    """A linear layer with an e4m3 weight (one scale per output row) whose input is quantized per token.

    The weight and its scale are buffers, not parameters, so diffusers' `ModelMixin.dtype` (its first floating
    parameter) still reports the compute dtype. Output dtype is the input dtype.
    """

    weight_fp8: torch.Tensor
    weight_scale: torch.Tensor
    bias: torch.Tensor | None

    def __init__(
        self, weight_fp8: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None
    ) -> None:
        super().__init__()
        self.out_features, self.in_features = weight_fp8.shape
        # [out, in] contiguous, so that its transpose is the column-major operand the kernel wants
        self.register_buffer("weight_fp8", weight_fp8.contiguous())
        self.register_buffer("weight_scale", weight_scale.reshape(1, self.out_features).contiguous())
        self.register_buffer("bias", bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Fp8Linear:
        if not fits_fp8(linear):
            raise ValueError(
                f"FP8 needs in and out features that are multiples of {_ALIGNMENT}, "
                f"got {linear.in_features} -> {linear.out_features}"
            )
        with torch.no_grad():
            weight_fp8, weight_scale = quantize_rows(linear.weight.detach())
        bias = None if linear.bias is None else linear.bias.detach()
        return cls(weight_fp8, weight_scale, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # row-major, as the CUDA kernel wants; elementwise ops would keep an odd layout of x
        rows = x.reshape(-1, self.in_features).contiguous()
        x_fp8, x_scale = quantize_rows(rows)
        # The CUDA kernel takes the bias only for 16-bit outputs; float32 outputs get it added afterwards.
        bias = None if self.bias is None else self.bias.to(x.dtype)
        fused_bias = bias if x.dtype in (torch.bfloat16, torch.float16) else None
        out = torch._scaled_mm(
            x_fp8,
            self.weight_fp8.t(),
            scale_a=x_scale,
            scale_b=self.weight_scale,
            bias=fused_bias,
            out_dtype=x.dtype,
            use_fast_accum=True,  # torchao's inference default; the rowwise kernel is much slower without
        )
        if bias is not None and fused_bias is None:
            out = out + bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
        )


@dataclass(frozen=True)
class Fp8Report:
    """What `quantize_fp8` did: layers swapped and kept, and the bytes of the swapped weights before and after
    (after = e4m3 weights plus their float32 scales; biases are unchanged and not counted)."""

    quantized: int
    kept: int
    bytes_before: int
    bytes_after: int


def default_keep(name: str) -> bool:
    """Layers left in BF16 unless told otherwise: `img_mod.*`, `txt_mod.*` and `img_mlp.net.2`."""
    return _KEPT_BY_DEFAULT.search(name) is not None


def quantize_fp8(transformer: Any, *, keep: Callable[[str], bool] = default_keep) -> Fp8Report:
    """Swap, in place, the linear layers inside `transformer.transformer_blocks` for `Fp8Linear`.

    `keep` gets each layer's name in the transformer (`transformer_blocks.3.attn.to_q`, never with peft's
    `.base_layer`) and says which to leave as they are; layers whose shape the kernel cannot take are kept
    too. A layer wrapped by a peft LoRA stays wrapped: only its `base_layer` is swapped, so adapters keep
    working. LoRAs must therefore be loaded (and fused, if at all) before quantizing. Swapping one layer at a
    time frees each high-precision weight before the next is quantized, so peak memory grows by one layer.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    blocks: nn.Module = transformer.transformer_blocks
    modules = dict(blocks.named_modules(prefix="transformer_blocks"))
    tuners = {name for name, module in modules.items() if isinstance(module, BaseTunerLayer)}
    # names only: holding the modules themselves would keep every swapped weight alive until the end
    targets = [name for name, module in modules.items() if isinstance(module, nn.Linear)]
    del modules

    quantized = kept = bytes_before = bytes_after = 0
    for name in targets:
        if _is_adapter_layer(name, tuners):
            continue
        parent_name, _, attribute = name.rpartition(".")
        parent = transformer.get_submodule(parent_name)
        linear = getattr(parent, attribute)
        if keep(name.removesuffix(".base_layer")) or not fits_fp8(linear):
            kept += 1
            continue
        fp8 = Fp8Linear.from_linear(linear)
        bytes_before += linear.weight.numel() * linear.weight.element_size()
        bytes_after += fp8.weight_fp8.numel() * fp8.weight_fp8.element_size()
        bytes_after += fp8.weight_scale.numel() * fp8.weight_scale.element_size()
        setattr(parent, attribute, fp8)
        del linear
        quantized += 1
    return Fp8Report(quantized=quantized, kept=kept, bytes_before=bytes_before, bytes_after=bytes_after)


def _is_adapter_layer(name: str, tuners: set[str]) -> bool:
    """Whether `name` is one of a peft layer's adapter linears (`<layer>.lora_A.<adapter>`)."""
    parts = name.split(".")
    # the base layer is a direct child of its peft layer; adapter linears sit deeper, inside ModuleDicts
    return any(".".join(parts[:end]) in tuners for end in range(1, len(parts) - 1))
