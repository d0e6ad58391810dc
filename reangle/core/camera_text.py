"""Camera requests written in plain English ("rotate the camera 90 degrees right, bird's-eye view").

`parse_camera_text` finds the camera phrases (`camera_phrases.RULES`) anywhere in a prompt, in any order,
maps them onto the 96-pose vocabulary relative to the default pose (front view, eye-level shot, medium shot)
and hands back what is left as the instruction: the user's own words, without the camera words. Only whole
phrases count: "right" or "back" alone in an ordinary instruction is never a camera move.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction

from reangle.core.camera import DEFAULT_POSE, MULTIPLE_ANGLES_2511, CameraPose, snap_azimuth
from reangle.core.camera_phrases import RULES, Effect
from reangle.core.edit import MAX_PROMPT_CHARS
from reangle.errors import InvalidInput


@dataclass(frozen=True)
class CameraText:
    """A prompt split into the camera pose it asks for (None: no camera move) and the rest of the text."""

    pose: CameraPose | None
    instruction: str
    #: the axes its phrases named ("azimuth", "elevation", "distance"): the pose's others are the default's
    axes: frozenset[str] = field(default=frozenset(), compare=False)


def _find(text: str) -> list[tuple[int, int, Effect]]:
    """Every recognised phrase as (start, end, effect), in text order; the longest wins an overlap."""
    candidates = []
    for index, (pattern, effect_of) in enumerate(RULES):
        for match in pattern.finditer(text):
            effect = effect_of(match)
            if effect is not None:
                candidates.append((match.start() - match.end(), index, match.start(), match.end(), effect))
    found: list[tuple[int, int, Effect]] = []
    for _, _, start, end, effect in sorted(candidates, key=lambda c: c[:3]):
        if all(end <= s or e <= start for s, e, _ in found):
            found.append((start, end, effect))
    return sorted(found, key=lambda f: f[0])


#: Words that only lead into a camera phrase: "turn the camera to a", "switch to", "make it a".
_LEAD_IN_AT_END = re.compile(
    r"(?<![\w-])(?:(?:please\s+)?(?:turn|move|switch|change|set|shift|make|show|render|go|look|shoot|view)"
    r"(?:\s+(?:the|this|your))?(?:\s+(?:camera|view|shot|angle|perspective|image|photo|picture|scene|it))?"
    r"(?:\s+(?:to|into|as|from|at))?\s+)?(?:an?|the)?\s*$",
    re.I,
)
#: A stretch between camera phrases made only of these words is part of them ("wide shot | from the left",
#: "ground-level shot | looking up"), not the user's instruction.
_FILLER = re.compile(
    r"(?:[\s,;:\-\u2013\u2014]|\b(?:an?|the|and|then|also|plus|with|at|from|in|camera|view|shot|angle|"
    r"perspective|looking\s+(?:up|down)|seen|viewed)\b)*",
    re.I,
)


def _punctuation_run(match: re.Match[str]) -> str:
    run = match.group().replace(" ", "")
    strong = [mark for mark in run if mark in ".!?"]
    return strong[0] if strong else run[0]


def _tidy(text: str) -> str:
    text = re.sub(r"\(\s*\)|\[\s*\]", " ", text)
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r" (?=[,.;:!?])", "", text)
    text = re.sub(r"[,.;:!?](?: ?[,.;:!?])+", _punctuation_run, text)
    text = re.sub(
        r"^[\s,.;:!?\-\u2013\u2014]*(?:(?:and|then|also|plus)\b[\s,\-\u2013\u2014]*)*", "", text, flags=re.I
    )
    text = re.sub(
        r"(?:[\s,;:\-\u2013\u2014]*\b(?:and|then|also|plus))*[\s,;:\-\u2013\u2014]*$", "", text, flags=re.I
    )
    return "" if re.fullmatch(r"[\s.!?]*", text) else text


def parse_camera_text(text: str) -> CameraText:
    """The pose a prompt asks for and the instruction left once the camera phrases are taken out.

    Later phrases override earlier ones on the same axis; a turn is added to the azimuth reached so far
    (starting from the front). Text that names no camera move comes back unchanged with pose None.
    A prompt holding only the "<sks>" trigger gets the default pose.
    """
    if not isinstance(text, str):
        raise InvalidInput(f"prompt must be a string, got {type(text).__name__}", field="prompt")
    if len(text) > MAX_PROMPT_CHARS:  # checked before any pattern runs over it
        raise InvalidInput(
            f"prompt is {len(text):,} characters, more than the limit of {MAX_PROMPT_CHARS:,}", field="prompt"
        )
    found = _find(text)
    if not found:
        return CameraText(pose=None, instruction=text)
    azimuth = Fraction(DEFAULT_POSE.azimuth_deg)
    axes = {
        "elevation": Fraction(DEFAULT_POSE.elevation_deg),
        "distance": Fraction(DEFAULT_POSE.distance_factor),
    }
    pieces: list[str] = []
    named: set[str] = set()
    cursor = 0
    for start, end, (axis, value) in found:
        named.add("azimuth" if axis == "turn" else axis)
        if axis == "azimuth":
            azimuth = value
        elif axis == "turn":
            azimuth = (azimuth + value) % 360
        elif axis in axes:
            axes[axis] = value
        pieces.append(_LEAD_IN_AT_END.sub("", text[cursor:start]))
        cursor = end
    pieces.append(text[cursor:])
    pose = CameraPose(
        azimuth_deg=snap_azimuth(azimuth),
        elevation_deg=_snap_elevation(axes["elevation"]),
        distance_factor=float(axes["distance"]),
    )
    pieces = [piece for piece in pieces if not _FILLER.fullmatch(piece)]
    return CameraText(pose=pose, instruction=_tidy(" ".join(pieces)), axes=frozenset(named & _AXES))


_AXES = frozenset({"azimuth", "elevation", "distance"})
_ELEVATIONS = sorted(degrees for degrees, _ in MULTIPLE_ANGLES_2511.elevations)


def _snap_elevation(degrees: Fraction) -> int:
    """The nearest elevation of the vocabulary; halfway between two, the higher."""
    return min(_ELEVATIONS, key=lambda elevation: (abs(elevation - degrees), -elevation))
