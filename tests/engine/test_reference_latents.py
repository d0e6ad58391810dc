"""Reference latents kept across edits: which images are encoded, what is kept, and (on the tiny pipeline)
that an edit from kept latents is the edit from a fresh encoding."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch

from reangle.core.camera import CameraPose
from reangle.core.edit import EditRequest
from reangle.engine.base import plan_for
from reangle.engine.qwen import QwenConfig, QwenEngine
from reangle.engine.reference_latents import ReferenceLatents
from reangle.errors import EngineError
from reangle.settings import Settings
from tests.conftest import make_image
from tests.engine.tiny_support import IMAGES, SIZE, ForwardCounter, loaded


class FakePipe:
    """A fake of the pipeline's reference encoding (the real one runs in the tiny tests below): it records
    each image it encodes and gives `image * 2` as latents."""

    def __init__(self) -> None:
        self.encoded: list[torch.Tensor] = []

    def _encode_vae_image(self, image: torch.Tensor, generator: Any) -> torch.Tensor:
        self.encoded.append(image)
        return image * 2


def picture(value: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.full((1, 3, 1, 4, 4), value, dtype=dtype)


def encode(references: ReferenceLatents, pipe: FakePipe, *images: torch.Tensor) -> list[torch.Tensor]:
    """One edit's encodings of `images`, through the pipeline's own entry point."""
    with references.serving(pipe):
        return [pipe._encode_vae_image(image=image.clone(), generator=None) for image in images]


def test_an_image_seen_before_is_not_encoded_again_and_gets_the_same_latents() -> None:
    references, pipe = ReferenceLatents(keep=4), FakePipe()
    [first] = encode(references, pipe, picture(1))
    [again] = encode(references, pipe, picture(1))
    assert len(pipe.encoded) == 1
    assert again is first


def test_within_one_edit_each_distinct_image_is_encoded_once_even_when_nothing_is_kept() -> None:
    references, pipe = ReferenceLatents(keep=0), FakePipe()
    latents = encode(references, pipe, picture(1), picture(2), picture(1), picture(2))
    assert [float(image[0, 0, 0, 0, 0]) for image in pipe.encoded] == [1, 2]
    assert latents[2] is latents[0]
    assert latents[3] is latents[1]
    assert len(references) == 0
    encode(references, pipe, picture(1))
    assert len(pipe.encoded) == 3


def test_the_most_recently_used_images_are_kept() -> None:
    references, pipe = ReferenceLatents(keep=2), FakePipe()
    encode(references, pipe, picture(1))
    encode(references, pipe, picture(2))
    encode(references, pipe, picture(1))  # used again: now the newest
    encode(references, pipe, picture(3))  # pushes out 2, the least recently used
    assert len(references) == 2
    pipe.encoded.clear()
    encode(references, pipe, picture(1), picture(3))
    assert pipe.encoded == []
    encode(references, pipe, picture(2))
    assert len(pipe.encoded) == 1


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(picture(1, torch.float64), id="dtype"),
        pytest.param(torch.full((1, 3, 1, 4, 5), 1.0), id="shape"),
        pytest.param(picture(1).index_put_((torch.tensor(0),) * 5, torch.tensor(1.5)), id="one value"),
    ],
)
def test_only_an_identical_tensor_matches(other: torch.Tensor) -> None:
    references, pipe = ReferenceLatents(keep=4), FakePipe()
    encode(references, pipe, picture(1))
    encode(references, pipe, other)
    assert len(pipe.encoded) == 2


def test_the_pipelines_method_is_back_after_an_error() -> None:
    references, pipe = ReferenceLatents(keep=4), FakePipe()

    def failing_edit() -> None:
        with references.serving(pipe):
            pipe._encode_vae_image(image=picture(1), generator=None)
            raise RuntimeError("the denoising failed")

    with pytest.raises(RuntimeError, match="denoising"):
        failing_edit()
    assert "_encode_vae_image" not in vars(pipe)
    encode(references, pipe, picture(1))
    assert len(pipe.encoded) == 1  # what was encoded before the error is kept


def test_an_instance_method_of_the_pipeline_is_restored_as_it_was() -> None:
    references, pipe = ReferenceLatents(keep=4), FakePipe()
    own = pipe._encode_vae_image
    pipe._encode_vae_image = own  # type: ignore[method-assign]
    encode(references, pipe, picture(1))
    assert vars(pipe)["_encode_vae_image"] is own


def test_keeping_a_negative_number_is_refused() -> None:
    with pytest.raises(ValueError, match="0 or more"):
        ReferenceLatents(keep=-1)


# The engine, on the tiny pipeline -------------------------------------------------------------------------


def plan(engine: QwenEngine, azimuth: float) -> Any:
    return plan_for(engine, EditRequest(seed=3, pose=CameraPose(azimuth_deg=azimuth), **SIZE), IMAGES)


@pytest.mark.tiny
def test_the_next_angle_of_the_same_picture_skips_the_vae_encoder_and_gives_the_same_pixels(
    config: QwenConfig,
) -> None:
    kept, fresh = loaded(config), loaded(config, reference_cache=0)
    assert kept.info.options["reference_cache"] == 8
    encoder = ForwardCounter(kept.pipeline.vae.encoder)
    try:
        kept.edit(IMAGES, plan(kept, 0))
        assert encoder.calls == 1
        second = kept.edit(IMAGES, plan(kept, 90)).images[0]
        assert encoder.calls == 1
        kept.edit([make_image(80, 60, color=(0, 90, 0))], plan(kept, 90))
        assert encoder.calls == 2  # another picture is encoded
        kept.forget_references()
        kept.edit(IMAGES, plan(kept, 90))
        assert encoder.calls == 3
    finally:
        encoder.remove()
    assert second.tobytes() == fresh.edit(IMAGES, plan(fresh, 90)).images[0].tobytes()


@pytest.mark.tiny
def test_an_edit_after_an_orbit_of_the_same_picture_skips_the_vae_encoder(config: QwenConfig) -> None:
    engine = loaded(config)
    encoder = ForwardCounter(engine.pipeline.vae.encoder)
    try:
        views = engine.edit_views(IMAGES, [plan(engine, azimuth) for azimuth in (0, 90, 180)])
        assert (len(views), encoder.calls) == (3, 1)
        engine.edit(IMAGES, plan(engine, 270))
        assert encoder.calls == 1
    finally:
        encoder.remove()


@pytest.mark.tiny
def test_with_no_cache_every_edit_encodes_its_reference(config: QwenConfig) -> None:
    engine = loaded(config, reference_cache=0)
    encoder = ForwardCounter(engine.pipeline.vae.encoder)
    try:
        for azimuth in (0, 90, 180):
            engine.edit(IMAGES, plan(engine, azimuth))
        assert encoder.calls == 3
    finally:
        encoder.remove()


@pytest.mark.tiny
def test_the_setting_reaches_the_engine_and_a_negative_value_is_refused(
    monkeypatch: pytest.MonkeyPatch, config: QwenConfig
) -> None:
    from pydantic import ValidationError

    assert QwenEngine.from_settings(Settings()).config.reference_cache == 8
    monkeypatch.setenv("REANGLE_REFERENCE_CACHE", "0")
    assert QwenEngine.from_settings(Settings()).config.reference_cache == 0
    monkeypatch.setenv("REANGLE_REFERENCE_CACHE", "-1")
    with pytest.raises(ValidationError, match="reference_cache"):
        Settings()
    with pytest.raises(EngineError, match="REANGLE_REFERENCE_CACHE must be 0 or more"):
        QwenEngine(replace(config, reference_cache=-1))
