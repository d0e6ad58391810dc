"""`edit_views` on the tiny pipeline: the views of one input match separate edits, while the text encoder
and the VAE encoder run once for all of them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from reangle.core.camera import CameraPose
from reangle.core.edit import EditPlan, EditRequest
from reangle.engine.base import plan_for
from reangle.engine.qwen import QwenEngine
from reangle.engine.tiny import tiny_engine
from reangle.engine.views import encode_prompts
from reangle.errors import Canceled, EngineError
from reangle.settings import Settings
from tests.conftest import make_image
from tests.engine.tiny_support import ForwardCounter

pytestmark = pytest.mark.tiny

IMAGES = [make_image(80, 60)]
SIZE = {"width": 64, "height": 48}
AZIMUTHS = (0, 45, 90, 135, 180, 225, 270, 315)


@pytest.fixture(scope="module")
def engine(cache_dir: Path) -> QwenEngine:
    """No reference latents kept between edits: what the views share, they share within one call."""
    built = tiny_engine(Settings(cache_dir=cache_dir, reference_cache=0))
    built.load()
    return built


def orbit(engine: QwenEngine, images: list[Image.Image] = IMAGES, **request: Any) -> list[EditPlan]:
    """One plan per azimuth (their prompts differ in length), seeds 10, 11, ..."""
    return [
        plan_for(
            engine,
            EditRequest(seed=10 + k, pose=CameraPose(azimuth_deg=azimuth), **SIZE, **request),
            images,
        )
        for k, azimuth in enumerate(AZIMUTHS)
    ]


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.fixture
def counters(engine: QwenEngine) -> Iterator[dict[str, ForwardCounter]]:
    pipe = engine.pipeline
    counting = {"text": ForwardCounter(pipe.text_encoder), "vae": ForwardCounter(pipe.vae.encoder)}
    yield counting
    for counter in counting.values():
        counter.remove()


def test_each_view_matches_a_separate_edit_with_the_same_seed(engine):  # type: ignore[no-untyped-def]
    plans = orbit(engine)
    views = engine.edit_views(IMAGES, plans)
    assert [view.seed for view in views] == [plan.seed for plan in plans]
    for plan, view in zip(plans, views, strict=True):
        alone = engine.edit(IMAGES, plan).images[0]
        assert view.images[0].size == alone.size == (64, 48)
        assert np.abs(pixels(view.images[0]) - pixels(alone)).max() <= 1, plan.prompt


def test_the_views_differ_from_each_other(engine):  # type: ignore[no-untyped-def]
    views = engine.edit_views(IMAGES, orbit(engine)[:3])
    assert len({view.images[0].tobytes() for view in views}) == 3


def test_eight_views_run_the_text_encoder_once_and_the_vae_encoder_once(engine, counters):  # type: ignore[no-untyped-def]
    single = engine.edit(IMAGES, orbit(engine)[0])
    per_edit = {name: counter.calls for name, counter in counters.items()}
    assert per_edit == {"text": 1, "vae": 1}
    assert single.images

    for counter in counters.values():
        counter.calls = 0
    engine.edit_views(IMAGES, orbit(engine))
    assert {name: counter.calls for name, counter in counters.items()} == {"text": 1, "vae": 1}


def test_each_reference_image_is_vae_encoded_once(engine, counters):  # type: ignore[no-untyped-def]
    images = [make_image(80, 60), make_image(60, 80, color=(0, 90, 0))]
    views = engine.edit_views(images, orbit(engine, images)[:4])
    assert len(views) == 4
    assert (counters["text"].calls, counters["vae"].calls) == (1, 2)


def test_true_cfg_views_share_the_encoder_and_match_separate_edits(engine, counters):  # type: ignore[no-untyped-def]
    plans = orbit(engine, acceleration="none", steps=2)[:3]
    assert all(plan.negative_prompt is not None and plan.true_cfg_scale > 1 for plan in plans)
    views = engine.edit_views(IMAGES, plans)
    assert counters["text"].calls == 1  # the three prompts and the shared negative prompt together
    for plan, view in zip(plans, views, strict=True):
        alone = engine.edit(IMAGES, plan).images[0]
        assert np.abs(pixels(view.images[0]) - pixels(alone)).max() <= 1


def test_several_outputs_per_view_match_separate_edits(engine):  # type: ignore[no-untyped-def]
    plans = orbit(engine, num_outputs=2)[:2]
    views = engine.edit_views(IMAGES, plans)
    for plan, view in zip(plans, views, strict=True):
        alone = engine.edit(IMAGES, plan)
        assert len(view.images) == 2
        for mine, theirs in zip(view.images, alone.images, strict=True):
            assert np.abs(pixels(mine) - pixels(theirs)).max() <= 1


@pytest.mark.parametrize("side", ["left", "right"])
def test_batched_prompt_embeddings_equal_the_pipelines_own_for_either_padding_side(engine, side):  # type: ignore[no-untyped-def]
    import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus as edit_plus
    import torch

    pipe = engine.pipeline
    prompts = [plan.prompt for plan in orbit(engine)[:4]] + [" "]
    assert len({len(prompt) for prompt in prompts}) > 1  # the batch needs padding
    tokenizer = pipe.processor.tokenizer
    saved = tokenizer.padding_side
    tokenizer.padding_side = side
    try:
        batched = encode_prompts(pipe, IMAGES, prompts)
    finally:
        tokenizer.padding_side = saved
    width, height = edit_plus.calculate_dimensions(edit_plus.CONDITION_IMAGE_SIZE, 80 / 60)
    condition = [pipe.image_processor.resize(IMAGES[0], height, width)]
    for prompt, (embeds, mask) in zip(prompts, batched, strict=True):
        with torch.inference_mode():
            alone, _ = pipe._get_qwen_prompt_embeds(prompt, condition, torch.device("cpu"))
        assert embeds.shape == alone.shape
        assert bool(mask.all())
        torch.testing.assert_close(embeds, alone, rtol=1e-4, atol=1e-5)


def test_progress_counts_all_steps_of_all_views(engine):  # type: ignore[no-untyped-def]
    plans = [*orbit(engine)[:2], replace(orbit(engine)[2], steps=3)]
    seen: list[tuple[int, int]] = []
    engine.edit_views(IMAGES, plans, on_step=lambda done, total: seen.append((done, total)))
    assert seen == [(done, 11) for done in range(1, 12)]


def test_cancel_mid_way_raises_and_leaves_the_engine_as_it_was(engine):  # type: ignore[no-untyped-def]
    pipe = engine.pipeline
    seen: list[int] = []
    with pytest.raises(Canceled):
        engine.edit_views(
            IMAGES,
            orbit(engine),
            on_step=lambda done, _total: seen.append(done),
            should_stop=lambda: len(seen) >= 6,
        )
    assert seen == [1, 2, 3, 4, 5, 6]  # in the second view
    assert "_encode_vae_image" not in vars(pipe)  # the class's method again
    assert engine.edit(IMAGES, orbit(engine)[0]).images


def test_a_view_needing_an_unconfigured_lora_fails_before_any_work(engine, cache_dir):  # type: ignore[no-untyped-def]
    from reangle.core.edit import ANGLES

    no_lightning = QwenEngine(replace(engine.config, loras={ANGLES: engine.config.loras[ANGLES]}))
    no_lightning.load()
    encoder = ForwardCounter(no_lightning.pipeline.text_encoder)
    try:
        plans = orbit(no_lightning, acceleration="none", steps=1)[:2]
        plans.append(orbit(no_lightning)[2])  # needs the 4-step Lightning LoRA
        with pytest.raises(EngineError, match="lightning_4step"):
            no_lightning.edit_views(IMAGES, plans)
        assert encoder.calls == 0
    finally:
        encoder.remove()


def test_one_view_takes_the_plain_edit_path(engine, monkeypatch):  # type: ignore[no-untyped-def]
    import reangle.engine.qwen as qwen

    def fail(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("a single view must not batch its prompt encoding")

    monkeypatch.setattr(qwen, "view_prompt_arguments", fail)
    [plan] = orbit(engine)[:1]
    [view] = engine.edit_views(IMAGES, [plan])
    assert view.images[0].tobytes() == engine.edit(IMAGES, plan).images[0].tobytes()
    assert view.seed == plan.seed
