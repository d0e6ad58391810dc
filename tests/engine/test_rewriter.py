"""The prompt rewriter on a tiny random-weight Qwen3-VL, through the real transformers processor and
`generate`.

A random model writes random bytes, so most tests script its answer (`ScriptedAnswers` picks each next token;
the processor, the vision tower and every forward pass still run) to reach each path: a rewrite, and each
reason to keep the original prompt.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from reangle.compose import prompt_rewriter
from reangle.core.camera import CameraPose, all_poses
from reangle.core.edit import EditRequest, SizeLimits, plan_edit
from reangle.engine.base import create_engine
from reangle.engine.rewrite_answer import Rejected, read_answer
from reangle.engine.rewriter import (
    CHECKPOINTS,
    GENERATION_SYSTEM_PROMPT,
    SYSTEM_PROMPT,
    LazyRewriter,
    PromptParts,
    PromptRewriter,
    QwenVLRewriter,
    Rewrite,
    RewriteOptions,
    RewriteTask,
    fit_image,
    load_rewriter,
    resolve_checkpoint,
    rewrite_prompt,
    split_camera_phrase,
)
from reangle.engine.tiny_rewriter import (
    TINY_OPTIONS,
    ScriptedAnswers,
    build_tiny_qwen_vl,
    tiny_rewriter,
    write_tiny_rewriter,
)
from reangle.errors import EngineError
from reangle.settings import Settings
from tests.conftest import make_image

BACK = CameraPose(azimuth_deg=180, elevation_deg=30, distance_factor=0.6)
PHRASE = BACK.camera_phrase  # "<sks> back view elevated shot close-up"
PROMPT = BACK.prompt("make it red")
IMAGE = make_image(40, 30)
ANSWER = "Paint the red block bright blue and keep the striped background as it is."


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, Any]:
    return build_tiny_qwen_vl()


class RecordingProcessor:
    """The real processor, recording the text and images of each call."""

    def __init__(self, processor: Any) -> None:
        self._processor = processor
        self.calls: list[tuple[list[str], list[Image.Image] | None]] = []

    def __call__(self, *, text: list[str], images: list[Image.Image] | None, **kwargs: Any) -> Any:
        self.calls.append((text, images))
        return self._processor(text=text, images=images, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._processor, name)


@pytest.fixture
def vision_inputs(tiny: tuple[Any, Any]) -> Iterator[list[torch.Tensor]]:
    """The pixel values the model's vision tower is run on, one entry per run."""
    seen: list[torch.Tensor] = []
    handle = tiny[0].model.visual.register_forward_pre_hook(
        lambda _module, args, _kwargs: seen.append(args[0].clone()), with_kwargs=True
    )
    yield seen
    handle.remove()


def rewriter(
    tiny: tuple[Any, Any],
    answer: str | Callable[[str], str | None] | None,
    *extra_processors: Any,
    clock: Callable[[], float] | None = None,
    **options: Any,
) -> tuple[QwenVLRewriter, ScriptedAnswers, RecordingProcessor]:
    """A rewriter on the shared tiny model whose answers are scripted (`None`: the model's own)."""
    model, processor = tiny
    scripted = ScriptedAnswers(answer if callable(answer) else lambda _prompt: answer)
    scripted.bind(processor.tokenizer)
    recording = RecordingProcessor(processor)
    built = QwenVLRewriter(
        model,
        recording,
        RewriteOptions(**{"max_new_tokens": TINY_OPTIONS.max_new_tokens, "image_area": 64 * 64, **options}),
        generate_kwargs={"logits_processor": [scripted, *extra_processors]},
        **({"clock": clock} if clock else {}),
    )
    return built, scripted, recording


def instruction_of(prompt: str) -> str:
    found = re.search(r"Instruction: (.*?)<\|im_end\|>", prompt, re.S)
    assert found, prompt
    return found.group(1)


@pytest.mark.tiny
def test_a_rewrite_comes_from_generate_and_the_camera_phrase_goes_back_unchanged(
    tiny: tuple[Any, Any], vision_inputs: list[torch.Tensor]
) -> None:
    built, scripted, recording = rewriter(tiny, ANSWER)
    plan = plan_edit(
        EditRequest(prompt="make it red", pose=BACK), [IMAGE.size], limits=SizeLimits(), target_area=512 * 512
    )

    result = rewrite_prompt(built, plan.prompt, [IMAGE])

    assert result.rewritten
    assert result.reason is None
    assert result.original == plan.prompt == PROMPT
    assert result.prompt == f"{PHRASE} {ANSWER}"
    assert scripted.steps == len(ANSWER) + 1  # one byte token per character, then the end of the turn
    [(texts, images)] = recording.calls
    assert instruction_of(texts[0]) == "make it red"
    assert "<sks>" not in texts[0]
    assert "back view" not in texts[0]
    assert images is not None
    assert [image.tobytes() for image in images] == [IMAGE.convert("RGB").tobytes()]
    assert len(vision_inputs) == 1
    assert result.to_dict() == {
        "original_prompt": PROMPT,
        "prompt": result.prompt,
        "rewritten": True,
        "fallback_reason": None,
        "detail": None,
        "seconds": round(result.seconds, 3),
    }


@pytest.mark.tiny
def test_a_text_to_image_prompt_is_rewritten_as_a_description_not_an_edit(tiny: tuple[Any, Any]) -> None:
    description = "A small red fox of glazed ceramic on a wooden shelf, soft daylight."
    built, _, recording = rewriter(tiny, description)

    result = built.rewrite("a ceramic fox", [], task="generate")

    assert result.rewritten
    assert result.prompt == description
    [(texts, images)] = recording.calls
    assert images is None
    assert GENERATION_SYSTEM_PROMPT in texts[0]
    assert SYSTEM_PROMPT not in texts[0]
    assert "Prompt: a ceramic fox" in texts[0]
    assert "Instruction:" not in texts[0]


@pytest.mark.tiny
def test_the_random_model_s_own_answer_never_raises(tiny: tuple[Any, Any]) -> None:
    built, scripted, _ = rewriter(tiny, None, max_new_tokens=12)

    result = rewrite_prompt(built, PROMPT, [IMAGE])

    assert scripted.steps == 0  # the model chose every token itself
    assert len(scripted.prompts) == 1
    assert split_camera_phrase(result.prompt).camera_phrase == PHRASE
    if not result.rewritten:
        assert result.prompt == PROMPT
        assert result.reason is not None


@pytest.mark.tiny
@pytest.mark.parametrize(
    ("answer", "reason", "options"),
    [
        ("", "empty", {}),
        ('  ""  ', "empty", {}),
        ("I'm sorry, but I can't help with that request.", "refused", {}),
        ("x" * 120, "overlong", {}),  # cut at max_new_tokens (96)
        ("Paint the block blue and the stripes green.", "overlong", {"max_chars": 20}),
        ('{"Rewritten": "Paint the block', "malformed", {}),
        ("<sks> back view paint the block blue", "malformed", {}),
        ("Show the red block from the back", "malformed", {}),  # a camera move of its own
        ("42 -- 17", "malformed", {}),
    ],
)
def test_an_unusable_answer_keeps_the_prompt_and_says_why(
    tiny: tuple[Any, Any], answer: str, reason: str, options: dict[str, Any]
) -> None:
    built, scripted, _ = rewriter(tiny, answer, **options)

    result = rewrite_prompt(built, PROMPT, [IMAGE])

    assert scripted.steps > 0  # the answer came out of generate
    assert (result.rewritten, result.reason) == (False, reason)
    assert result.prompt == result.original == PROMPT
    assert result.detail


class Boom:
    """A logits processor that fails inside the generate loop."""

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        raise RuntimeError("CUDA out of memory (simulated)")


@pytest.mark.tiny
def test_an_error_inside_generate_keeps_the_prompt(tiny: tuple[Any, Any]) -> None:
    built, _, _ = rewriter(tiny, ANSWER, Boom())

    result = rewrite_prompt(built, PROMPT, [IMAGE])

    assert (result.rewritten, result.reason, result.prompt) == (False, "error", PROMPT)
    assert result.detail == "rewriter failed: RuntimeError"  # its text only in the server log


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Tick:
    """A logits processor that moves a fake clock on by one second per generated token."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        self.clock.now += 1.0
        return scores


@pytest.mark.tiny
def test_a_generation_past_the_timeout_is_stopped_and_keeps_the_prompt(tiny: tuple[Any, Any]) -> None:
    clock = FakeClock()
    built, scripted, _ = rewriter(tiny, ANSWER, Tick(clock), clock=clock, timeout_s=10)

    result = rewrite_prompt(built, PROMPT, [IMAGE])

    assert (result.rewritten, result.reason, result.prompt) == (False, "timeout", PROMPT)
    assert scripted.steps == 10  # stopped at the 10th token, well before the answer's end
    assert result.seconds == 10


@pytest.mark.tiny
def test_a_cancel_stops_the_generation_at_its_next_token_and_keeps_the_prompt(tiny: tuple[Any, Any]) -> None:
    built, scripted, _ = rewriter(tiny, ANSWER)

    result = built.rewrite("make it red", [IMAGE], should_stop=lambda: scripted.steps >= 3)

    assert (result.rewritten, result.reason, result.prompt) == (False, "canceled", "make it red")
    assert scripted.steps == 3  # stopped after the third token, well before the answer's end


@pytest.mark.tiny
def test_no_generation_starts_once_the_time_is_up(tiny: tuple[Any, Any]) -> None:
    built, scripted, recording = rewriter(tiny, ANSWER, timeout_s=1e-6)  # on the real clock

    result = rewrite_prompt(built, PROMPT, [IMAGE])

    assert (result.reason, result.prompt) == ("timeout", PROMPT)
    assert len(recording.calls) == 1  # the inputs were prepared,
    assert scripted.prompts == []  # but generate never ran


@pytest.mark.tiny
def test_several_items_are_each_rewritten_against_their_own_images(
    tiny: tuple[Any, Any], vision_inputs: list[torch.Tensor]
) -> None:
    items = [
        (CameraPose(azimuth_deg=90).prompt("make the car red"), [make_image(40, 30, color=(10, 200, 10))]),
        (CameraPose(elevation_deg=60).prompt("remove the lamp"), [make_image(64, 32, color=(10, 10, 200))]),
        ("put the hat of picture 2 on the man", [make_image(30, 40), make_image(48, 48, color=(0, 0, 0))]),
    ]
    answers = {
        "make the car red": "Paint the green car bright red.",
        "remove the lamp": "Remove the blue lamp and fill its place with the wall behind it.",
        "put the hat of picture 2 on the man": "Put the black hat from picture 2 on the man in picture 1.",
    }
    built, _, recording = rewriter(tiny, lambda prompt: answers[instruction_of(prompt)])
    image_processor = tiny[1].image_processor

    results = [rewrite_prompt(built, prompt, images) for prompt, images in items]

    assert [result.prompt for result in results] == [
        split_camera_phrase(prompt).join(answers[split_camera_phrase(prompt).words]) for prompt, _ in items
    ]
    assert [instruction_of(texts[0]) for texts, _ in recording.calls] == list(answers)
    assert "Picture 1:" in recording.calls[2][0][0]
    assert "Picture 2:" in recording.calls[2][0][0]
    for (_, images), (_, seen), pixels in zip(items, recording.calls, vision_inputs, strict=True):
        assert seen is not None
        assert [image.tobytes() for image in seen] == [image.convert("RGB").tobytes() for image in images]
        own = image_processor(images=[fit_image(image, 64 * 64) for image in images], return_tensors="pt")
        assert torch.equal(pixels, own["pixel_values"].to(pixels.dtype))
    assert not torch.equal(vision_inputs[0], vision_inputs[1][: len(vision_inputs[0])])


@pytest.mark.tiny
@pytest.mark.parametrize("prompt", [PHRASE, "make it <SKS> red", "   "])
def test_nothing_to_rewrite_never_reaches_the_model(tiny: tuple[Any, Any], prompt: str) -> None:
    built, scripted, recording = rewriter(tiny, ANSWER)

    result = rewrite_prompt(built, prompt, [IMAGE])

    assert (result.rewritten, result.reason, result.prompt) == (False, "skipped", prompt)
    assert recording.calls == []
    assert scripted.prompts == []


def test_split_camera_phrase_for_every_pose() -> None:
    for pose in all_poses():
        prompt = pose.prompt("make the car red")
        parts = split_camera_phrase(prompt)
        assert parts == PromptParts(pose.camera_phrase, "make the car red")
        assert parts.join("paint the car red") == pose.prompt("paint the car red")
        assert split_camera_phrase(pose.camera_phrase) == PromptParts(pose.camera_phrase, "")


@pytest.mark.parametrize(
    ("prompt", "parts"),
    [
        ("make it red", PromptParts("", "make it red")),
        ("front view of the house, paint it", PromptParts("", "front view of the house, paint it")),
        ("<sks> front view close-ups of flowers", PromptParts("<sks> front view", "close-ups of flowers")),
        ("<sks> make it red", PromptParts("<sks>", "make it red")),
        ("<sks> Back View make it red", PromptParts("<sks> Back View", "make it red")),
    ],
)
def test_split_camera_phrase_takes_only_the_leading_phrase(prompt: str, parts: PromptParts) -> None:
    assert split_camera_phrase(prompt) == parts


@pytest.mark.parametrize(
    "answer",
    [
        "Make the sky orange.",
        '{"Rewritten": "Make the sky orange."}',
        '```json\n{"instruction": "Make the sky orange."}\n```',
        "<think>The user wants a warmer sky.</think>\nMake the sky orange.",
        "Rewritten instruction: Make the sky orange.",
        'Here is the rewritten instruction:\n"Make the sky orange."',
        "\u201cMake the sky orange.\u201d",
        "Make the sky\n  orange.",
    ],
)
def test_read_answer_finds_the_instruction(answer: str) -> None:
    assert read_answer(answer, original="orange sky", max_chars=100) == "Make the sky orange."


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("<think>The user wants", "malformed"),
        ('{"note": "orange"}', "malformed"),
        ("Make the sky \ufffd orange", "malformed"),
        ("<|im_start|>Make the sky orange", "malformed"),
        ("\u62b1\u6b49\uff0c\u6211\u65e0\u6cd5\u5b8c\u6210", "refused"),
        ("As an AI, I cannot edit photos.", "refused"),
        ("```\n```", "empty"),
    ],
)
def test_read_answer_rejects(answer: str, reason: str) -> None:
    with pytest.raises(Rejected) as rejected:
        read_answer(answer, original="orange sky", max_chars=100)
    assert rejected.value.reason == reason


def test_a_camera_move_the_user_asked_for_is_kept() -> None:
    text = "Show the red block from the back, with its stripes."
    assert read_answer(text, original="show it from the back", max_chars=100) == text


@pytest.mark.tiny
def test_the_tiny_rewriter_writes_its_script() -> None:
    built = tiny_rewriter(scripted=ScriptedAnswers(lambda _prompt: ANSWER))

    assert rewrite_prompt(built, PROMPT, [IMAGE]).prompt == f"{PHRASE} {ANSWER}"


@pytest.mark.tiny
@pytest.mark.parametrize(
    ("environment", "max_new_tokens", "timeout_s"),
    [
        ({}, TINY_OPTIONS.max_new_tokens, TINY_OPTIONS.timeout_s),
        ({"REANGLE_REWRITER_MAX_NEW_TOKENS": "40", "REANGLE_REWRITER_TIMEOUT_S": "7"}, 40, 7.0),
        # set to the settings' own default: still the user's choice, not the tiny rewriter's
        ({"REANGLE_REWRITER_MAX_NEW_TOKENS": "160"}, 160, TINY_OPTIONS.timeout_s),
    ],
)
def test_the_tiny_engine_s_rewriter_takes_the_rewriter_settings_the_user_set(
    environment: dict[str, str],
    max_new_tokens: int,
    timeout_s: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = Settings(engine="tiny")
    lazy = prompt_rewriter(settings, create_engine("tiny", settings))

    assert isinstance(lazy, LazyRewriter)
    built = lazy.load()
    assert isinstance(built, QwenVLRewriter)
    assert (built.options.max_new_tokens, built.options.timeout_s) == (max_new_tokens, timeout_s)
    assert built.options.image_area == TINY_OPTIONS.image_area  # sized for the tiny model all the same


@pytest.mark.tiny
def test_load_rewriter_from_a_local_folder(tmp_path: Path) -> None:
    folder = write_tiny_rewriter(tmp_path / "tiny-qwen3-vl")

    loaded = load_rewriter(str(folder), device="cpu", options=RewriteOptions(max_new_tokens=4))

    assert loaded.model.config.model_type == "qwen3_vl"
    assert type(loaded.processor).__name__ == "Qwen3VLProcessor"
    result = rewrite_prompt(loaded, PROMPT, [IMAGE])  # the random model's own 4 tokens: cut short
    assert (result.reason, result.prompt) == ("overlong", PROMPT)


def test_load_rewriter_names_a_checkpoint_it_cannot_load(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match=r"cannot load the prompt rewriter .*missing"):
        load_rewriter(str(tmp_path / "missing"), device="cpu")


def test_checkpoint_names() -> None:
    assert resolve_checkpoint("4B") == CHECKPOINTS["4b"] == "Qwen/Qwen3-VL-4B-Instruct"
    assert resolve_checkpoint("/models/qwen3-vl") == "/models/qwen3-vl"


class EchoRewriter:
    def rewrite(
        self, instruction: str, images: Any, *, task: RewriteTask = "edit", should_stop: Any = None
    ) -> Rewrite:
        return Rewrite(original=instruction, prompt=f"{task}: {instruction.upper()}", rewritten=True)


def test_lazy_rewriter_builds_once() -> None:
    builds: list[int] = []

    def build() -> PromptRewriter:
        builds.append(1)
        return EchoRewriter()

    lazy = LazyRewriter(build)
    assert lazy.rewrite("make it red", [IMAGE]).prompt == "edit: MAKE IT RED"
    assert lazy.rewrite("a red fox", [], task="generate").prompt == "generate: A RED FOX"
    assert rewrite_prompt(lazy, PROMPT, [IMAGE]).prompt == f"{PHRASE} edit: MAKE IT RED"
    assert builds == [1]


def test_lazy_rewriter_that_cannot_build_falls_back_without_trying_again() -> None:
    builds: list[int] = []

    def build() -> PromptRewriter:
        builds.append(1)
        raise EngineError("cannot load the prompt rewriter Qwen/Qwen3-VL-8B-Instruct: no such folder")

    lazy = LazyRewriter(build)
    first, second = (rewrite_prompt(lazy, PROMPT, [IMAGE]) for _ in range(2))

    assert (first.reason, first.prompt) == ("error", PROMPT)
    assert first.detail == "the rewriter is unavailable: EngineError"
    assert "no such folder" not in first.detail  # the load error may name server folders: logged only
    assert second == first
    assert builds == [1]
    with pytest.raises(EngineError):
        lazy.load()
