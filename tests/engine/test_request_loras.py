"""A request's own LoRAs in the qwen engine, for edits and generations, on the tiny pipelines (CPU): each job
runs exactly its own adapters (the outputs equal a fresh engine's running that job alone), loaded LoRAs are
kept in an LRU of `lora_gpu_capacity`, the model's own adapters are never unloaded, and a file that matches
nothing is a clear error that leaves nothing behind."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from reangle.core.edit import ANGLES, LIGHTNING_4STEP, LIGHTNING_8STEP, EditRequest, GenerateRequest, LoraUse
from reangle.engine.base import plan_for, plan_generation_for
from reangle.engine.lora_check import model_layers
from reangle.engine.qwen import QwenConfig, QwenEngine
from reangle.errors import LoraLoadError
from tests.engine.lora_support import TARGETS, write_lora
from tests.engine.tiny_support import IMAGES, SIZE, CountingBackend, loaded

pytestmark = [pytest.mark.tiny, pytest.mark.filterwarnings("ignore:Already found a `peft_config`")]
#: Layers the model's own tiny LoRAs do not touch: a request's LoRA there adds new LoRA layers.
NEW_LAYERS = ("transformer_blocks.0.txt_mlp.net.0.proj", "transformer_blocks.1.txt_mlp.net.0.proj")

#: The compiled engine's target area: a smaller warm-up than the tiny engine's 128 x 128, still not SIZE.
WARM_UP_AREA = 80 * 80

Job = Callable[[QwenEngine, tuple[LoraUse, ...]], bytes]


@pytest.fixture(scope="module")
def lora_files(config: QwenConfig, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    layers = model_layers(loaded(config).pipeline.transformer)
    folder = tmp_path_factory.mktemp("request-loras")
    return {
        "x": write_lora(folder / "x.safetensors", {name: layers[name] for name in TARGETS}, seed=1),
        "y": write_lora(folder / "y.safetensors", {name: layers[name] for name in NEW_LAYERS}, seed=2),
        "z": write_lora(folder / "z.safetensors", {name: layers[name] for name in TARGETS}, seed=3),
    }


def use(files: dict[str, Path], name: str, weight: float = 0.8) -> LoraUse:
    return LoraUse(adapter=f"lora_{name}", weight=weight, path=files[name])


def edit_job(engine: QwenEngine, extras: tuple[LoraUse, ...]) -> bytes:
    plan = plan_for(engine, EditRequest(seed=1, steps=2, extra_loras=extras, **SIZE), IMAGES)
    return engine.edit(IMAGES, plan).images[0].tobytes()


def generate_job(engine: QwenEngine, extras: tuple[LoraUse, ...]) -> bytes:
    request = GenerateRequest(prompt="a teapot", seed=1, steps=2, extra_loras=extras, **SIZE)
    return engine.generate([plan_generation_for(engine, request)])[0].images[0].tobytes()


JOBS = [pytest.param(edit_job, id="edit"), pytest.param(generate_job, id="generate")]


def adapters(engine: QwenEngine, job: Job) -> set[str]:
    pipe = engine.pipeline if job is edit_job else engine.text_to_image_pipeline
    return set(pipe.get_list_adapters()["transformer"])


@pytest.mark.parametrize("job", JOBS)
def test_jobs_in_a_row_each_give_what_they_give_alone(config, lora_files, job):  # type: ignore[no-untyped-def]
    x, y = use(lora_files, "x"), use(lora_files, "y", 1.2)
    sequence = [(x,), (y,), (), (x, y), (x,)]
    shared = loaded(config)
    in_a_row = [job(shared, extras) for extras in sequence]
    alone = {extras: job(loaded(config), extras) for extras in dict.fromkeys(sequence)}
    assert in_a_row == [alone[extras] for extras in sequence]
    assert len(set(alone.values())) == 4  # each LoRA, and the two together, change the picture


@pytest.mark.parametrize("job", JOBS)
def test_a_kept_lora_loads_once_and_the_least_recently_used_goes_first(config, lora_files, job):  # type: ignore[no-untyped-def]
    engine = loaded(config, lora_gpu_capacity=2)
    x, y, z = (use(lora_files, name) for name in "xyz")
    first = job(engine, (x,))
    cache = engine.adapters if job is edit_job else engine.text_to_image_adapters
    assert cache is not None
    loads: list[str] = []
    original = cache._loader

    def counted(host: Any, name: str, path: Path) -> None:
        loads.append(name)
        original(host, name, path)

    cache._loader = counted
    assert job(engine, (x,)) == first
    assert loads == []  # the second job with the same LoRA loads nothing
    job(engine, (y,))
    job(engine, (x,))  # y is now the least recently used
    job(engine, (z,))
    assert loads == ["lora_y", "lora_z"]
    assert cache.extras == ("lora_x", "lora_z")
    own = {LIGHTNING_4STEP, LIGHTNING_8STEP} | ({ANGLES} if job is edit_job else set())
    assert adapters(engine, job) == own | {"lora_x", "lora_z"}
    assert job(engine, (x,)) == first


@pytest.mark.parametrize("job", JOBS)
def test_with_no_capacity_the_models_own_adapters_stay_and_the_requests_go(config, lora_files, job):  # type: ignore[no-untyped-def]
    engine = loaded(config, lora_gpu_capacity=0)
    plain = job(engine, ())
    job(engine, (use(lora_files, "x"),))
    assert job(engine, ()) == plain
    own = {LIGHTNING_4STEP, LIGHTNING_8STEP} | ({ANGLES} if job is edit_job else set())
    assert adapters(engine, job) == own


@pytest.mark.parametrize("job", JOBS)
def test_a_lora_matching_no_layer_fails_and_leaves_nothing(config, lora_files, tmp_path, job):  # type: ignore[no-untyped-def]
    stray = write_lora(tmp_path / "stray.safetensors", {"not_a_block.proj": (16, 16)})
    engine = loaded(config)
    plain = job(engine, ())
    with pytest.raises(LoraLoadError, match=r"stray\.safetensors matched no weights"):
        job(engine, (LoraUse(adapter="lora_stray", weight=1.0, path=stray),))
    assert "lora_stray" not in adapters(engine, job)
    assert job(engine, ()) == plain
    wrong_shape = write_lora(tmp_path / "wide.safetensors", {TARGETS[0]: (32, 48)})
    with pytest.raises(LoraLoadError, match="shapes differ"):
        job(engine, (LoraUse(adapter="lora_wide", weight=1.0, path=wrong_shape),))
    assert job(engine, (use(lora_files, "x"),)) == job(loaded(config), (use(lora_files, "x"),))


def pixels(picture: bytes) -> np.ndarray:
    return np.frombuffer(picture, dtype=np.uint8).astype(np.int16)


@pytest.mark.parametrize("job", JOBS)
def test_baked_default_loras_and_a_requests_lora(config, lora_files, job):  # type: ignore[no-untyped-def]
    extras = (use(lora_files, "x"), use(lora_files, "y"))
    fused = loaded(config, fuse_loras="default")
    baked = fused.baked_loras if job is edit_job else None
    actual = job(fused, extras)
    if job is generate_job:
        assert fused._text_to_image is not None
        baked = fused._text_to_image.baked
    assert baked == ({LIGHTNING_4STEP: 1.0, ANGLES: 1.0} if job is edit_job else {LIGHTNING_4STEP: 1.0})
    assert np.abs(pixels(actual) - pixels(job(loaded(config), extras))).max() <= 2


@pytest.fixture
def fresh_dynamo() -> Iterator[None]:
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.usefixtures("fresh_dynamo")
def test_compiled_blocks_take_a_requests_new_lora_layers(config, lora_files):  # type: ignore[no-untyped-def]
    """New LoRA layers change the blocks' structure: dynamo compiles them again (on a GPU that costs time,
    see docs/text-to-image.md), and the pixels stay the eager ones."""
    backend = CountingBackend()
    # a small target area makes the load's warm-up edit and generation small; the jobs give their own size
    compiled = loaded(config, compile="blocks", compile_backend=backend, target_area=WARM_UP_AREA)
    eager = loaded(config)
    graphs = len(backend.graphs)
    y = (use(lora_files, "y"),)
    for job in (edit_job, generate_job):
        assert np.abs(pixels(job(compiled, y)) - pixels(job(eager, y))).max() <= 1, job
    assert len(backend.graphs) > graphs
    assert compiled.info.options["compile"] == "blocks"


def test_fp8_takes_a_lora_on_the_layers_its_own_loras_hold_and_says_why_not_elsewhere(config, lora_files):  # type: ignore[no-untyped-def]
    engine = loaded(config, quantize="fp8")
    plain = edit_job(engine, ())
    assert edit_job(engine, (use(lora_files, "x"),)) != plain
    with pytest.raises(LoraLoadError, match="REANGLE_QUANTIZE=fp8"):
        edit_job(engine, (use(lora_files, "y"),))
    assert edit_job(engine, ()) == plain


def test_a_request_lora_named_like_an_own_adapter_is_refused(config, lora_files):  # type: ignore[no-untyped-def]
    with pytest.raises(Exception, match="twice"):
        edit_job(loaded(config), (replace(use(lora_files, "x"), adapter=LIGHTNING_4STEP),))
