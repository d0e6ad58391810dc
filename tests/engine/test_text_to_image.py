"""Text-to-image through the real qwen engine on the tiny pipelines (CPU, offline): the QwenImagePipeline
loads at the first generation and shares the edit pipeline's text encoder, tokenizer and VAE. Pixels are
meaningless: outputs are compared with each other only."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from reangle.core.edit import LIGHTNING_4STEP, LIGHTNING_8STEP, EditRequest, GenerateRequest
from reangle.engine.base import plan_for, plan_generation_for
from reangle.engine.fake import qwen_image_layer_names
from reangle.engine.qwen import QwenConfig, QwenEngine
from reangle.engine.text_to_image import TextToImageConfig
from reangle.errors import Canceled, EngineError
from tests.engine.tiny_support import IMAGES, SIZE, loaded

pytestmark = pytest.mark.tiny


@pytest.fixture(scope="module")
def engine(config: QwenConfig) -> QwenEngine:
    return loaded(config)


def request(**fields: Any) -> GenerateRequest:
    return GenerateRequest(**{"prompt": "a lighthouse at dawn", "seed": 1, "steps": 2, **SIZE, **fields})


def generate(engine: QwenEngine, **fields: Any) -> list[bytes]:
    (result,) = engine.generate([plan_generation_for(engine, request(**fields))])
    return [image.tobytes() for image in result.images]


def edit(engine: QwenEngine) -> bytes:
    plan = plan_for(engine, EditRequest(seed=2, steps=2, **SIZE), IMAGES)
    return engine.edit(IMAGES, plan).images[0].tobytes()


def test_the_pipeline_loads_at_the_first_generation_and_shares_the_encoder_tokenizer_and_vae(config):  # type: ignore[no-untyped-def]
    from diffusers import QwenImagePipeline

    fresh = loaded(config)
    assert fresh.info.can_generate
    assert fresh.text_to_image_pipeline is None
    generate(fresh)
    pipe, edit_pipe = fresh.text_to_image_pipeline, fresh.pipeline
    assert isinstance(pipe, QwenImagePipeline)
    assert pipe.text_encoder is edit_pipe.text_encoder
    assert pipe.tokenizer is edit_pipe.tokenizer
    assert pipe.vae is edit_pipe.vae
    assert pipe.transformer is not edit_pipe.transformer
    assert not pipe.transformer.config.zero_cond_t
    assert pipe.get_list_adapters() == {"transformer": [LIGHTNING_4STEP, LIGHTNING_8STEP]}
    assert fresh.info.options["text_to_image_residency"] == "both"  # a CPU has nothing to swap
    model = Path(config.text_to_image.model)
    assert sorted(path.name for path in model.iterdir()) == ["loras", "scheduler", "transformer"]


def test_outputs_have_the_planned_size_and_count(engine):  # type: ignore[no-untyped-def]
    (result,) = engine.generate([plan_generation_for(engine, request(width=None, height=None, size="48x32"))])
    assert [image.size for image in result.images] == [(48, 32)]
    (result,) = engine.generate([plan_generation_for(engine, request(num_outputs=3))])
    assert [image.size for image in result.images] == [(64, 48)] * 3
    assert result.seed == 1


def test_same_seed_same_pixels_and_output_k_is_a_single_run_with_seed_plus_k(engine):  # type: ignore[no-untyped-def]
    several = generate(engine, seed=5, num_outputs=2)
    assert generate(engine, seed=5, num_outputs=2) == several
    assert several[0] != several[1]
    assert generate(engine, seed=6) == several[1:]


def test_the_presets_and_the_prompt_change_the_picture(engine):  # type: ignore[no-untyped-def]
    pictures = [
        generate(engine),
        generate(engine, prompt="a red bicycle"),
        generate(engine, acceleration="regular"),
        generate(engine, acceleration="none"),
        generate(engine, guidance_scale=3.0, negative_prompt="fog"),
    ]
    assert len({picture[0] for picture in pictures}) == len(pictures)
    assert engine.text_to_image_pipeline.get_active_adapters() == [LIGHTNING_4STEP]


def test_progress_counts_every_output_of_every_plan_and_a_stop_cancels_the_call(engine):  # type: ignore[no-untyped-def]
    plans = [plan_generation_for(engine, request(prompt=f"view {k}", num_outputs=2)) for k in range(2)]
    seen: list[tuple[int, int]] = []
    results = engine.generate(plans, on_step=lambda done, total: seen.append((done, total)))
    assert seen == [(done, 8) for done in range(1, 9)]
    assert [len(result.images) for result in results] == [2, 2]
    seen.clear()
    with pytest.raises(Canceled):
        engine.generate(
            plans, on_step=lambda done, total: seen.append((done, total)), should_stop=lambda: len(seen) >= 5
        )
    assert len(seen) == 5
    assert engine.generate(plans)[1].images[0].tobytes() == results[1].images[0].tobytes()


def test_edits_and_generations_in_any_order_give_their_own_pixels(config, engine):  # type: ignore[no-untyped-def]
    alone = loaded(config)
    edited = edit(alone)
    assert [edit(engine), generate(engine), edit(engine)] == [edited, generate(loaded(config)), edited]


def test_lora_layers_come_from_the_config_before_the_model_loads_and_match_it_after(config):  # type: ignore[no-untyped-def]
    fresh = QwenEngine(config)
    before = fresh.lora_layers(True)
    assert fresh.pipeline is None  # nothing was loaded to answer
    generate(fresh)
    assert fresh.lora_layers(True) == before == fresh.lora_layers(False)  # one architecture
    assert set(before) <= set(qwen_image_layer_names())  # what the fake engine answers


def test_the_edit_models_lora_layers_come_from_its_config_before_it_loads_and_match_it_after(config):  # type: ignore[no-untyped-def]
    fresh = QwenEngine(config)
    before = fresh.lora_layers(False)
    assert fresh.pipeline is None  # nothing was loaded to answer
    fresh.load()
    assert fresh.lora_layers(False) == before
    assert "transformer_blocks.0.attn.to_q" in before


def test_an_engine_without_a_text_to_image_model_says_which_setting(config):  # type: ignore[no-untyped-def]
    edit_only = QwenEngine(replace(config, text_to_image=None))
    assert not edit_only.info.can_generate
    with pytest.raises(EngineError, match="no text-to-image model") as caught:
        edit_only.generate([plan_generation_for(edit_only, request())])
    assert "REANGLE_TEXT_TO_IMAGE_MODEL" in (caught.value.hint or "")


def test_a_text_to_image_model_that_cannot_load_fails_clearly_and_edits_go_on(config, tmp_path):  # type: ignore[no-untyped-def]
    assert config.text_to_image is not None
    gone = replace(config.text_to_image, model=str(tmp_path / "no-model"))
    broken = loaded(config, text_to_image=gone)
    with pytest.raises(EngineError, match="cannot load the text-to-image model"):
        generate(broken)
    assert broken.text_to_image_pipeline is None
    assert edit(broken) == edit(loaded(config))


def test_a_generation_needing_an_unconfigured_lightning_lora_says_which_setting(config):  # type: ignore[no-untyped-def]
    assert config.text_to_image is not None
    bare = replace(config.text_to_image, loras={})
    engine = loaded(config, text_to_image=bare)
    with pytest.raises(EngineError, match=LIGHTNING_4STEP) as caught:
        generate(engine)
    assert "REANGLE_TEXT_TO_IMAGE_LIGHTNING_4STEP_LORA" in (caught.value.hint or "")
    assert len(generate(engine, acceleration="none")) == 1


@pytest.mark.parametrize("mode", ["swap", "offload"])
def test_swapping_or_offloading_the_transformers_gives_the_same_pixels(config, engine, mode):  # type: ignore[no-untyped-def]
    assert config.text_to_image is not None
    if mode == "swap":
        other = loaded(config, text_to_image=replace(config.text_to_image, residency="swap"))
    else:
        other = loaded(config, cpu_offload=True)
    first = other.generate([plan_generation_for(other, request())])[0]
    assert other.info.options["text_to_image_residency"] == mode
    plan = plan_for(other, EditRequest(seed=2, steps=2, **SIZE), IMAGES)
    switched, again = (other.edit(IMAGES, plan) for _ in range(2))
    assert "swap_s" in switched.timings  # the kind of job changed
    assert "swap_s" not in again.timings
    assert first.images[0].tobytes() == generate(engine)[0]
    assert switched.images[0].tobytes() == again.images[0].tobytes() == edit(engine)
    assert (
        other.generate([plan_generation_for(other, request())])[0].images[0].tobytes() == generate(engine)[0]
    )


def test_the_settings_reach_the_text_to_image_config(monkeypatch):  # type: ignore[no-untyped-def]
    from reangle.settings import HUB_TEXT_TO_IMAGE_LIGHTNING_4STEP, Settings

    assert HUB_TEXT_TO_IMAGE_LIGHTNING_4STEP == (
        "lightx2v/Qwen-Image-2512-Lightning/Qwen-Image-2512-Lightning-4steps-V1.0-bf16.safetensors"
    )
    monkeypatch.setenv("REANGLE_TEXT_TO_IMAGE_RESIDENCY", "swap")
    monkeypatch.setenv("REANGLE_TEXT_TO_IMAGE_LIGHTNING_8STEP_LORA", "")
    monkeypatch.setenv("REANGLE_LORA_GPU_CAPACITY", "2")
    engine = QwenEngine.from_settings(Settings())
    assert engine.config.text_to_image == TextToImageConfig(
        model="Qwen/Qwen-Image-2512",
        loras={LIGHTNING_4STEP: HUB_TEXT_TO_IMAGE_LIGHTNING_4STEP},
        residency="swap",
    )
    assert engine.config.lora_gpu_capacity == 2
    monkeypatch.setenv("REANGLE_TEXT_TO_IMAGE_MODEL", "")
    assert not QwenEngine.from_settings(Settings()).info.can_generate
