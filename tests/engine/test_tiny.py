"""The real qwen engine code on the tiny random-weight pipeline (CPU, offline). Its pixels are meaningless:
tests compare outputs only with each other, never with stored values."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from reangle.core.camera import CameraPose
from reangle.core.edit import ANGLES, LIGHTNING_4STEP, EditRequest, LoraUse
from reangle.engine.base import plan_for
from reangle.engine.qwen import QwenEngine
from reangle.engine.tiny import ensure_tiny_model, tiny_engine
from reangle.errors import Canceled, EngineError, InvalidInput, LoraLoadError
from reangle.settings import Settings
from tests.conftest import make_image

pytestmark = pytest.mark.tiny

IMAGES = [make_image(80, 60)]
SIZE = {"width": 64, "height": 48}


@pytest.fixture(scope="module")
def engine(cache_dir: Path) -> QwenEngine:
    built = tiny_engine(Settings(cache_dir=cache_dir))
    built.load()
    return built


def edit(engine: QwenEngine, request: EditRequest, images: list[Image.Image] = IMAGES, **hooks):  # type: ignore[no-untyped-def]
    return engine.edit(images, plan_for(engine, request, images), **hooks)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_the_tiny_model_is_saved_and_reloaded_through_from_pretrained(engine, cache_dir):  # type: ignore[no-untyped-def]
    model_dir = Path(engine.config.model)
    assert model_dir.parent == cache_dir
    assert (model_dir / "model_index.json").is_file()
    assert {"transformer", "vae", "text_encoder", "tokenizer", "processor", "scheduler"} <= {
        p.name for p in model_dir.iterdir()
    }
    assert engine.info.demo
    assert engine.info.device == "cpu"
    assert ensure_tiny_model(model_dir) == model_dir  # a second call reuses the build


def test_output_has_the_requested_size(engine):  # type: ignore[no-untyped-def]
    result = edit(engine, EditRequest(seed=1, **SIZE))
    assert [image.size for image in result.images] == [(64, 48)]


def test_same_seed_same_pixels_and_different_seeds_differ(engine):  # type: ignore[no-untyped-def]
    first = edit(engine, EditRequest(seed=7, **SIZE)).images[0]
    again = edit(engine, EditRequest(seed=7, **SIZE)).images[0]
    other = edit(engine, EditRequest(seed=8, **SIZE)).images[0]
    assert first.tobytes() == again.tobytes()
    assert first.tobytes() != other.tobytes()


def test_output_k_is_exactly_a_single_run_with_seed_plus_k(engine):  # type: ignore[no-untyped-def]
    progress: list[tuple[int, int]] = []
    several = edit(
        engine, EditRequest(seed=20, num_outputs=3, **SIZE), on_step=lambda *step: progress.append(step)
    )
    assert several.seed == 20
    for k, image in enumerate(several.images):
        single = edit(engine, EditRequest(seed=20 + k, **SIZE)).images[0]
        assert image.tobytes() == single.tobytes(), k
    assert progress == [(step, 12) for step in range(1, 13)]  # 4 steps for each of the 3 outputs


def test_lora_scale_changes_the_output(engine):  # type: ignore[no-untyped-def]
    request = EditRequest(seed=3, pose=CameraPose(azimuth_deg=90), **SIZE)
    off = edit(engine, replace(request, lora_scale=0.0)).images[0]
    on = edit(engine, replace(request, lora_scale=1.5)).images[0]
    assert np.abs(pixels(off) - pixels(on)).max() > 0


@contextlib.contextmanager
def adapter_switches(pipe: Any) -> Iterator[list[str]]:
    """The names of the pipeline's adapter-switching methods, in the order they are called."""
    calls: list[str] = []

    def recorded(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return original(*args, **kwargs)

        return call

    methods = ("enable_lora", "disable_lora", "set_adapters")
    for name in methods:
        setattr(pipe, name, recorded(name, getattr(pipe, name)))  # an instance attribute shadows the method
    try:
        yield calls
    finally:
        for name in methods:
            delattr(pipe, name)


def test_adapters_are_switched_only_when_an_edit_needs_other_ones(engine):  # type: ignore[no-untyped-def]
    request = EditRequest(seed=3, pose=CameraPose(azimuth_deg=90), **SIZE)
    with adapter_switches(engine.pipeline) as switches:
        first = edit(engine, request).images[0]
        switches.clear()
        other_pose = edit(engine, replace(request, seed=4, pose=CameraPose(azimuth_deg=180))).images[0]
        assert switches == []
        weaker = edit(engine, replace(request, lora_scale=0.5)).images[0]
        assert switches == ["enable_lora", "set_adapters"]
        back = edit(engine, request).images[0]
        assert switches == ["enable_lora", "set_adapters"] * 2
    assert back.tobytes() == first.tobytes()  # the weights were set back, not left at 0.5
    assert weaker.tobytes() != first.tobytes()
    assert other_pose.tobytes() != first.tobytes()


def test_the_angle_lora_at_weight_zero_equals_no_angle_lora(engine):  # type: ignore[no-untyped-def]
    request = EditRequest(seed=3, pose=None, prompt="<sks> back view eye-level shot medium shot", **SIZE)
    without = edit(engine, request)
    plan = plan_for(engine, request, IMAGES)
    zero_angles = replace(plan, loras=(*plan.loras, LoraUse(adapter=ANGLES, weight=0.0)))
    with_zero = engine.edit(IMAGES, zero_angles)
    assert np.abs(pixels(without.images[0]) - pixels(with_zero.images[0])).max() <= 1


def test_each_acceleration_runs_its_own_steps(engine):  # type: ignore[no-untyped-def]
    for acceleration, steps in (("high", 4), ("regular", 8), ("none", 2)):
        seen: list[int] = []
        request = EditRequest(
            seed=1, acceleration=acceleration, steps=2 if acceleration == "none" else None, **SIZE
        )  # type: ignore[arg-type]
        edit(engine, request, on_step=lambda done, _total, seen=seen: seen.append(done))
        assert seen == list(range(1, steps + 1)), acceleration


def test_progress_is_monotonic_and_reports_the_total(engine):  # type: ignore[no-untyped-def]
    seen: list[tuple[int, int]] = []
    edit(engine, EditRequest(seed=1, **SIZE), on_step=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_cancel_mid_run_returns_no_image(engine):  # type: ignore[no-untyped-def]
    seen: list[int] = []
    with pytest.raises(Canceled):
        edit(
            engine,
            EditRequest(seed=1, acceleration="regular", **SIZE),
            on_step=lambda done, _total: seen.append(done),
            should_stop=lambda: len(seen) >= 2,
        )
    assert seen == [1, 2]
    assert edit(engine, EditRequest(seed=1, **SIZE)).images  # the engine is usable afterwards


def test_a_canceled_edit_frees_the_offload_hooks(engine):  # type: ignore[no-untyped-def]
    """With CPU offload the pipeline frees its hooks only at the end of a call that finished; the engine frees
    them whatever happens, so a canceled job does not leave the transformer on the GPU."""
    pipe = engine.pipeline
    calls: list[str] = []
    original = pipe.maybe_free_model_hooks

    def free_hooks() -> None:
        calls.append("freed")
        original()

    pipe.maybe_free_model_hooks = free_hooks
    steps: list[int] = []
    try:
        with pytest.raises(Canceled):
            edit(
                engine,
                EditRequest(seed=1, **SIZE),
                on_step=lambda done, _total: steps.append(done),
                should_stop=lambda: len(steps) >= 2,
            )
    finally:
        del pipe.maybe_free_model_hooks
    assert (steps, calls) == ([1, 2], ["freed"])


def test_several_outputs_are_decoded_one_at_a_time(engine):  # type: ignore[no-untyped-def]
    batches: list[int] = []
    hook = engine.pipeline.vae.decoder.register_forward_pre_hook(
        lambda _m, args: batches.append(args[0].shape[0])
    )
    try:
        assert len(edit(engine, EditRequest(seed=1, num_outputs=3, **SIZE)).images) == 3
    finally:
        hook.remove()
    assert batches
    assert set(batches) == {1}


def test_outputs_above_the_tile_area_are_decoded_in_tiles_and_references_never_are(engine):  # type: ignore[no-untyped-def]
    """diffusers tiles sides above 256 px when its one `use_tiling` flag is on, encodes included; the
    engine tiles only the decode of outputs above its area setting. Tiled reference latents would differ
    from whole ones, and the reference cache would then serve either to a later edit."""
    tiling = QwenEngine(replace(engine.config, vae_tile_area=300 * 64 - 1, reference_area=320 * 320))
    tiling.load()
    vae = tiling.pipeline.vae
    calls: list[tuple[str, tuple[int, int]]] = []
    for name in ("tiled_decode", "tiled_encode"):
        original = getattr(vae, name)

        def recorded(z, *args, name=name, original=original, **kwargs):  # type: ignore[no-untyped-def]
            calls.append((name, tuple(z.shape[-2:])))
            return original(z, *args, **kwargs)

        setattr(vae, name, recorded)
    images = [make_image(400, 300)]  # a reference above 256 px: a tiled encode would reach tiled_encode
    small_first = edit(tiling, EditRequest(seed=1, width=288, height=64), images).images[0]
    big = edit(tiling, EditRequest(seed=1, width=304, height=64), images).images[0]
    small_again = edit(tiling, EditRequest(seed=1, width=288, height=64), images).images[0]
    assert big.size == (304, 64)
    assert calls == [("tiled_decode", (16, 76))]  # the 304x64 output only (tiny VAE latents: 1/4 of pixels)
    assert small_again.tobytes() == small_first.tobytes()


def test_the_tiny_pipeline_runs_the_base_models_shifted_schedule(engine):  # type: ignore[no-untyped-def]
    """The base model's scheduler (no Lightning LoRA): dynamic shifting by image size, ending at 0.02."""
    edit(engine, EditRequest(seed=1, acceleration="none", steps=3, **SIZE))
    scheduler = engine.pipeline.scheduler
    assert scheduler.config.use_dynamic_shifting
    sigmas = scheduler.sigmas.tolist()
    assert len(sigmas) == 4
    assert sigmas[-2] == pytest.approx(0.02, abs=1e-6)  # float32
    assert sigmas[-1] == 0


def test_the_model_is_read_straight_onto_its_device(engine):  # type: ignore[no-untyped-def]
    assert engine.pipeline.hf_device_map == "cpu"  # from_pretrained(device_map=...), no host copy then a move
    assert {p.device.type for p in engine.pipeline.transformer.parameters()} == {"cpu"}


def test_up_to_three_reference_images(engine):  # type: ignore[no-untyped-def]
    images = [make_image(80, 60), make_image(60, 80, color=(0, 90, 0)), make_image(50, 50, color=(0, 0, 200))]
    result = edit(engine, EditRequest(seed=1, **SIZE), images)
    assert result.images[0].size == (64, 48)


def test_a_lora_file_that_matches_nothing_is_an_error_naming_it(engine, tmp_path):  # type: ignore[no-untyped-def]
    import torch
    from safetensors.torch import save_file

    stray = tmp_path / "stray.safetensors"
    save_file(
        {
            "not_a_block.proj.lora_A.weight": torch.ones(4, 8),
            "not_a_block.proj.lora_B.weight": torch.ones(8, 4),
        },
        str(stray),
    )
    broken = QwenEngine(replace(engine.config, loras={"stray": str(stray)}))
    with pytest.raises(LoraLoadError, match=r"stray\.safetensors"):
        broken.load()


def test_a_missing_lora_file_is_an_error(engine, tmp_path):  # type: ignore[no-untyped-def]
    broken = QwenEngine(replace(engine.config, loras={ANGLES: str(tmp_path / "gone.safetensors")}))
    with pytest.raises(LoraLoadError, match="not found"):
        broken.load()


def test_an_edit_needing_an_unconfigured_lora_says_which_setting(engine):  # type: ignore[no-untyped-def]
    no_lightning = QwenEngine(replace(engine.config, loras={ANGLES: engine.config.loras[ANGLES]}))
    with pytest.raises(EngineError, match=LIGHTNING_4STEP) as caught:
        edit(no_lightning, EditRequest(seed=1, **SIZE))
    assert "REANGLE_LIGHTNING_4STEP_LORA" in (caught.value.hint or "")


def test_a_model_that_cannot_be_loaded_is_an_engine_error(tmp_path):  # type: ignore[no-untyped-def]
    from reangle.engine.qwen import QwenConfig

    with pytest.raises(EngineError, match="cannot load the model"):
        QwenEngine(QwenConfig(model=str(tmp_path / "no-model"), offline=True)).load()


def test_the_speed_settings_reach_the_tiny_engine(cache_dir):  # type: ignore[no-untyped-def]
    quantized = tiny_engine(Settings(cache_dir=cache_dir, quantize="fp8", attention_backend="_native_math"))
    assert (quantized.config.quantize, quantized.config.attention_backend) == ("fp8", "_native_math")
    quantized.load()
    assert quantized.fp8_report is not None
    assert quantized.fp8_report.quantized > 0

    with pytest.raises(EngineError, match="REANGLE_ATTENTION_BACKEND"):
        tiny_engine(Settings(cache_dir=cache_dir, attention_backend="no-such-kernel")).load()


def test_an_input_the_pipeline_would_scale_to_no_pixels_is_refused_before_it_runs(engine: QwenEngine) -> None:
    """The tiny engine scales inputs to 64x64 pixels for its VAE: at 16:1 the short side would round to 0
    and diffusers would fail the job with a ValueError (engine_error); it is the image's fault, said so."""
    assert engine.info.limits.max_input_ratio == 16
    with pytest.raises(InvalidInput, match=r"input\.images\.0 is 1600x100, too elongated"):
        plan_for(engine, EditRequest(), [make_image(1600, 100)])
    [picture] = edit(engine, EditRequest(seed=1, **SIZE), [make_image(1500, 100)]).images
    assert picture.size == (64, 48)
