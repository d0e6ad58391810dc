"""A tiny random-weight Qwen3-VL prompt rewriter built in process, fully offline: the real transformers
processor (the tiny engine's byte-level tokenizer and a real image processor) and the real `generate`, in
milliseconds on a CPU.

Its own answers are random bytes, so every rewrite it makes falls back (malformed). `ScriptedAnswers` has it
write a chosen answer through the same generate loop, so that tests can take each path of the rewriter.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from reangle.engine.rewriter import QwenVLRewriter, RewriteOptions
from reangle.engine.tiny import SPECIAL_TOKENS, _build_tokenizer

#: Qwen's chat format, for the messages the rewriter sends (a system text, then images and texts); the real
#: checkpoints bring their own template.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
#: Each side of an image is a multiple of 32 (16-px patches, merged 2 x 2): 1 to 4 image tokens per image.
TINY_IMAGE_PIXELS = (32 * 32, 64 * 64)
TINY_OPTIONS = RewriteOptions(max_new_tokens=96, timeout_s=60.0, image_area=TINY_IMAGE_PIXELS[1])


def build_tiny_qwen_vl(*, num_layers: int = 2) -> tuple[Any, Any]:
    """A seeded random-weight `Qwen3VLForConditionalGeneration` (`num_layers` text layers, hidden size 16) and
    its `Qwen3VLProcessor`, built without files or network."""
    import torch
    from transformers import (
        Qwen2VLImageProcessor,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    tokenizer = _build_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(
            patch_size=16,
            merge_size=2,
            temporal_patch_size=2,
            min_pixels=TINY_IMAGE_PIXELS[0],
            max_pixels=TINY_IMAGE_PIXELS[1],
            image_mean=[0.5] * 3,
            image_std=[0.5] * 3,
        ),
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(),
        chat_template=CHAT_TEMPLATE,
    )
    config = Qwen3VLConfig(
        text_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": num_layers,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 8,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 4096,
            # head_dim / 2 = 4 rotary pairs over (time, height, width), interleaved as in Qwen3-VL
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1000000.0,
                "mrope_section": [2, 1, 1],
                "mrope_interleaved": True,
            },
        },
        vision_config={
            "depth": 2,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_heads": 2,
            "out_hidden_size": 16,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "num_position_embeddings": 16,  # a 4 x 4 grid of learned positions, interpolated
            "deepstack_visual_indexes": [1],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(0)
    model = Qwen3VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    return model, processor


def tiny_rewriter(
    options: RewriteOptions = TINY_OPTIONS, *, scripted: ScriptedAnswers | None = None, **kwargs: Any
) -> QwenVLRewriter:
    """The rewriter on a fresh tiny model; with `scripted`, the model writes the scripted answers."""
    model, processor = build_tiny_qwen_vl()
    if scripted is not None:
        scripted.bind(processor.tokenizer)
        kwargs["generate_kwargs"] = {"logits_processor": [scripted], **kwargs.get("generate_kwargs", {})}
    return QwenVLRewriter(model, processor, options, **kwargs)


def write_tiny_rewriter(directory: Path) -> Path:
    """Save a tiny model and its processor as a checkpoint folder, for `load_rewriter`."""
    model, processor = build_tiny_qwen_vl()
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


class ScriptedAnswers:
    """A logits processor for `generate` that has the model write `answer_for(prompt)` token by token and then
    end its turn (`prompt` is the decoded input, special tokens included); None lets the model write freely.
    Every forward pass still runs: only the choice of each next token is scripted. One sequence per call.

    `prompts` holds each call's prompt and `steps` counts the tokens it chose, for tests.
    """

    def __init__(self, answer_for: Callable[[str], str | None]) -> None:
        self._answer_for = answer_for
        self._tokenizer: Any = None
        self._start = 0
        self._last = -1
        self._script: list[int] | None = None
        self.prompts: list[str] = []
        self.steps = 0

    def bind(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        length = int(input_ids.shape[1])
        if self._last < 0 or length <= self._last:  # the first step of a new generate call
            prompt = self._tokenizer.decode(input_ids[0].tolist())
            self.prompts.append(prompt)
            answer = self._answer_for(prompt)
            end = self._tokenizer.convert_tokens_to_ids("<|im_end|>")
            self._start = length
            tokens = None if answer is None else self._tokenizer.encode(answer, add_special_tokens=False)
            self._script = None if tokens is None else [*tokens, end]
        self._last = length
        if self._script is None:
            return scores
        token = self._script[min(length - self._start, len(self._script) - 1)]
        self.steps += 1
        forced = torch.full_like(scores, float("-inf"))
        forced[:, token] = 0.0
        return forced
