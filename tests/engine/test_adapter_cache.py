"""The GPU adapter cache: a fake host that behaves as peft does (a deleted active adapter hands the role to
another, a loaded one comes in active) for the policy, then the tiny random-weight pipeline for the real
thing: the outputs of a job depend on its own LoRAs only, and a LoRA already loaded is not loaded again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from reangle.engine.adapter_cache import AdapterCache, AdapterUse
from reangle.engine.lora import load_lora, read_lora_file
from reangle.engine.lora_check import model_layers
from reangle.errors import EngineError, LoraLoadError
from tests.conftest import make_image
from tests.engine.lora_support import TARGETS, tiny_pipe, write_lora

# The policy, on a fake host ---------------------------------------------------------------------------------


class FakeHost:
    """Keeps adapters as peft does, and records every call."""

    def __init__(self, *own: str) -> None:
        self.adapters: dict[str, str] = dict.fromkeys(own, "own")
        self.active: list[tuple[str, float]] = [(name, 1.0) for name in own]
        self.enabled = True
        self.calls: list[tuple[str, Any]] = []

    def load_lora_weights(self, path: Any, /, **kwargs: Any) -> None:
        self.calls.append(("load", kwargs["adapter_name"]))
        self.adapters[kwargs["adapter_name"]] = str(path)
        self.active = [(kwargs["adapter_name"], 1.0)]

    def set_adapters(self, adapter_names: list[str], adapter_weights: list[float]) -> None:
        self.calls.append(("set", list(zip(adapter_names, adapter_weights, strict=True))))
        assert set(adapter_names) <= set(self.adapters)
        self.active = list(zip(adapter_names, adapter_weights, strict=True))

    def delete_adapters(self, adapter_names: list[str]) -> None:
        self.calls.append(("delete", list(adapter_names)))
        for name in adapter_names:
            del self.adapters[name]
        self.active = [(name, weight) for name, weight in self.active if name in self.adapters]
        if not self.active and self.adapters:  # peft: another adapter takes the deleted one's place
            self.active = [(next(iter(self.adapters)), 1.0)]

    def get_list_adapters(self) -> dict[str, list[str]]:
        return {"transformer": list(self.adapters)} if self.adapters else {}

    def enable_lora(self) -> None:
        self.enabled = True

    def disable_lora(self) -> None:
        self.calls.append(("disable", None))
        self.enabled = False

    def running(self) -> list[tuple[str, float]]:
        """The adapters a forward would apply."""
        return self.active if self.enabled else []

    def loads(self) -> list[str]:
        return [name for call, name in self.calls if call == "load"]


def extra(name: str, weight: float = 1.0) -> AdapterUse:
    return AdapterUse(name=name, weight=weight, path=Path(f"/cache/{name}.safetensors"))


OWN = AdapterUse(name="angles", weight=0.9)


def test_a_job_runs_exactly_its_adapters_and_the_next_job_with_the_same_lora_loads_nothing() -> None:
    host = FakeHost("angles")
    cache = AdapterCache(host, capacity=4, pinned=["angles"])
    first = cache.activate([OWN, extra("a", 0.5)])
    assert first.loaded == ("a",)
    assert host.running() == [("angles", 0.9), ("a", 0.5)]
    assert cache.activate([OWN]).loaded == ()
    assert host.running() == [("angles", 0.9)]
    again = cache.activate([OWN, extra("a", 0.5)])
    assert (again.loaded, again.unloaded) == ((), ())
    assert host.loads() == ["a"]
    assert host.running() == [("angles", 0.9), ("a", 0.5)]


def test_the_least_recently_used_extras_are_unloaded_past_the_capacity_and_the_own_ones_never() -> None:
    host = FakeHost("angles", "lightning")
    cache = AdapterCache(host, capacity=2, pinned=["angles", "lightning"])
    cache.activate([extra("a")])
    cache.activate([extra("b")])
    cache.activate([extra("a")])  # b is now the least recently used
    activation = cache.activate([OWN, extra("c", 0.3)])
    assert (activation.loaded, activation.unloaded) == (("c",), ("b",))
    assert cache.extras == ("a", "c")
    assert sorted(host.adapters) == ["a", "angles", "c", "lightning"]
    assert host.running() == [("angles", 0.9), ("c", 0.3)]  # not a (peft's pick after deleting b)


def test_a_job_without_adapters_runs_none_after_one_with() -> None:
    host = FakeHost("angles")
    cache = AdapterCache(host, capacity=1, pinned=["angles"])
    cache.activate([OWN, extra("a")])
    activation = cache.activate([])
    assert activation.active == ()
    assert host.running() == []
    cache.activate([extra("b")])  # deletes a (peft would pick angles as active): the job runs b only
    assert host.running() == [("b", 1.0)]
    assert host.enabled


def test_an_unchanged_selection_is_not_switched_again_and_a_new_weight_is() -> None:
    host = FakeHost("angles")
    cache = AdapterCache(host, capacity=2, pinned=["angles"])
    assert cache.activate([OWN, extra("a")]).switched
    assert not cache.activate([OWN, extra("a")]).switched
    assert cache.activate([OWN, extra("a", 0.4)]).switched
    assert host.running() == [("angles", 0.9), ("a", 0.4)]
    cache.forget()  # e.g. the engine reloaded or baked: the next activation sets it again
    assert cache.activate([OWN, extra("a", 0.4)]).switched


def test_a_job_needing_more_than_the_capacity_keeps_them_for_its_run_and_the_next_job_trims() -> None:
    host = FakeHost()
    cache = AdapterCache(host, capacity=1)
    cache.activate([extra("a"), extra("b"), extra("c")])
    assert host.running() == [("a", 1.0), ("b", 1.0), ("c", 1.0)]
    activation = cache.activate([extra("c")])
    assert activation.unloaded == ("a", "b")
    assert cache.extras == ("c",)


def test_capacity_zero_keeps_nothing_beyond_the_job_that_used_it() -> None:
    host = FakeHost()
    cache = AdapterCache(host, capacity=0)
    cache.activate([extra("a")])
    assert cache.activate([]).unloaded == ("a",)
    assert host.adapters == {}


def test_a_failed_load_leaves_nothing_behind() -> None:
    host = FakeHost("angles")

    def half_loads(target: Any, name: str, path: Path) -> None:
        target.adapters[name] = str(path)
        raise LoraLoadError(f"{path} does not fit")

    cache = AdapterCache(host, capacity=2, pinned=["angles"], loader=half_loads)
    with pytest.raises(LoraLoadError):
        cache.activate([OWN, extra("a")])
    assert list(host.adapters) == ["angles"]
    assert cache.extras == ()
    cache.activate([OWN])
    assert host.running() == [("angles", 0.9)]


def test_an_adapter_gone_from_the_host_is_loaded_again() -> None:
    host = FakeHost()
    cache = AdapterCache(host, capacity=2)
    cache.activate([extra("a")])
    host.adapters.clear()  # a new pipeline
    assert cache.activate([extra("a")]).loaded == ("a",)


@pytest.mark.parametrize(
    ("uses", "message"),
    [
        ([AdapterUse(name="lightning", weight=1.0)], "adapter lightning is not loaded"),
        ([extra("a"), extra("a", 0.5)], "same adapter twice"),
        ([extra("a", float("inf"))], "not a finite number"),
    ],
)
def test_a_job_the_cache_cannot_run_is_an_engine_error(uses: list[AdapterUse], message: str) -> None:
    with pytest.raises(EngineError, match=message):
        AdapterCache(FakeHost("angles"), capacity=2, pinned=["angles"]).activate(uses)


# The tiny pipeline ------------------------------------------------------------------------------------------


@pytest.fixture
def pipe(monkeypatch: pytest.MonkeyPatch) -> Any:
    import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus as edit_plus

    monkeypatch.setattr(edit_plus, "VAE_IMAGE_SIZE", 32 * 32)
    return tiny_pipe()


def strict_loader(host: Any, name: str, path: Path) -> None:
    """What the qwen engine loads a file with: reangle's reader and strict loader."""
    load_lora(host, name, read_lora_file(path))


def run(pipe: Any) -> torch.Tensor:
    output = pipe(
        image=[make_image(32, 32)],
        prompt="a chair",
        width=32,
        height=32,
        num_inference_steps=2,
        true_cfg_scale=1.0,
        generator=torch.Generator().manual_seed(7),
        output_type="pt",
    ).images
    assert torch.isfinite(output).all()
    return output


@pytest.fixture
def lora_files(tmp_path: Path, pipe: Any) -> dict[str, Path]:
    layers = model_layers(pipe.transformer)
    shapes = {module: layers[module] for module in TARGETS}
    return {
        name: write_lora(tmp_path / f"{name}.safetensors", shapes, seed=seed)
        for seed, name in enumerate(("own", "a", "b"))
    }


@pytest.mark.tiny
@pytest.mark.filterwarnings("ignore:Already found a `peft_config`")
def test_each_job_gives_the_output_of_its_own_loras_alone(pipe: Any, lora_files: dict[str, Path]) -> None:
    bare = run(pipe)
    strict_loader(pipe, "own", lora_files["own"])  # the model's own LoRA, loaded with the pipeline
    cache = AdapterCache(pipe, capacity=2, pinned=["own"], loader=strict_loader)
    own = AdapterUse(name="own", weight=1.0)
    a, b = (AdapterUse(name=name, weight=0.8, path=lora_files[name]) for name in "ab")

    def job(*uses: AdapterUse) -> tuple[torch.Tensor, tuple[str, ...]]:
        activation = cache.activate(uses)
        assert pipe.get_active_adapters() == [use.name for use in uses] or not uses
        return run(pipe), activation.loaded

    base, _ = job(own)
    assert not torch.equal(base, bare)
    with_a, loaded_a = job(own, a)
    with_b, loaded_b = job(own, b)
    base_again, _ = job(own)
    with_b_again, loaded_b_again = job(own, b)
    with_a_again, loaded_a_again = job(own, a)
    none, _ = job()

    assert (loaded_a, loaded_b) == (("a",), ("b",))
    assert loaded_b_again == loaded_a_again == ()  # the second job with a LoRA loads nothing
    assert not torch.equal(with_a, base)
    assert not torch.equal(with_b, base)
    assert not torch.equal(with_a, with_b)
    assert torch.equal(base_again, base)  # nothing of a or b left active
    assert torch.equal(with_b_again, with_b)
    assert torch.equal(with_a_again, with_a)
    assert torch.equal(none, bare)


@pytest.mark.tiny
def test_an_unloaded_lora_loads_again_to_the_same_output(pipe: Any, lora_files: dict[str, Path]) -> None:
    cache = AdapterCache(pipe, capacity=1, loader=strict_loader)
    a, b = (AdapterUse(name=name, weight=1.0, path=lora_files[name]) for name in "ab")
    cache.activate([a])
    with_a = run(pipe)
    assert cache.activate([b]).unloaded == ("a",)
    assert pipe.get_list_adapters() == {"transformer": ["b"]}
    again = cache.activate([a])
    assert (again.loaded, again.unloaded) == (("a",), ("b",))
    assert torch.equal(run(pipe), with_a)
