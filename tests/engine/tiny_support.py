"""What the tests of the qwen engine share: the tiny pipeline's inputs, engines built with changed options, a
fake compile backend that counts graphs, and a counter of module forwards."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from reangle.engine.qwen import QwenConfig, QwenEngine
from tests.conftest import make_image

IMAGES = [make_image(80, 60)]
SIZE = {"width": 64, "height": 48}


def loaded(config: QwenConfig, **changes: Any) -> QwenEngine:
    """A loaded tiny engine with `changes` to its config."""
    engine = QwenEngine(replace(config, **changes))
    engine.load()
    return engine


class CountingBackend:
    """A fake torch.compile backend: records each graph dynamo hands it and runs the graph as traced."""

    def __init__(self) -> None:
        self.graphs: list[Any] = []

    def __call__(self, graph_module: Any, _example_inputs: Any) -> Any:
        self.graphs.append(graph_module)
        return graph_module.forward


class ForwardCounter:
    """Counts the forward calls of a module with a hook, and removes the hook afterwards."""

    def __init__(self, module: Any) -> None:
        self.calls = 0
        self._handle = module.register_forward_hook(self._count)

    def _count(self, *_args: Any) -> None:
        self.calls += 1

    def remove(self) -> None:
        self._handle.remove()
