"""Reading a rewriter model's answer: the instruction in it (without reasoning blocks, code fences, JSON, a
preamble line, a label or quotes), or why it must not be used. No model here, only text.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Literal

from reangle.core.camera import MULTIPLE_ANGLES_2511
from reangle.core.camera_text import parse_camera_text
from reangle.core.edit import MAX_PROMPT_CHARS

#: Why a prompt was kept as it was: nothing to rewrite, or what was wrong with the answer.
FallbackReason = Literal[
    "skipped", "empty", "overlong", "refused", "malformed", "error", "timeout", "canceled"
]

_TRIGGER = MULTIPLE_ANGLES_2511.trigger


class Rejected(Exception):
    """An answer that is not used, and why."""

    def __init__(self, reason: FallbackReason, detail: str) -> None:
        self.reason: FallbackReason = reason
        self.detail = detail
        super().__init__(detail)


_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
_FENCE = re.compile(r"^```[\w-]*[ \t]*\n?(.*?)\n?```$", re.S)
_LABEL = re.compile(
    r"^(?:(?:rewritten|revised|improved|refined|precise|final|new)\s+)?(?:edit(?:ing)?\s+)?"
    r"(?:instruction|prompt|answer|output)\s*[:\uff1a]\s*",
    re.I,
)
_QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "\u2018": "\u2019", "\u00ab": "\u00bb", "\u300c": "\u300d"}
_REFUSAL = re.compile(
    r"^(?:i['\u2019]?m\s+sorry|i\s+am\s+sorry|sorry\b|i\s+can(?:not|['\u2019]t)\b|i\s+(?:am|['\u2019]m)\s+"
    r"(?:not\s+able|unable)\b|i\s+won['\u2019]t\b|i\s+will\s+not\b|as\s+an\s+ai\b|unfortunately\b|"
    r"\u62b1\u6b49|\u5bf9\u4e0d\u8d77|\u6211\u4e0d\u80fd|\u6211\u65e0\u6cd5)",
    re.I,
)
#: Keys a JSON answer may carry its instruction under (Qwen-Image's own prompt enhancer answers "Rewritten").
_JSON_KEYS = ("rewritten", "instruction", "prompt", "rewrite", "edit", "text")


def read_answer(answer: str, *, original: str, max_chars: int) -> str:
    """The instruction in a model's answer: without reasoning blocks, code fences, JSON, a preamble line, a
    label or quotes around it. Raises `Rejected` for an answer that must not be used."""
    text = _THINK.sub("", answer).strip()
    if "<think>" in text.lower():
        raise Rejected("malformed", "the answer is an unfinished reasoning block")
    fence = _FENCE.match(text)
    if fence:
        text = fence.group(1).strip()
    if text.startswith("{"):
        text = _from_json(text)
    text = _unwrap(text)
    if not text:
        raise Rejected("empty", "the model gave an empty answer")
    if _REFUSAL.match(text):
        raise Rejected("refused", f"the model declined: {_clip(text)}")
    if len(text) > max_chars:
        raise Rejected("overlong", f"the answer is {len(text):,} characters, more than {max_chars:,}")
    _check_usable(text, original)
    return text


def _from_json(text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        raise Rejected("malformed", "the answer starts like JSON but is not valid JSON") from None
    if isinstance(data, dict):
        fields = {str(key).lower(): value for key, value in data.items()}
        for key in _JSON_KEYS:
            if isinstance(fields.get(key), str):
                return str(fields[key])
    raise Rejected("malformed", "the JSON answer has no instruction in it")


def _unwrap(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith((":", "\uff1a")):
        lines = lines[1:]  # "Here is the rewritten instruction:"
    text = _LABEL.sub("", " ".join(" ".join(lines).split()), count=1)
    if len(text) >= 2 and _QUOTES.get(text[0]) == text[-1]:
        text = text[1:-1].strip()
    return text


def _check_usable(text: str, original: str) -> None:
    if any(unicodedata.category(char) in ("Cc", "Cs", "Co", "Cn") or char == "\ufffd" for char in text):
        raise Rejected("malformed", "the answer holds unreadable characters")
    if "<|" in text or "|>" in text:
        raise Rejected("malformed", "the answer holds the model's special tokens")
    if _TRIGGER in text.lower():
        raise Rejected("malformed", f"the answer holds the camera trigger {_TRIGGER}")
    if not any(char.isalpha() for char in text):
        raise Rejected("malformed", "the answer has no words")
    if _names_camera_move(text) and not _names_camera_move(original):
        raise Rejected("malformed", "the answer adds a camera move; the camera is set separately")


def _names_camera_move(text: str) -> bool:
    return len(text) <= MAX_PROMPT_CHARS and parse_camera_text(text).pose is not None


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
