"""REANGLE_FUSE_LORAS=default: the default request's LoRAs baked into the base weights at load, and every
request still getting exactly its own LoRA weights (the residual adapters run on top of the bake).

The pure arithmetic is table-tested; the bake itself on real peft layers; the engine on the tiny pipeline,
whose baked and unbaked outputs are compared with each other as decoded float pictures."""

from __future__ import annotations

import contextlib
import math
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import torch
from torch import nn

from reangle.core.camera import CameraPose
from reangle.core.edit import ANGLES, LIGHTNING_4STEP, LIGHTNING_8STEP, EditPlan, EditRequest, LoraUse
from reangle.engine.base import plan_for
from reangle.engine.lora_bake import bake_default_loras, bake_loras, default_loras, residual_loras
from reangle.engine.qwen import QwenConfig, QwenEngine
from reangle.errors import EngineError
from reangle.settings import Settings
from tests.engine.tiny_support import IMAGES, SIZE, CountingBackend, loaded

#: Largest difference of decoded pixels (floats in [0, 1]) between baked and unbaked edits: observed up to
#: 1.0e-6 on the tiny model (float32), where a 0.1 % change of the angle LoRA's weight moves them by 1.2e-4.
BAKE_BOUND = 1e-5

# The residual adapters (pure) -------------------------------------------------------------------------------

BAKED = {LIGHTNING_4STEP: 1.0, ANGLES: 1.0}


def uses(*pairs: tuple[str, float]) -> tuple[LoraUse, ...]:
    return tuple(LoraUse(adapter=adapter, weight=weight) for adapter, weight in pairs)


@pytest.mark.parametrize(
    ("plan", "baked", "expected"),
    [
        pytest.param(uses((LIGHTNING_4STEP, 1.0), (ANGLES, 1.0)), BAKED, (), id="default request"),
        pytest.param(
            uses((LIGHTNING_4STEP, 1.0), (ANGLES, 1.5)), BAKED, uses((ANGLES, 0.5)), id="lora_scale=1.5"
        ),
        pytest.param(
            uses((LIGHTNING_4STEP, 1.0), (ANGLES, 0.0)), BAKED, uses((ANGLES, -1.0)), id="lora_scale=0"
        ),
        pytest.param(uses((LIGHTNING_4STEP, 1.0)), BAKED, uses((ANGLES, -1.0)), id="no pose"),
        pytest.param(
            uses((LIGHTNING_8STEP, 1.0), (ANGLES, 1.0)),
            BAKED,
            uses((LIGHTNING_8STEP, 1.0), (LIGHTNING_4STEP, -1.0)),
            id="regular",
        ),
        pytest.param(uses((ANGLES, 1.0)), BAKED, uses((LIGHTNING_4STEP, -1.0)), id="none"),
        pytest.param(uses(), BAKED, uses((LIGHTNING_4STEP, -1.0), (ANGLES, -1.0)), id="none without pose"),
        pytest.param(
            uses((LIGHTNING_4STEP, 1.0), (ANGLES, 0.0)),
            {},
            uses((LIGHTNING_4STEP, 1.0), (ANGLES, 0.0)),
            id="nothing baked: the plan as is",
        ),
        pytest.param(uses(), {}, (), id="nothing at all"),
        pytest.param(
            uses((LIGHTNING_4STEP, 1.0), (ANGLES, 1.0)),
            {LIGHTNING_4STEP: 1.0},
            uses((ANGLES, 1.0)),
            id="only lightning baked",
        ),
    ],
)
def test_residual_adapters(
    plan: tuple[LoraUse, ...], baked: dict[str, float], expected: tuple[LoraUse, ...]
) -> None:
    assert residual_loras(plan, baked) == expected


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        ({LIGHTNING_4STEP, LIGHTNING_8STEP, ANGLES}, {LIGHTNING_4STEP: 1.0, ANGLES: 1.0}),
        ({ANGLES}, {ANGLES: 1.0}),
        ({LIGHTNING_4STEP, LIGHTNING_8STEP}, {LIGHTNING_4STEP: 1.0}),
        ({LIGHTNING_8STEP}, {}),
        (set(), {}),
    ],
)
def test_the_default_request_loras_that_are_configured(
    configured: set[str], expected: dict[str, float]
) -> None:
    assert default_loras(configured) == expected


# The bake on real peft layers -------------------------------------------------------------------------------


class ThreeLinears(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(8, 6)
        self.second = nn.Linear(6, 4)
        self.untouched = nn.Linear(4, 4)


def with_adapters(dtype: torch.dtype = torch.float32, *, dora: bool = False, first: str = "a") -> nn.Module:
    """Adapter `first` (alpha/r = 2/4) on the first and second linears, `b` (rsLoRA: alpha/sqrt(r) =
    8/sqrt(2)) on the first only; random A and B."""
    from peft import LoraConfig, inject_adapter_in_model

    torch.manual_seed(0)
    model = ThreeLinears()
    configs = {
        first: LoraConfig(r=4, lora_alpha=2, target_modules=["first", "second"], use_dora=dora),
        "b": LoraConfig(r=2, lora_alpha=8, use_rslora=True, target_modules=["first"]),
    }
    with warnings.catch_warnings():  # peft warns on each adapter after the first; several are the point here
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        for name, config in configs.items():
            inject_adapter_in_model(replace(config, init_lora_weights=False), model, adapter_name=name)
    return model.to(dtype).eval()


def parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.named_parameters()}


def test_the_bake_adds_each_adapters_weighted_and_scaled_product() -> None:
    model = with_adapters()
    before = parameters(model)

    assert bake_loras(model, {"a": 1.0, "b": -0.5}) == 2

    after = parameters(model)

    def product(layer: str, adapter: str) -> torch.Tensor:
        up, down = before[f"{layer}.lora_B.{adapter}.weight"], before[f"{layer}.lora_A.{adapter}.weight"]
        return up.double() @ down.double()

    first = before["first.base_layer.weight"].double() + 2 / 4 * product("first", "a")
    first += -0.5 * 8 / math.sqrt(2) * product("first", "b")
    second = before["second.base_layer.weight"].double() + 2 / 4 * product("second", "a")
    torch.testing.assert_close(after["first.base_layer.weight"].double(), first, rtol=0, atol=1e-6)
    torch.testing.assert_close(after["second.base_layer.weight"].double(), second, rtol=0, atol=1e-6)
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == {"first.base_layer.weight", "second.base_layer.weight"}  # adapters and biases stay


def test_the_bake_equals_peft_own_delta_at_the_weights_set_adapters_gives() -> None:
    model = with_adapters()
    weights = {"a": 1.5, "b": -1.0}
    layer: Any = model.first
    deltas = []
    for adapter, weight in weights.items():
        layer.set_scale(adapter, weight)  # what diffusers' set_adapters does to each layer
        deltas.append(layer.get_delta_weight(adapter).detach())
    expected = layer.base_layer.weight.detach() + (deltas[0] + deltas[1])  # the deltas summed, added once
    bake_loras(model, weights)
    assert torch.equal(layer.base_layer.weight, expected)


def test_a_bf16_weight_is_rounded_once_from_the_float32_sum() -> None:
    model = with_adapters(torch.bfloat16)
    before = parameters(model)
    bake_loras(model, {"a": 1.0})
    up, down = before["second.lora_B.a.weight"].float(), before["second.lora_A.a.weight"].float()
    expected = (before["second.base_layer.weight"].float() + (up @ down) * 0.5).to(torch.bfloat16)
    rounded_twice = before["second.base_layer.weight"] + ((up @ down) * 0.5).to(torch.bfloat16)
    assert not torch.equal(expected, rounded_twice)  # so the check below can tell them apart
    assert model.second.base_layer.weight.dtype == torch.bfloat16
    assert torch.equal(model.second.base_layer.weight, expected)


def test_adapters_not_asked_for_are_not_baked() -> None:
    model = with_adapters()
    before = parameters(model)
    assert bake_loras(model, {"b": 1.0, "not loaded": 1.0}) == 1
    assert torch.equal(model.second.base_layer.weight, before["second.base_layer.weight"])
    assert bake_loras(model, {}) == 0


def test_an_adapter_that_is_not_plain_lora_is_refused() -> None:
    with pytest.raises(ValueError, match="adapter a is not a plain LoRA"):
        bake_loras(with_adapters(dora=True), {"a": 1.0})
    with pytest.raises(EngineError, match="REANGLE_FUSE_LORAS=default") as caught:
        bake_default_loras(with_adapters(dora=True, first=ANGLES), {ANGLES})
    assert caught.value.hint == "set REANGLE_FUSE_LORAS=off"


# The engine on the tiny pipeline ----------------------------------------------------------------------------

tiny = pytest.mark.tiny


@pytest.fixture(scope="module")
def plain(config: QwenConfig) -> QwenEngine:
    return loaded(config)


@pytest.fixture(scope="module")
def fused(config: QwenConfig) -> QwenEngine:
    return loaded(config, fuse_loras="default")


def plan(engine: QwenEngine, **request: Any) -> EditPlan:
    return plan_for(engine, EditRequest(**{"seed": 1, **SIZE, **request}), IMAGES)


@contextlib.contextmanager
def decoded_pictures(engine: QwenEngine) -> Iterator[list[torch.Tensor]]:
    """The decoded float pictures ([B, 3, H, W] in [0, 1]) of each pipeline call, before they become uint8."""
    processor = engine.pipeline.image_processor
    original = processor.postprocess
    pictures: list[torch.Tensor] = []

    def recording(image: Any, output_type: str = "pil", **kwargs: Any) -> Any:
        pictures.append(image.detach().clone())
        return original(image, output_type=output_type, **kwargs)

    processor.postprocess = recording
    try:
        yield pictures
    finally:
        del processor.postprocess


def decoded(engine: QwenEngine, edit_plan: EditPlan) -> torch.Tensor:
    with decoded_pictures(engine) as pictures:
        engine.edit(IMAGES, edit_plan)
    [picture] = pictures
    return picture


@contextlib.contextmanager
def lora_runs(engine: QwenEngine) -> Iterator[Counter[str]]:
    """Counts, per adapter, the forward calls of its `lora_A` linears in the transformer."""
    runs: Counter[str] = Counter()
    hooks = []
    for module in engine.pipeline.transformer.modules():
        for adapter, lora_a in getattr(module, "lora_A", {}).items():
            hooks.append(lora_a.register_forward_hook(lambda *_args, adapter=adapter: runs.update([adapter])))
    try:
        yield runs
    finally:
        for hook in hooks:
            hook.remove()


def lora_layer_weights(engine: QwenEngine) -> dict[str, torch.Tensor]:
    return {
        name: parameter.detach().clone()
        for name, parameter in engine.pipeline.transformer.named_parameters()
        if name.endswith(".base_layer.weight")
    }


def test_the_setting_is_auto_by_default_and_reaches_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    assert QwenEngine.from_settings(Settings()).config.fuse_loras == "auto"
    monkeypatch.setenv("REANGLE_FUSE_LORAS", "off")
    assert QwenEngine.from_settings(Settings()).config.fuse_loras == "off"
    monkeypatch.setenv("REANGLE_FUSE_LORAS", "default")
    assert QwenEngine.from_settings(Settings()).config.fuse_loras == "default"
    monkeypatch.setenv("REANGLE_FUSE_LORAS", "on")
    with pytest.raises(ValidationError, match="default"):
        Settings()


@tiny
def test_the_bake_adds_the_default_loras_to_their_layers_once(plain: QwenEngine, fused: QwenEngine) -> None:
    assert (plain.baked_loras, plain.baked_layers) == ({}, 0)
    assert fused.baked_loras == {LIGHTNING_4STEP: 1.0, ANGLES: 1.0}
    before = {name: p.detach() for name, p in plain.pipeline.transformer.named_parameters()}
    after = {name: p.detach() for name, p in fused.pipeline.transformer.named_parameters()}
    changed = sorted(name for name in before if not torch.equal(before[name], after[name]))
    assert len(changed) == fused.baked_layers == 12  # 6 linears in each of the 2 tiny blocks
    for name in changed:
        layer = plain.pipeline.transformer.get_submodule(name.removesuffix(".base_layer.weight"))
        delta = sum(
            layer.lora_B[adapter].weight.double() @ layer.lora_A[adapter].weight.double()
            for adapter in (LIGHTNING_4STEP, ANGLES)
        )  # the tiny LoRAs have alpha == rank: scaling 1
        torch.testing.assert_close(after[name].double(), before[name].double() + delta, rtol=0, atol=1e-6)


REQUESTS = [
    pytest.param({}, set(), id="default"),
    pytest.param({"lora_scale": 1.5}, {ANGLES}, id="lora_scale=1.5"),
    pytest.param({"lora_scale": 0.0}, {ANGLES}, id="lora_scale=0"),
    pytest.param({"pose": None, "prompt": "make the sky orange"}, {ANGLES}, id="instruction edit"),
    pytest.param({"acceleration": "regular"}, {LIGHTNING_8STEP, LIGHTNING_4STEP}, id="regular"),
    pytest.param({"acceleration": "none", "steps": 2}, {LIGHTNING_4STEP}, id="none"),
    pytest.param(
        {"pose": CameraPose(azimuth_deg=135, elevation_deg=30), "width": 96, "height": 64},
        set(),
        id="another pose and size",
    ),
]


@tiny
@pytest.mark.parametrize(("request_fields", "residual_adapters"), REQUESTS)
def test_a_baked_edit_equals_the_unbaked_one_running_only_the_residual_adapters(
    plain: QwenEngine, fused: QwenEngine, request_fields: dict[str, Any], residual_adapters: set[str]
) -> None:
    with lora_runs(plain) as unbaked_runs:
        expected = decoded(plain, plan(plain, **request_fields))
    with lora_runs(fused) as baked_runs:
        actual = decoded(fused, plan(fused, **request_fields))
    assert (actual - expected).abs().max().item() <= BAKE_BOUND
    assert set(baked_runs) == residual_adapters
    assert set(unbaked_runs) == {lora.adapter for lora in plan(plain, **request_fields).loras}


@tiny
def test_edit_views_runs_each_plans_residual_adapters(plain: QwenEngine, fused: QwenEngine) -> None:
    plans = [plan(plain, pose=CameraPose(azimuth_deg=azimuth)) for azimuth in (0, 90)]
    with lora_runs(fused) as runs, decoded_pictures(fused) as baked:
        fused.edit_views(IMAGES, plans)
    assert runs == {}
    plans.append(plan(plain, pose=CameraPose(azimuth_deg=180), lora_scale=1.5))
    with lora_runs(fused) as runs, decoded_pictures(fused) as baked:
        fused.edit_views(IMAGES, plans)
    with decoded_pictures(plain) as unbaked:
        plain.edit_views(IMAGES, plans)
    assert set(runs) == {ANGLES}
    assert len(baked) == len(unbaked) == 3
    for actual, expected in zip(baked, unbaked, strict=True):
        assert (actual - expected).abs().max().item() <= BAKE_BOUND


@tiny
@pytest.mark.parametrize(
    ("adapters", "baked", "request_fields"),
    [
        pytest.param((ANGLES,), {ANGLES: 1.0}, {"acceleration": "none", "steps": 2}, id="angles only"),
        pytest.param(
            (LIGHTNING_4STEP, LIGHTNING_8STEP), {LIGHTNING_4STEP: 1.0}, {"pose": None}, id="lightning only"
        ),
    ],
)
def test_only_the_configured_default_loras_are_baked(
    config: QwenConfig, adapters: tuple[str, ...], baked: dict[str, float], request_fields: dict[str, Any]
) -> None:
    loras = {adapter: config.loras[adapter] for adapter in adapters}
    unbaked, engine = loaded(config, loras=loras), loaded(config, loras=loras, fuse_loras="default")
    assert engine.baked_loras == baked
    assert engine.baked_layers == 12
    with lora_runs(engine) as runs:
        actual = decoded(engine, plan(engine, **request_fields))  # the default request of this configuration
    assert runs == {}
    assert (actual - decoded(unbaked, plan(unbaked, **request_fields))).abs().max().item() <= BAKE_BOUND


@tiny
def test_with_no_default_lora_configured_nothing_is_baked(config: QwenConfig, plain: QwenEngine) -> None:
    engine = loaded(config, loras={LIGHTNING_8STEP: config.loras[LIGHTNING_8STEP]}, fuse_loras="default")
    assert (engine.baked_loras, engine.baked_layers) == ({}, 0)
    baked, unbaked = lora_layer_weights(engine), lora_layer_weights(plain)
    assert all(torch.equal(baked[name], unbaked[name]) for name in unbaked)


@tiny
def test_loading_again_and_editing_do_not_bake_again(fused: QwenEngine) -> None:
    weights = lora_layer_weights(fused)
    fused.load()
    decoded(fused, plan(fused))
    decoded(fused, plan(fused, lora_scale=1.5))
    again = lora_layer_weights(fused)
    assert all(torch.equal(weights[name], again[name]) for name in weights)


def psnr(first: torch.Tensor, second: torch.Tensor) -> float:
    mse = float(((first.double() - second.double()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


@tiny
def test_fp8_quantizes_the_baked_weights(config: QwenConfig, plain: QwenEngine) -> None:
    """Observed 58-60 dB against the unquantized, unbaked edits (FP8 without the bake: 59-61 dB); FP8 weights
    without the LoRAs, which quantizing before baking would give the default request, are 30 dB off."""
    from reangle.engine.fp8 import Fp8Linear

    engine = loaded(config, fuse_loras="default", quantize="fp8")
    assert isinstance(engine.pipeline.transformer.transformer_blocks[0].attn.to_q.base_layer, Fp8Linear)
    assert engine.baked_loras == {LIGHTNING_4STEP: 1.0, ANGLES: 1.0}
    for request_fields, residual_adapters in (({}, set()), ({"lora_scale": 1.5}, {ANGLES})):
        with lora_runs(engine) as runs:
            quantized = decoded(engine, plan(engine, **request_fields))
        assert set(runs) == residual_adapters
        assert psnr(quantized, decoded(plain, plan(plain, **request_fields))) >= 50, request_fields


@pytest.fixture
def fresh_dynamo() -> Iterator[None]:
    """Compiled code lives in dynamo's cache, shared by engines: start and end without any."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@tiny
@pytest.mark.usefixtures("fresh_dynamo")
def test_compiled_blocks_on_baked_weights(config: QwenConfig, plain: QwenEngine) -> None:
    backend = CountingBackend()
    # a small target area makes the load's warm-up edit small (80 x 80, still not SIZE, which the edits give)
    engine = loaded(
        config, fuse_loras="default", compile="blocks", compile_backend=backend, target_area=80 * 80
    )
    assert engine.warmup_s is not None
    assert len(backend.graphs) == 1
    with lora_runs(engine) as runs:
        actual = decoded(engine, plan(engine))
    assert runs == {}
    assert len(backend.graphs) == 1  # the warm-up compiled the default request's graph, without LoRA
    assert (actual - decoded(plain, plan(plain))).abs().max().item() <= BAKE_BOUND
    for request_fields in ({"lora_scale": 1.5}, {"pose": None}):
        actual = decoded(engine, plan(engine, **request_fields))
        assert (actual - decoded(plain, plan(plain, **request_fields))).abs().max().item() <= BAKE_BOUND
    assert len(backend.graphs) == 2  # the angle LoRA alone, at any weight
