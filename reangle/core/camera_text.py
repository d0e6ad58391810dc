"""Camera requests written in plain English ("rotate the camera 90 degrees right, bird's-eye view").

`parse_camera_text` finds the camera phrases in a prompt, maps them onto the 96-pose vocabulary relative to
the default pose (front view, eye-level shot, medium shot) and hands back what is left as the instruction.
The phrases are a table of compiled patterns, each with the effect it has on one axis. Only whole phrases
count: "right" or "back" alone in an ordinary instruction is never a camera move.

Direction: turning or orbiting the camera to the RIGHT by N degrees adds N to the azimuth (90 right ->
"right side view"), to the LEFT subtracts N (45 left -> "front-left quarter view"), with wrap-around.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from reangle.core.camera import DEFAULT_POSE, MULTIPLE_ANGLES_2511, CameraPose, snap_azimuth
from reangle.errors import InvalidInput


@dataclass(frozen=True)
class CameraText:
    """A prompt split into the camera pose it asks for (None: no camera move) and the rest of the text."""

    pose: CameraPose | None
    instruction: str


# An effect names an axis and a value: "azimuth" sets degrees, "turn" adds degrees to the azimuth,
# "elevation" sets degrees, "distance" sets the distance factor, "trigger" only marks a LoRA prompt.
Effect = tuple[str, Fraction]
Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], Effect | None]]

_VIEW = r"(?:view|shot|angle|perspective|camera\s+angle)"
_SEEN = r"(?:(?:viewed|seen|shot|photographed|filmed|captured|pictured|looking|view|camera)\s+)"
_OBJECT = re.compile(
    r"\s+(?:the|an?|this|that|these|those|it|its|his|her|their|my|your|our|him|them)\b", re.I
)
_DETERMINER_BEFORE = re.compile(
    r"\b(?:the|an?|its|his|her|their|my|your|our|on|at|to|in|into|from)\s+$", re.I
)
_LIGHT_BEFORE = re.compile(
    r"\b(?:light|lights|lighting|lit|sun|sunlight|glow|shine|shines|shining|falling|falls|coming|comes|"
    r"hanging|hangs)\s+$",
    re.I,
)
_NUMBER = r"(?P<{}>\d{{1,9}}(?:\.\d{{1,9}})?)\s*"  # longer numbers are not read as angles
_UNIT = r"(?:degrees?|degs?|°)"
_TURN = (
    r"(?P<verb>rotate|turn|orbit|pan|move|swing)\s+(?P<camera>(?:the\s+)?(?:camera|view)\s+)?"
    rf"(?:(?:by\s+)?{_NUMBER.format('n1')}{_UNIT}?\s*)?(?:to(?:wards?)?\s+(?:the\s+)?)?"
    rf"(?P<dir>left|right)(?:wards?)?(?:\s+side)?"
    rf"(?:\s+by\s+{_NUMBER.format('n2')}{_UNIT}?|\s+{_NUMBER.format('n3')}{_UNIT})?"
)


def _compile(source: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w-])(?:{source})(?![\w-])", re.IGNORECASE)


def _phrase(text: str) -> str:
    """A literal phrase as a pattern: any whitespace between words, a hyphen may also be left out."""
    return r"\s+".join(re.escape(word).replace(r"\-", "-?") for word in text.split())


def _set(axis: str, value: float | str) -> Callable[[re.Match[str]], Effect | None]:
    effect = (axis, Fraction(value))
    return lambda match: effect


def _guarded(
    axis: str, value: float | str, *, after_object: bool = True
) -> Callable[[re.Match[str]], Effect | None]:
    """Like `_set`, but not after a lighting word ("light from above") and, unless hyphenated, not before
    an object ("close up the gap")."""

    def effect(match: re.Match[str]) -> Effect | None:
        before = match.string[: match.start()]
        if _LIGHT_BEFORE.search(before):
            return None
        if after_object and "-" not in match.group() and _OBJECT.match(match.string, match.end()):
            return None
        return axis, Fraction(value)

    return effect


def _turn(match: re.Match[str]) -> Effect | None:
    amount = match.group("n1") or match.group("n2") or match.group("n3")
    if amount is None and match.group("camera") is None and match.group("verb").lower() != "orbit":
        return None  # "turn left" alone is a person turning, not the camera
    degrees = Fraction(amount) if amount else Fraction(45)
    return "turn", degrees if match.group("dir").lower() == "right" else -degrees


def _side(match: re.Match[str]) -> Effect | None:
    before, after = match.string[: match.start()], match.string[match.end() :]
    if _DETERMINER_BEFORE.search(before) or _OBJECT.match(after) or re.match(r"\s+of\b", after, re.I):
        return None  # "paint the left side", "left side of the car"
    return "azimuth", Fraction(270 if "left" in match.group().lower() else 90)


_QUARTERS = {("front", "right"): 45, ("back", "right"): 135, ("back", "left"): 225, ("front", "left"): 315}


def _quarter(match: re.Match[str]) -> Effect:
    end = "back" if match.group("end").lower() in ("back", "rear") else "front"
    return "azimuth", Fraction(_QUARTERS[end, match.group("dir").lower()])


_VOCAB = MULTIPLE_ANGLES_2511
# Where matches overlap the longest wins, then the earlier rule.
_RULES: list[Rule] = [
    (_compile(source), effect)
    for source, effect in [
        (_TURN, _turn),
        (r"turn\s+(?:the\s+camera\s+)?around", _set("turn", 180)),
        (
            r"(?:rotate|turn|orbit|spin)\s+(?:the\s+camera\s+)?(?:by\s+)?180\s*(?:degrees?|°)",
            _set("turn", 180),
        ),
        (re.escape(_VOCAB.trigger), _set("trigger", 0)),
        *[(_phrase(name), _set("azimuth", degrees)) for degrees, name in _VOCAB.azimuths],
        *[(_phrase(name), _set("elevation", degrees)) for degrees, name in _VOCAB.elevations],
        *[(_phrase(name), _set("distance", str(factor))) for factor, name in _VOCAB.distances],
        # views
        (
            r"(?P<end>front|back|rear)[-\s]?(?P<dir>left|right)\s+(?:three[-\s]?)?quarter(?:\s+view)?",
            _quarter,
        ),
        (r"(?:three[-\s]?quarters?|3/4|quarter)\s+view", _set("azimuth", 45)),
        (
            rf"{_SEEN}from\s+the\s+left(?:\s+side)?|left[-\s]?side\s+{_VIEW}|left\s+profile",
            _set("azimuth", 270),
        ),
        (
            rf"{_SEEN}from\s+the\s+(?:right\s+)?side|right[-\s]?side\s+{_VIEW}|right\s+profile|"
            r"side\s+(?:view|profile)|profile\s+view",
            _set("azimuth", 90),
        ),
        (r"(?:left|right)[-\s]side", _side),
        (
            rf"(?:back|rear)\s+view(?![-\s]mirror)|{_SEEN}from\s+the\s+(?:back|rear)|{_SEEN}?from\s+behind(?!{_OBJECT.pattern})",
            _guarded("azimuth", 180, after_object=False),
        ),
        (rf"front(?:al)?\s+view|{_SEEN}from\s+the\s+front", _set("azimuth", 0)),
        # elevation
        (rf"{_SEEN}?(?:slightly\s+from\s+above|from\s+slightly\s+above)", _set("elevation", 30)),
        (rf"slightly\s+elevated(?:\s+{_VIEW})?|elevated\s+{_VIEW}", _set("elevation", 30)),
        (
            rf"bird(?:['\u2019]?s)?[-\s]?eye(?:\s+{_VIEW})?|top-down(?:\s+{_VIEW})?|top\s+down\s+{_VIEW}|"
            rf"overhead\s+{_VIEW}|from\s+overhead|high[-\s]angle(?:\s+{_VIEW})?",
            _set("elevation", 60),
        ),
        (rf"{_SEEN}?from\s+above", _guarded("elevation", 60)),
        (
            rf"worm(?:['\u2019]?s)?[-\s]?eye(?:\s+{_VIEW})?|low[-\s]angle(?:\s+{_VIEW})?",
            _set("elevation", -30),
        ),
        (rf"{_SEEN}?from\s+below", _guarded("elevation", -30)),
        (rf"(?:at\s+)?eye[-\s]?level(?:\s+{_VIEW})?", _set("elevation", 0)),
        # distance
        (rf"(?:extreme\s+)?close[-\s]?up(?:\s+{_VIEW})?", _guarded("distance", "0.6")),
        (
            r"zoom(?:\s+the\s+camera)?\s+in|(?:move|bring|get)\s+(?:the\s+camera\s+)?closer|"
            r"move\s+(?:the\s+camera\s+)?forwards?|(?:push|dolly)\s+in",
            _set("distance", "0.6"),
        ),
        (
            rf"wide[-\s]angle(?:\s+(?:{_VIEW}|lens))?|(?:full|full[-\s]body|long)\s+shot|"
            r"zoom(?:\s+the\s+camera)?\s+out|(?:pull|move)\s+(?:the\s+camera\s+)?back(?:wards?)?|dolly\s+out",
            _set("distance", "1.8"),
        ),
        (r"mid(?:dle)?[-\s]?shot", _set("distance", 1)),
    ]
]


def _find(text: str) -> list[tuple[int, int, Effect]]:
    """Every recognised phrase as (start, end, effect), in text order; the longest wins an overlap."""
    candidates = []
    for index, (pattern, effect_of) in enumerate(_RULES):
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
    r"(?<![\w-])(?:(?:please\s+)?(?:turn|move|switch|change|set|shift|make|show|render|go)"
    r"(?:\s+(?:the|this|your))?(?:\s+(?:camera|view|shot|angle|perspective|image|photo|picture|scene|it))?"
    r"(?:\s+(?:to|into|as))?\s+)?(?:an?|the)?\s*$",
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
    found = _find(text)
    if not found:
        return CameraText(pose=None, instruction=text)
    azimuth = Fraction(DEFAULT_POSE.azimuth_deg)
    axes = {
        "elevation": Fraction(DEFAULT_POSE.elevation_deg),
        "distance": Fraction(DEFAULT_POSE.distance_factor),
    }
    pieces: list[str] = []
    cursor = 0
    for start, end, (axis, value) in found:
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
        elevation_deg=int(axes["elevation"]),
        distance_factor=float(axes["distance"]),
    )
    return CameraText(pose=pose, instruction=_tidy(" ".join(pieces)))
