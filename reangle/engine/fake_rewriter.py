"""The fake engine's prompt rewriter: no model, a fixed rewrite, so that the API's handling of rewrites can
be seen without Qwen3-VL. The real rewriter (`reangle.engine.rewriter`) is tested on a tiny Qwen3-VL."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from reangle.engine.base import StopCheck
from reangle.engine.rewriter import Rewrite, RewriteTask, kept

#: Words that make the fake rewriter fall back, as the real one does on a refusal.
REFUSE = "[refuse]"


class FakeRewriter:
    def rewrite(
        self,
        instruction: str,
        images: Sequence[Image.Image],
        *,
        task: RewriteTask = "edit",
        should_stop: StopCheck | None = None,  # answers at once: nothing to stop
    ) -> Rewrite:
        if REFUSE in instruction:
            return kept(instruction, "refused", "the fake rewriter refuses prompts with [refuse]")
        sizes = ", ".join(f"{image.width}x{image.height}" for image in images) or "no image"
        prompt = f"{instruction.strip()} ({'in detail' if task == 'generate' else 'precisely'}, for {sizes})"
        return Rewrite(original=instruction, prompt=prompt, rewritten=True)
