"""The qwen engine's speed options on the tiny pipeline (CPU): attention backend, regional compile, FP8, and
the on-device output conversion. Outputs are compared with each other, never with stored values."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from reangle.core.camera import CameraPose
from reangle.core.edit import EditRequest
from reangle.engine.acceleration import measured_fast_gpu, resolve_speed_settings
from reangle.engine.base import plan_for
from reangle.engine.qwen import QwenConfig, QwenEngine
from reangle.errors import EngineError
from reangle.settings import Settings
from tests.conftest import make_image
from tests.engine.tiny_support import IMAGES, SIZE, CountingBackend, loaded

pytestmark = pytest.mark.tiny


@pytest.fixture(scope="module")
def eager(config: QwenConfig) -> QwenEngine:
    return loaded(config)


@pytest.fixture(autouse=True)
def _fresh_compiler_state() -> Iterator[None]:
    """Compiled code lives in dynamo's cache (per code object, shared by engines) and the active attention
    backend is a diffusers global: each test starts and ends with neither."""
    import torch
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
    _AttentionBackendRegistry.set_active_backend(AttentionBackendName.NATIVE)


def edit(engine: QwenEngine, images: list[Image.Image] = IMAGES, **request: Any) -> Image.Image:
    plan = plan_for(engine, EditRequest(**{"seed": 1, **SIZE, **request}), images)
    return engine.edit(images, plan).images[0]


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64)


#: Enough denoising steps to run the compiled blocks again after their first call, for the tests that count
#: graphs (the count does not depend on the number of steps).
FEW_STEPS = 2


def psnr(first: Image.Image, second: Image.Image) -> float:
    mse = float(np.mean((pixels(first) - pixels(second)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


# Settings -------------------------------------------------------------------------------------------------


def test_the_defaults_and_the_settings_reach_the_engine(monkeypatch):  # type: ignore[no-untyped-def]
    defaults = QwenEngine.from_settings(Settings()).config
    assert (defaults.attention_backend, defaults.compile, defaults.quantize) == ("native", "auto", "none")
    monkeypatch.setenv("REANGLE_ATTENTION_BACKEND", "_native_cudnn")
    monkeypatch.setenv("REANGLE_COMPILE", "blocks")
    monkeypatch.setenv("REANGLE_QUANTIZE", "fp8")
    chosen = QwenEngine.from_settings(Settings()).config
    assert (chosen.attention_backend, chosen.compile, chosen.quantize) == ("_native_cudnn", "blocks", "fp8")
    assert chosen.compile_backend == "inductor"


@pytest.mark.parametrize(("variable", "value"), [("REANGLE_COMPILE", "on"), ("REANGLE_QUANTIZE", "int8")])
def test_an_unknown_compile_or_quantize_value_is_refused_with_the_choices(monkeypatch, variable, value):  # type: ignore[no-untyped-def]
    from pydantic import ValidationError

    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=r"blocks|fp8"):
        Settings()


# auto: the measured speed options on the GPUs they were measured on -----------------------------------------


@pytest.mark.parametrize(
    ("fast_gpu", "cpu_offload", "expected"),
    [
        (True, False, ("blocks", "default")),
        (True, True, ("off", "off")),
        (False, False, ("off", "off")),
    ],
)
def test_auto_compiles_and_bakes_only_on_a_measured_gpu_holding_the_whole_model(
    fast_gpu: bool, cpu_offload: bool, expected: tuple[str, str]
) -> None:
    assert resolve_speed_settings("auto", "auto", fast_gpu=fast_gpu, cpu_offload=cpu_offload) == expected
    # a setting given outright is kept, whatever the GPU
    assert resolve_speed_settings("off", "default", fast_gpu=fast_gpu, cpu_offload=cpu_offload) == (
        "off",
        "default",
    )
    assert resolve_speed_settings("blocks", "off", fast_gpu=fast_gpu, cpu_offload=cpu_offload) == (
        "blocks",
        "off",
    )


def test_a_cpu_is_not_a_measured_gpu() -> None:
    assert measured_fast_gpu("cpu") is False


def test_auto_on_this_cpu_loads_the_baseline(config):  # type: ignore[no-untyped-def]
    engine = loaded(config, compile="auto", fuse_loras="auto")
    assert (engine.info.options["compile"], engine.info.options["fuse_loras"]) == ("off", "off")
    assert (engine.warmup_s, engine.baked_loras, engine.info.notes) == (None, {}, ())


@pytest.fixture
def measured_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake of the GPU check (its CPU answer is tested above): this machine counts as an H100 or H200."""
    monkeypatch.setattr("reangle.engine.qwen.measured_fast_gpu", lambda _device: True)


@pytest.mark.usefixtures("measured_gpu")
def test_auto_on_a_measured_gpu_bakes_the_loras_and_compiles_the_blocks(config):  # type: ignore[no-untyped-def]
    backend = CountingBackend()
    engine = loaded(config, compile="auto", fuse_loras="auto", compile_backend=backend)
    assert (engine.info.options["compile"], engine.info.options["fuse_loras"]) == ("blocks", "default")
    assert engine.baked_layers > 0
    assert engine.warmup_s is not None
    assert len(backend.graphs) == 1
    assert engine.info.notes == ()


@pytest.mark.usefixtures("measured_gpu")
def test_auto_falls_back_to_eager_blocks_with_a_note_when_compiling_fails(config, eager):  # type: ignore[no-untyped-def]
    def broken_backend(_graph: Any, _inputs: Any) -> Any:
        raise RuntimeError("no compiler here")

    engine = loaded(config, compile="auto", compile_backend=broken_backend)
    assert engine.info.options["compile"] == "off"
    (note,) = engine.info.notes
    assert "REANGLE_COMPILE=auto" in note
    assert "no compiler here" in note
    blocks = engine.pipeline.transformer.transformer_blocks
    assert all("_compiled_call_impl" not in vars(block) for block in blocks)
    assert edit(engine).tobytes() == edit(eager).tobytes()


# Attention backend ----------------------------------------------------------------------------------------


def test_the_math_attention_backend_gives_the_native_image(config, eager):  # type: ignore[no-untyped-def]
    math = loaded(config, attention_backend="_native_math")
    processors = {
        block.attn.processor._attention_backend for block in math.pipeline.transformer.transformer_blocks
    }
    assert processors == {"_native_math"}
    assert np.abs(pixels(edit(math)) - pixels(edit(eager))).max() <= 1


@pytest.mark.parametrize("name", ["no_such_kernel", "NATIVE "])
def test_an_unknown_attention_backend_is_an_error_naming_the_setting_and_the_choices(config, name):  # type: ignore[no-untyped-def]
    with pytest.raises(EngineError, match="REANGLE_ATTENTION_BACKEND") as caught:
        loaded(config, attention_backend=name)
    assert "_native_cudnn" in (caught.value.hint or "")
    assert "native" in (caught.value.hint or "").split(": ")[1].split(", ")


@pytest.mark.parametrize("name", ["_native_cudnn", "flash", "xformers"])
def test_a_backend_this_machine_cannot_run_fails_at_load(config, name):  # type: ignore[no-untyped-def]
    """cuDNN attention has no CPU kernel; flash-attn and xformers are not installed."""
    with pytest.raises(EngineError, match=f"{name}.*REANGLE_ATTENTION_BACKEND.*does not work on cpu"):
        loaded(config, attention_backend=name)


# Regional compile -----------------------------------------------------------------------------------------


def test_one_graph_serves_any_number_of_blocks_and_every_request_after_warm_up_and_a_lora_set_once(
    config: QwenConfig, tmp_path: Path
) -> None:
    """Each compile takes seconds, so one compiled tiny engine (2 blocks) is checked for all of it: the
    warm-up at load, no new graph for other requests, one more for another LoRA set; then a 5-block one."""
    import torch
    from diffusers import QwenImageEditPlusPipeline

    from reangle.engine.tiny import build_tiny_components, write_tiny_lora

    backend = CountingBackend()
    engine = loaded(config, compile="blocks", compile_backend=backend)
    assert engine.warmup_s is not None
    assert engine.warmup_s > 0
    assert len(backend.graphs) == 1  # the tiny transformer has 2 blocks
    assert QwenEngine(config).warmup_s is None
    assert len(engine.pipeline.transformer.transformer_blocks) == 2

    # after the warm-up, other sizes, prompts and LoRA weights compile nothing new
    requests: list[dict[str, Any]] = [
        {},
        {"seed": 2},
        {"width": 48, "height": 64},
        {"width": 32, "height": 32},
        {"width": 80, "height": 32},
        {"pose": CameraPose(azimuth_deg=135, elevation_deg=30, distance_factor=0.6)},
        {"lora_scale": 0.0},
        {"lora_scale": 1.5},
        {"prompt": "and make the sky a little more orange than it is"},
    ]
    for request in requests:
        edit(engine, steps=FEW_STEPS, **request)
        assert len(backend.graphs) == 1, request
    counts = {2: len(backend.graphs)}
    two_references = [make_image(60, 80), make_image(50, 50)]  # a longer image sequence
    edit(engine, two_references, steps=FEW_STEPS)
    assert len(backend.graphs) == 1
    plans = [
        plan_for(engine, EditRequest(seed=1, steps=FEW_STEPS, pose=CameraPose(azimuth_deg=a)), IMAGES)
        for a in (0, 135)
    ]
    engine.edit_views(IMAGES, plans)  # batch-encoded prompts come back unpadded, as single ones
    assert len(backend.graphs) == 1

    # another LoRA set compiles once and then nothing: the 8-step Lightning LoRA instead of the 4-step one
    edit(engine, acceleration="regular", steps=FEW_STEPS)
    assert len(backend.graphs) == 2
    edit(
        engine, acceleration="regular", steps=FEW_STEPS, width=48, height=64, pose=CameraPose(azimuth_deg=90)
    )
    edit(engine, steps=FEW_STEPS)
    assert len(backend.graphs) == 2

    # the number of graphs does not grow with the number of blocks
    torch._dynamo.reset()
    components = build_tiny_components(num_layers=5)
    loras = {}
    for seed, adapter in enumerate(config.loras):  # over every block, as the real LoRAs are
        loras[adapter] = str(tmp_path / f"{adapter}-5.safetensors")
        write_tiny_lora(components["transformer"], Path(loras[adapter]), seed=seed)
    backend = CountingBackend()
    engine = loaded(
        config,
        loras=loras,
        compile="blocks",
        compile_backend=backend,
        pipeline_factory=lambda _dtype: QwenImageEditPlusPipeline(**components),
        target_area=80 * 80,  # a smaller warm-up edit than the tiny engine's 128 x 128, still not SIZE
    )
    assert len(engine.pipeline.transformer.transformer_blocks) == 5
    edit(engine, steps=FEW_STEPS)
    counts[5] = len(backend.graphs)
    assert counts == {2: 1, 5: 1}


def test_compiled_blocks_give_the_eager_pixels(config, eager):  # type: ignore[no-untyped-def]
    compiled = loaded(config, compile="blocks", compile_backend="aot_eager")
    for request in ({}, {"width": 48, "height": 64, "pose": CameraPose(azimuth_deg=90)}):
        assert np.abs(pixels(edit(compiled, **request)) - pixels(edit(eager, **request))).max() <= 1


def test_a_failing_compile_is_an_error_naming_the_setting(config):  # type: ignore[no-untyped-def]
    def broken_backend(_graph: Any, _inputs: Any) -> Any:
        raise RuntimeError("no compiler here")

    engine = QwenEngine(replace(config, compile="blocks", compile_backend=broken_backend))
    with pytest.raises(EngineError, match=r"(?s)REANGLE_COMPILE=blocks.*no compiler here") as caught:
        engine.load()
    assert "REANGLE_COMPILE=off" in (caught.value.hint or "")
    assert engine.pipeline is None


# FP8 ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fp8(config: QwenConfig) -> QwenEngine:
    return loaded(config, quantize="fp8")


def test_fp8_quantizes_the_block_linears_and_keeps_the_loras(fp8):  # type: ignore[no-untyped-def]
    from reangle.engine.fp8 import Fp8Linear

    report = fp8.fp8_report
    assert report is not None
    assert report.quantized > 0
    assert report.bytes_after < report.bytes_before / 3  # float32 weights to e4m3 plus row scales
    to_q = fp8.pipeline.transformer.transformer_blocks[0].attn.to_q
    assert isinstance(to_q.base_layer, Fp8Linear)
    assert set(to_q.lora_A) == set(fp8.config.loras)


def test_an_fp8_edit_is_close_to_the_unquantized_one(fp8, eager):  # type: ignore[no-untyped-def]
    """Observed 57-59 dB on the tiny model, where a 10 % change of the LoRA weight gives 54 dB and another
    seed 21 dB."""
    for request in ({}, {"pose": CameraPose(azimuth_deg=90)}, {"acceleration": "regular"}):
        quantized, unquantized = edit(fp8, **request), edit(eager, **request)
        assert quantized.tobytes() != unquantized.tobytes()  # the FP8 layers did run
        assert psnr(quantized, unquantized) >= 50, request


def test_fp8_still_switches_loras_per_plan(fp8):  # type: ignore[no-untyped-def]
    high, regular = edit(fp8), edit(fp8, acceleration="regular")
    assert high.tobytes() != regular.tobytes()
    weak, strong = edit(fp8, lora_scale=0.0), edit(fp8, lora_scale=1.5)
    assert weak.tobytes() != strong.tobytes()
    assert edit(fp8).tobytes() == high.tobytes()


def test_fp8_blocks_compile_without_graph_breaks(config, fp8):  # type: ignore[no-untyped-def]
    backend = CountingBackend()
    compiled = loaded(config, quantize="fp8", compile="blocks", compile_backend=backend)
    assert len(backend.graphs) == 1
    assert np.abs(pixels(edit(compiled)) - pixels(edit(fp8))).max() <= 1


# Output conversion ----------------------------------------------------------------------------------------


def test_the_output_bytes_equal_diffusers_pil_output(eager):  # type: ignore[no-untyped-def]
    """The engine asks for tensors and converts them itself; diffusers' "pil" path on the very same decoded
    tensor gives the same bytes."""
    processor = eager.pipeline.image_processor
    decoded: list[tuple[Any, str]] = []
    original = processor.postprocess

    def recording(image: Any, output_type: str = "pil", **kwargs: Any) -> Any:
        decoded.append((image.clone(), output_type))
        return original(image, output_type=output_type, **kwargs)

    processor.postprocess = recording
    try:
        result = eager.edit(IMAGES, plan_for(eager, EditRequest(seed=5, num_outputs=2, **SIZE), IMAGES))
    finally:
        del processor.postprocess
    assert [output_type for _, output_type in decoded] == ["pt", "pt"]  # one pipeline call per output
    expected = [image for tensor, _ in decoded for image in original(tensor, output_type="pil")]
    assert [image.tobytes() for image in result.images] == [image.tobytes() for image in expected]


@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16"])
def test_on_device_conversion_matches_diffusers_for_every_value(dtype_name):  # type: ignore[no-untyped-def]
    import torch
    from diffusers.image_processor import VaeImageProcessor

    from reangle.engine.acceleration import to_pil_images

    dtype = getattr(torch, dtype_name)
    # a fine ramp through [-1.2, 1.2] (clamped ends included), noise, and exact halves: a decoded 0 is 0.5,
    # 127.5 after x255, where round-half-to-even matters
    ramp = torch.linspace(-1.2, 1.2, 3 * 40 * 51, dtype=torch.float64).to(dtype).reshape(1, 3, 40, 51)
    noise = torch.randn(2, 3, 40, 51, generator=torch.Generator().manual_seed(0)).to(dtype)
    halves = torch.zeros(1, 3, 8, 8, dtype=dtype)
    processor = VaeImageProcessor()
    assert processor.postprocess(halves, output_type="pil")[0].getpixel((0, 0)) == (128, 128, 128)
    for decoded in (ramp, noise, halves):
        ours = to_pil_images(processor.postprocess(decoded, output_type="pt"))
        theirs = processor.postprocess(decoded, output_type="pil")
        assert [image.tobytes() for image in ours] == [image.tobytes() for image in theirs]
