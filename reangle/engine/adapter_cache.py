"""Which LoRA adapters stay loaded on the GPU, and exactly which are active for each job.

The model's own adapters (Lightning, angles) are pinned: loaded with the pipeline, never unloaded here. A
request's extra LoRAs are loaded on first use under a name derived from their content (`ResolvedLora.adapter`)
and kept in an LRU of `capacity` names, so that the next job with the same LoRA loads nothing; past the
capacity the least recently used extras not needed by the job are deleted before anything new is loaded
(a job needing more extras than the capacity keeps them all for its run; the next job trims).

Every `activate` leaves the job's adapters, with its weights, as the only active ones: peft activates
another adapter when the active one is deleted, and a loaded adapter may become active, so the cache sets
the active list after any load or delete, and disables LoRA layers altogether for a job without adapters.
When nothing changed since the last job the switch is skipped (peft visits every LoRA layer on a switch).

Engine-agnostic: it drives a `AdapterHost`, which diffusers' LoRA-loading pipelines are. Not thread-safe on
its own: the engine calls it under its one-job-at-a-time lock.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from reangle.errors import EngineError


class AdapterHost(Protocol):
    """What the cache needs of a pipeline: diffusers' `LoraBaseMixin` methods, as they are spelled there."""

    def load_lora_weights(self, pretrained_model_name_or_path_or_dict: Any, /, **kwargs: Any) -> None: ...

    def set_adapters(self, adapter_names: list[str], adapter_weights: list[float]) -> None: ...

    def delete_adapters(self, adapter_names: list[str]) -> None: ...

    def get_list_adapters(self) -> dict[str, list[str]]: ...

    def enable_lora(self) -> None: ...

    def disable_lora(self) -> None: ...


#: Loads the file at `path` into `host` as adapter `name` (and raises if it cannot).
Loader = Callable[[AdapterHost, str, Path], None]


def load_with_diffusers(host: AdapterHost, name: str, path: Path) -> None:
    """The plain diffusers loader. The qwen engine passes reangle's strict one (`engine.lora.load_lora`),
    which reads more file formats right and refuses a file that matches no layer."""
    host.load_lora_weights(str(path), adapter_name=name)


@dataclass(frozen=True)
class AdapterUse:
    """One adapter a job runs, at `weight`. `path` is the file of a request's LoRA, None for the model's own
    (pinned) adapters, which must be loaded already."""

    name: str
    weight: float
    path: Path | None = None


@dataclass(frozen=True)
class Activation:
    """What one `activate` did."""

    loaded: tuple[str, ...]
    unloaded: tuple[str, ...]
    #: The active adapters and weights, in the job's order; empty means LoRA layers are disabled.
    active: tuple[tuple[str, float], ...]
    #: Whether the active set was switched (False: it was already the job's).
    switched: bool


class AdapterCache:
    def __init__(
        self,
        host: AdapterHost,
        *,
        capacity: int,
        pinned: Collection[str] = (),
        loader: Loader = load_with_diffusers,
    ) -> None:
        if capacity < 0:
            raise ValueError(f"the adapter capacity must be 0 or more, not {capacity}")
        self.host = host
        self.capacity = capacity
        self.pinned = frozenset(pinned)
        self._loader = loader
        self._extras: OrderedDict[str, None] = OrderedDict()  # least recently used first
        #: The (name, weight) pairs active in the host; None when unknown.
        self._selection: tuple[tuple[str, float], ...] | None = None

    @property
    def extras(self) -> tuple[str, ...]:
        """The request adapters kept loaded, least recently used first."""
        return tuple(self._extras)

    def forget(self) -> None:
        """The host's adapters changed behind the cache's back (a reload, a bake): check them all again."""
        self._selection = None

    def activate(self, uses: Sequence[AdapterUse]) -> Activation:
        """Make `uses` the host's active adapters, exactly, loading and unloading what it takes."""
        _check_uses(uses)
        present = self._present()
        for name in [name for name in self._extras if name not in present]:
            del self._extras[name]  # gone from the host (deleted by someone else, or a new pipeline)
        for use in uses:
            if (use.path is None or use.name in self.pinned) and use.name not in present:
                raise EngineError(f"the adapter {use.name} is not loaded in the pipeline")
        wanted = {use.name for use in uses}
        extras = [use for use in uses if use.path is not None and use.name not in self.pinned]
        to_load = [use for use in extras if use.name not in present]
        unloaded = self._make_room(len(to_load), keep=wanted)
        loaded = []
        for use in to_load:
            assert use.path is not None
            self._load(use.name, use.path)
            loaded.append(use.name)
        for use in extras:
            self._extras[use.name] = None
            self._extras.move_to_end(use.name)
        selection = tuple((use.name, use.weight) for use in uses)
        switched = selection != self._selection
        if switched:
            self._switch(selection, any_loaded=bool(present or loaded))
        return Activation(loaded=tuple(loaded), unloaded=tuple(unloaded), active=selection, switched=switched)

    def _present(self) -> set[str]:
        return {name for names in self.host.get_list_adapters().values() for name in names}

    def _make_room(self, new: int, *, keep: set[str]) -> list[str]:
        overflow = len(self._extras) + new - self.capacity
        evicted = [name for name in self._extras if name not in keep][: max(0, overflow)]
        if evicted:
            self._selection = None  # peft activates some other adapter when it deletes the active one
            self.host.delete_adapters(evicted)
            for name in evicted:
                del self._extras[name]
        return evicted

    def _load(self, name: str, path: Path) -> None:
        self._selection = None  # a new adapter may come in active
        try:
            self._loader(self.host, name, path)
        except BaseException:
            if name in self._present():  # half loaded: leave nothing of it behind
                self.host.delete_adapters([name])
            raise

    def _switch(self, selection: tuple[tuple[str, float], ...], *, any_loaded: bool) -> None:
        self._selection = None  # unknown until the switch is complete
        if selection:
            self.host.enable_lora()
            self.host.set_adapters([name for name, _ in selection], [weight for _, weight in selection])
        elif any_loaded:
            self.host.disable_lora()
        self._selection = selection


def _check_uses(uses: Sequence[AdapterUse]) -> None:
    names = [use.name for use in uses]
    if len(set(names)) != len(names):
        raise EngineError(f"a job cannot run the same adapter twice: {names}")
    for use in uses:
        if not math.isfinite(use.weight):
            raise EngineError(f"the weight of adapter {use.name} is not a finite number: {use.weight}")
