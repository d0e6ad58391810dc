from __future__ import annotations

from pathlib import Path

import pytest

from reangle.engine.qwen import QwenConfig
from reangle.engine.tiny import tiny_engine
from reangle.settings import Settings


@pytest.fixture(scope="module")
def config(cache_dir: Path) -> QwenConfig:
    """The tiny engine's config, with the baseline options (what `auto` gives on a CPU, said outright)."""
    return tiny_engine(Settings(cache_dir=cache_dir, compile="off", fuse_loras="off")).config
