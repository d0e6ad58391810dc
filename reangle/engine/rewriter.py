"""The prompt rewriter: a Qwen3-VL model looks at the input image(s) and turns the user's edit instruction
into one precise instruction before the edit model runs.

It only ever sees and changes the user's own words: `rewrite_prompt` takes the camera LoRA's phrase
(`<sks> front view eye-level shot medium shot`) off the front of a prompt, rewrites the rest and puts the
phrase back unchanged. It never fails a job: an empty, overlong, refused or malformed answer, an error or a
timeout gives back the original prompt, and the `Rewrite` says why. No torch at import.

Memory, bf16. Weights are parameters x 2 bytes (counted from each checkpoint's config). The KV cache costs
2 (K and V) x layers x KV heads x head dim (128) x 2 bytes per token; a rewrite holds at most about 2k tokens
(system prompt ~250, each image <= `image_area` = 448 x 448 px -> 196 tokens, up to 3 images, the
instruction <= 2,000 characters, `max_new_tokens` 160). The vision tower and prefill activations at that
length are tens of MB; allow ~1 GiB of workspace in all.

=========================  ======================  ====================  =======================  ===========
checkpoint                 params (vision tower)   bf16 weights          KV cache per token       KV at 2k
=========================  ======================  ====================  =======================  ===========
Qwen/Qwen3-VL-2B-Instruct  2.13 B (0.41 B)         4.26 GB (3.96 GiB)    28 x 8 x 128 -> 112 KiB  0.22 GiB
Qwen/Qwen3-VL-4B-Instruct  4.44 B (0.42 B)         8.88 GB (8.27 GiB)    36 x 8 x 128 -> 144 KiB  0.28 GiB
Qwen/Qwen3-VL-8B-Instruct  8.77 B (0.58 B)         17.53 GB (16.33 GiB)  36 x 8 x 128 -> 144 KiB  0.28 GiB
=========================  ======================  ====================  =======================  ===========

Beside the edit model on an 80 GB card (74.5 GiB usable; the bf16 edit pipeline peaks at 59.9 GiB at 1 MP,
49.3 GiB with the FP8 transformer, docs/benchmarks.md) there are ~14.6 GiB to spare: the 4B (~9.3 GiB with
workspace) fits and is the default; the 8B (~17.3 GiB) fits only beside the FP8 transformer or on a bigger
card. The rewriter runs before the edit, so only its weights stay resident while the edit model works.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from PIL import Image

from reangle.core.camera import MULTIPLE_ANGLES_2511, all_poses
from reangle.core.edit import MAX_PROMPT_CHARS
from reangle.engine.base import StopCheck
from reangle.engine.rewrite_answer import FallbackReason, Rejected, read_answer
from reangle.errors import EngineError

log = logging.getLogger("reangle.engine.rewriter")

#: The instruct checkpoints by size; a rewriter model setting takes one of these names, a hub id or a folder.
CHECKPOINTS = {
    "2b": "Qwen/Qwen3-VL-2B-Instruct",
    "4b": "Qwen/Qwen3-VL-4B-Instruct",
    "8b": "Qwen/Qwen3-VL-8B-Instruct",
}
#: Fits beside the bf16 edit pipeline on an 80 GB card (see the table above).
DEFAULT_CHECKPOINT = "4b"

SYSTEM_PROMPT = (
    "You rewrite instructions for an image-editing model. You see the input picture(s) and the user's "
    "instruction. Write one precise edit instruction that the editing model can follow: name the things to "
    "change as they appear in the picture (what they are, their colour, where they are), say exactly how "
    "each should change, and say what must stay as it is. Keep the user's intent and add nothing they did "
    "not ask for. Do not mention the camera, viewpoint, framing or zoom: those are set separately. If the "
    "user refers to pictures by number, keep those references. Write in the user's language. Answer with the "
    "instruction only, in one line of at most 60 words, without quotes, labels or explanations."
)
#: For a text-to-image model: the prompt describes the picture to make (any pictures given are references).
GENERATION_SYSTEM_PROMPT = (
    "You rewrite prompts for a text-to-image model. You see the user's prompt and any reference picture(s). "
    "Write one precise description of the image to make: the subject, its look (materials, colours, "
    "details), the setting, the lighting and the style. Keep everything the user asked for, add only "
    "details that make it concrete, and never contradict it. If the user refers to pictures by number, keep "
    "those references. Write in the user's language. Answer with the prompt only, in one paragraph of at "
    "most 80 words, without quotes, labels or explanations."
)
#: What the rewritten words are for: an edit of the job's pictures, or a new picture.
RewriteTask = Literal["edit", "generate"]

_TRIGGER = MULTIPLE_ANGLES_2511.trigger
_VOCAB_NAMES = sorted(
    (
        name
        for _, name in (
            *MULTIPLE_ANGLES_2511.azimuths,
            *MULTIPLE_ANGLES_2511.elevations,
            *MULTIPLE_ANGLES_2511.distances,
        )
    ),
    key=len,
    reverse=True,
)
#: The camera phrase at the front of a prompt: the trigger and the vocabulary's words after it (in any case,
#: as a user may type them).
_CAMERA_PHRASE = re.compile(
    rf"\s*{re.escape(_TRIGGER)}(?:\s+(?:{'|'.join(map(re.escape, _VOCAB_NAMES))})(?![\w-]))*", re.I
)
#: The user's words may take what the longest camera phrase leaves of the prompt limit.
_MAX_WORDS_CHARS = MAX_PROMPT_CHARS - max(len(pose.camera_phrase) for pose in all_poses()) - 1


@dataclass(frozen=True, kw_only=True)
class Rewrite:
    """What the rewriter made of one prompt. When `rewritten` is False, `prompt` is `original` unchanged and
    `reason` (with `detail`, for people) says why."""

    original: str
    prompt: str
    rewritten: bool
    reason: FallbackReason | None = None
    detail: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        """What a job records of its rewrite."""
        return {
            "original_prompt": self.original,
            "prompt": self.prompt,
            "rewritten": self.rewritten,
            "fallback_reason": self.reason,
            "detail": self.detail,
            "seconds": round(self.seconds, 3),
        }


def kept(original: str, reason: FallbackReason, detail: str, seconds: float = 0.0) -> Rewrite:
    """A fallback: the original prompt, and why it was not rewritten."""
    return Rewrite(
        original=original, prompt=original, rewritten=False, reason=reason, detail=detail, seconds=seconds
    )


def failure_detail(exc: BaseException) -> str:
    """What a job records of a rewriter's failure: the kind of error only. Its text may hold server paths or
    the model's internals; the log has it."""
    return f"rewriter failed: {type(exc).__name__}"


class PromptRewriter(Protocol):
    def rewrite(
        self,
        instruction: str,
        images: Sequence[Image.Image],
        *,
        task: RewriteTask = "edit",
        should_stop: StopCheck | None = None,
    ) -> Rewrite:
        """Rewrite the user's own words (never a camera phrase) against the input images, as an edit
        instruction or (`task="generate"`) as a text-to-image prompt. Never raises. Once `should_stop()` is
        true (the job was canceled) it gives up and keeps the words (`canceled`)."""


@dataclass(frozen=True)
class PromptParts:
    """A prompt as its camera phrase ("" when it has none) and the user's own words after it."""

    camera_phrase: str
    words: str

    def join(self, words: str) -> str:
        """The camera phrase, unchanged, then `words`: the order `CameraPose.prompt` writes."""
        words = words.strip()
        if self.camera_phrase and words:
            return f"{self.camera_phrase} {words}"
        return self.camera_phrase or words


def split_camera_phrase(prompt: str) -> PromptParts:
    """Take the camera LoRA's phrase (the trigger and the vocabulary's words after it) off the front."""
    match = _CAMERA_PHRASE.match(prompt)
    if match is None:
        return PromptParts("", prompt.strip())
    return PromptParts(match.group().strip(), prompt[match.end() :].strip())


def rewrite_prompt(rewriter: PromptRewriter, prompt: str, images: Sequence[Image.Image]) -> Rewrite:
    """Rewrite only the user's words of a full prompt; the camera phrase goes back unchanged. On a fallback
    the prompt is returned exactly as given."""
    parts = split_camera_phrase(prompt)
    result = rewriter.rewrite(parts.words, images)
    if not result.rewritten:
        return replace(result, original=prompt, prompt=prompt)
    return replace(result, original=prompt, prompt=parts.join(result.prompt))


@dataclass(frozen=True, kw_only=True)
class RewriteOptions:
    #: The answer is cut here; an answer cut short is "overlong".
    max_new_tokens: int = 160
    #: Wall clock for one rewrite, from the call to the last token; past it generation stops ("timeout").
    timeout_s: float = 20.0
    #: Longest answer taken, in characters (never more than the prompt limit leaves beside a camera phrase).
    max_chars: int = 800
    #: Images larger than this many pixels are scaled down (aspect kept) before the model sees them.
    image_area: int = 448 * 448
    system_prompt: str = SYSTEM_PROMPT
    generation_system_prompt: str = GENERATION_SYSTEM_PROMPT

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.max_chars < 1 or self.image_area < 1:
            raise ValueError("max_new_tokens, max_chars and image_area must be positive")
        if not self.timeout_s > 0:
            raise ValueError("timeout_s must be positive")


class QwenVLRewriter:
    """A `PromptRewriter` on a loaded Qwen3-VL model and its processor; one generation at a time.

    `generate_kwargs` go to every `model.generate` call (sampling settings, logits processors); `clock` is the
    timeout's clock (seconds), replaceable in tests.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        options: RewriteOptions | None = None,
        *,
        generate_kwargs: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model = model
        self.processor = processor
        self.options = options or RewriteOptions()
        self._generate_kwargs = dict(generate_kwargs or {})
        self._clock = clock
        self._lock = threading.Lock()

    def rewrite(
        self,
        instruction: str,
        images: Sequence[Image.Image],
        *,
        task: RewriteTask = "edit",
        should_stop: StopCheck | None = None,
    ) -> Rewrite:
        start = self._clock()
        words = instruction.strip()
        if not words:
            return kept(instruction, "skipped", "there are no words of the user's to rewrite")
        if _TRIGGER in words.lower():
            return kept(instruction, "skipped", f"the words hold the camera trigger {_TRIGGER}")
        max_chars = min(self.options.max_chars, _MAX_WORDS_CHARS)
        try:
            with self._lock:
                answer = self._generate(
                    words, images, task, deadline=start + self.options.timeout_s, should_stop=should_stop
                )
            text = read_answer(answer, original=words, max_chars=max_chars)
        except Rejected as rejected:
            return kept(instruction, rejected.reason, rejected.detail, self._clock() - start)
        except Exception as exc:  # the rewriter never fails a job: any error keeps the user's words
            log.warning("prompt rewriter failed, keeping the original prompt", exc_info=True)
            return kept(instruction, "error", failure_detail(exc), self._clock() - start)
        return Rewrite(original=instruction, prompt=text, rewritten=True, seconds=self._clock() - start)

    def _generate(
        self,
        words: str,
        images: Sequence[Image.Image],
        task: RewriteTask,
        *,
        deadline: float,
        should_stop: StopCheck | None,
    ) -> str:
        """The model's answer as text, or `Rejected` when generation was cut short."""
        import torch
        from transformers import StoppingCriteriaList

        generating = task == "generate"
        system_prompt = self.options.generation_system_prompt if generating else self.options.system_prompt
        text = self.processor.apply_chat_template(
            chat_messages(system_prompt, words, len(images), label="Prompt" if generating else "Instruction"),
            tokenize=False,
            add_generation_prompt=True,
        )
        pictures = [fit_image(image, self.options.image_area) for image in images]
        inputs = self.processor(text=[text], images=pictures or None, return_tensors="pt")
        inputs = inputs.to(self.model.device)
        if self._clock() >= deadline:  # the wait for the lock or the processor took it all
            raise Rejected("timeout", f"no time left for an answer within {self.options.timeout_s:g} s")
        stop = _Deadline(self._clock, deadline, should_stop)
        kwargs = {"max_new_tokens": self.options.max_new_tokens, "do_sample": False, **self._generate_kwargs}
        with torch.inference_mode():
            output = self.model.generate(**inputs, stopping_criteria=StoppingCriteriaList([stop]), **kwargs)
        tokens: list[int] = output[0, inputs["input_ids"].shape[1] :].tolist()
        ends = _end_token_ids(self.model, self.processor)
        end = next((index for index, token in enumerate(tokens) if token in ends), None)
        if stop.canceled:
            raise Rejected("canceled", "the job was canceled while its prompt was rewritten")
        if end is None:
            if stop.fired:
                raise Rejected("timeout", f"no complete answer within {self.options.timeout_s:g} s")
            if len(tokens) >= kwargs["max_new_tokens"]:
                raise Rejected("overlong", f"the answer did not end within {kwargs['max_new_tokens']} tokens")
            raise Rejected("malformed", "the answer stopped before its end")
        return str(self.processor.tokenizer.decode(tokens[:end], skip_special_tokens=True))


def chat_messages(
    system_prompt: str, words: str, image_count: int, *, label: str = "Instruction"
) -> list[dict[str, Any]]:
    """The conversation the model sees: the system prompt, then the pictures (numbered when there are several,
    as the edit model numbers them) and the user's words after `label`."""
    content: list[dict[str, str]] = []
    for index in range(image_count):
        if image_count > 1:
            content.append({"type": "text", "text": f"Picture {index + 1}:"})
        content.append({"type": "image"})
    content.append({"type": "text", "text": f"{label}: {words}"})
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": content}]


def fit_image(image: Image.Image, area: int) -> Image.Image:
    """`image` in RGB, scaled down (aspect kept) to at most `area` pixels."""
    image = image.convert("RGB")
    width, height = image.size
    if width * height <= area:
        return image
    scale = math.sqrt(area / (width * height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC)


class _Deadline:
    """A stopping criterion for `generate`: stop once the clock reaches `at` (`fired`) or `should_stop()` is
    true (`canceled`), and remember which."""

    def __init__(self, clock: Callable[[], float], at: float, should_stop: StopCheck | None = None) -> None:
        self._clock = clock
        self._at = at
        self._should_stop = should_stop
        self.fired = False
        self.canceled = False

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        self.canceled = self.canceled or (self._should_stop is not None and self._should_stop())
        self.fired = self.fired or self._clock() >= self._at
        stop = self.fired or self.canceled
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


def _end_token_ids(model: Any, processor: Any) -> set[int]:
    """The tokens that end the model's turn: the generation config's and the tokenizer's end-of-text."""
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids = set(configured) if isinstance(configured, list | tuple) else {configured}
    ids.add(getattr(processor.tokenizer, "eos_token_id", None))
    return {token for token in ids if isinstance(token, int)}


def resolve_checkpoint(model: str) -> str:
    """A size name ("2b", "4b", "8b") as its hub id; a hub id or a folder as it is."""
    return CHECKPOINTS.get(model.strip().lower(), model)


def load_rewriter(
    model: str = DEFAULT_CHECKPOINT,
    *,
    device: str = "auto",
    dtype: str = "auto",
    offline: bool = True,
    options: RewriteOptions | None = None,
) -> QwenVLRewriter:
    """Load a Qwen3-VL checkpoint (a size name, a hub id or a local folder) onto `device` ("auto": CUDA when
    there is one). `dtype` "auto" is bfloat16 on CUDA and float32 on a CPU. Call it once and keep the result.
    A checkpoint that cannot be loaded is an `EngineError` naming it."""
    import torch
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

    from reangle.engine.qwen import quiet_libraries

    quiet_libraries()
    source = resolve_checkpoint(model)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    if dtype not in ("bfloat16", "float16", "float32"):
        raise EngineError(f"the rewriter's dtype must be bfloat16, float16 or float32, got {dtype!r}")
    try:
        processor = AutoProcessor.from_pretrained(source, local_files_only=offline)
        loaded = Qwen3VLForConditionalGeneration.from_pretrained(
            source, dtype=getattr(torch, dtype), device_map=device, local_files_only=offline
        )
    except Exception as exc:
        raise EngineError(
            f"cannot load the prompt rewriter {source}: {exc}",
            hint=f"name a local Qwen3-VL folder, or one of {', '.join(CHECKPOINTS)} with the hub reachable",
        ) from exc
    return QwenVLRewriter(loaded.eval(), processor, options)


@dataclass
class LazyRewriter:
    """A `PromptRewriter` that builds its model on first use (or on `load()`), once. When building fails,
    every rewrite falls back with that error, and building is not tried again."""

    factory: Callable[[], PromptRewriter]
    _rewriter: PromptRewriter | None = field(default=None, init=False)
    _error: Exception | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def load(self) -> PromptRewriter:
        """The rewriter, built now if it is not yet; raises what building raised (for a check at start-up)."""
        with self._lock:
            if self._rewriter is None:
                if self._error is not None:
                    raise self._error
                try:
                    self._rewriter = self.factory()
                except Exception as exc:
                    self._error = exc
                    raise
            return self._rewriter

    def rewrite(
        self,
        instruction: str,
        images: Sequence[Image.Image],
        *,
        task: RewriteTask = "edit",
        should_stop: StopCheck | None = None,
    ) -> Rewrite:
        try:
            rewriter = self.load()
        except Exception as exc:
            log.warning("the prompt rewriter is unavailable, keeping the original prompt: %s", exc)
            return kept(instruction, "error", f"the rewriter is unavailable: {type(exc).__name__}")
        return rewriter.rewrite(instruction, images, task=task, should_stop=should_stop)
