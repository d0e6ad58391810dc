from __future__ import annotations

import time

import pytest

from reangle.core.camera import CameraPose
from reangle.core.edit import EditRequest, GenerateRequest
from reangle.engine.base import create_engine, plan_for, plan_generation_for
from reangle.engine.fake import FakeEngine
from reangle.errors import Canceled, EngineError
from reangle.settings import Settings
from tests.conftest import make_image

IMAGES = [make_image()]


def run(engine: FakeEngine, request: EditRequest, **hooks):  # type: ignore[no-untyped-def]
    return engine.edit(IMAGES, plan_for(engine, request, IMAGES), **hooks)


def test_fake_is_created_without_torch(settings):  # type: ignore[no-untyped-def]
    assert isinstance(create_engine("fake", settings), FakeEngine)


def test_same_request_gives_the_same_pixels_and_seeds_change_them(settings):  # type: ignore[no-untyped-def]
    engine = FakeEngine(settings)
    first = run(engine, EditRequest(seed=3, num_outputs=2))
    again = run(engine, EditRequest(seed=3, num_outputs=2))
    assert [i.tobytes() for i in first.images] == [i.tobytes() for i in again.images]
    assert first.images[0].tobytes() != first.images[1].tobytes()
    single = run(engine, EditRequest(seed=4))
    assert single.images[0].tobytes() == first.images[1].tobytes()


def test_the_picture_shows_the_pose(settings):  # type: ignore[no-untyped-def]
    engine = FakeEngine(settings)
    front = run(engine, EditRequest(seed=1, pose=CameraPose(azimuth_deg=0)))
    side = run(engine, EditRequest(seed=1, pose=CameraPose(azimuth_deg=90)))
    assert front.images[0].tobytes() != side.images[0].tobytes()


def test_a_random_seed_is_reported_when_none_is_given(settings):  # type: ignore[no-untyped-def]
    assert isinstance(run(FakeEngine(settings), EditRequest()).seed, int)


def test_progress_is_reported_per_step_and_each_step_sleeps():
    engine = FakeEngine(Settings(fake_step_seconds=0.01))
    seen: list[tuple[int, int]] = []
    started = time.perf_counter()
    run(engine, EditRequest(steps=5), on_step=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
    assert time.perf_counter() - started >= 0.05


def test_fake_fail_prompt_raises_an_engine_error(settings):  # type: ignore[no-untyped-def]
    with pytest.raises(EngineError, match="on purpose"):
        run(FakeEngine(settings), EditRequest(prompt="please fake:fail now"))


def test_should_stop_cancels_without_an_image(settings):  # type: ignore[no-untyped-def]
    seen: list[int] = []
    with pytest.raises(Canceled):
        run(
            FakeEngine(settings),
            EditRequest(steps=8),
            on_step=lambda done, _total: seen.append(done),
            should_stop=lambda: len(seen) >= 3,
        )
    assert seen == [1, 2, 3]


def test_views_equal_separate_edits_and_progress_counts_all_steps(settings):  # type: ignore[no-untyped-def]
    engine = FakeEngine(settings)
    plans = [
        plan_for(engine, EditRequest(seed=k, steps=2 + k, pose=CameraPose(azimuth_deg=45 * k)), IMAGES)
        for k in range(3)
    ]
    seen: list[tuple[int, int]] = []
    views = engine.edit_views(IMAGES, plans, on_step=lambda done, total: seen.append((done, total)))
    assert [view.images[0].tobytes() for view in views] == [
        engine.edit(IMAGES, plan).images[0].tobytes() for plan in plans
    ]
    assert seen == [(done, 9) for done in range(1, 10)]


def test_should_stop_cancels_the_remaining_views(settings):  # type: ignore[no-untyped-def]
    engine = FakeEngine(settings)
    plans = [plan_for(engine, EditRequest(seed=k, steps=4), IMAGES) for k in range(3)]
    seen: list[int] = []
    with pytest.raises(Canceled):
        engine.edit_views(
            IMAGES, plans, on_step=lambda done, _total: seen.append(done), should_stop=lambda: len(seen) >= 6
        )
    assert seen == [1, 2, 3, 4, 5, 6]


def test_generate_gives_the_planned_count_and_size_deterministically(settings):  # type: ignore[no-untyped-def]
    engine = FakeEngine(settings)
    assert engine.info.can_generate
    plan = plan_generation_for(engine, GenerateRequest(prompt="a red kite", size="1K", num_outputs=3, seed=9))
    first, again = engine.generate([plan])[0], engine.generate([plan])[0]
    assert [image.size for image in first.images] == [(1024, 1024)] * 3
    assert [i.tobytes() for i in first.images] == [i.tobytes() for i in again.images]
    assert len({image.tobytes() for image in first.images}) == 3


def test_generate_counts_every_outputs_steps_and_a_stop_cancels_the_call(settings):  # type: ignore[no-untyped-def]
    engine = FakeEngine(settings)
    plans = [
        plan_generation_for(engine, GenerateRequest(prompt=f"view {k}", steps=2, num_outputs=2, width=64))
        for k in range(2)
    ]
    seen: list[tuple[int, int]] = []
    engine.generate(plans, on_step=lambda done, total: seen.append((done, total)))
    assert seen == [(done, 8) for done in range(1, 9)]
    seen.clear()
    with pytest.raises(Canceled):
        engine.generate(
            plans, on_step=lambda done, total: seen.append((done, total)), should_stop=lambda: len(seen) >= 5
        )
    assert len(seen) == 5
