"""The camera phrases `camera_text` recognises: one compiled pattern per way of saying something, each with
the effect it has on one axis of the pose.

An effect names an axis and a value: "azimuth" sets degrees, "turn" adds degrees to the azimuth, "elevation"
sets degrees (snapped to the nearest of -30, 0, 30, 60), "distance" sets the distance factor, "trigger" only
marks a LoRA prompt. A rule may decline a match (its effect function returns None) when the words around it
say it is not about the camera: "light from the left", "the left side of the car", "pull back the curtain".

Direction: turning or orbiting the camera to the RIGHT (clockwise seen from above) by N degrees adds N to the
azimuth (90 right -> "right side view"), to the LEFT subtracts N, with wrap-around.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from fractions import Fraction

from reangle.core.camera import MULTIPLE_ANGLES_2511

Effect = tuple[str, Fraction]
EffectOf = Callable[[re.Match[str]], Effect | None]
Rule = tuple[re.Pattern[str], EffectOf]

_VIEW = r"(?:view|shot|angle|perspective|camera\s+angle|photo|image)"
#: Words before "from ..." that belong to the camera phrase ("viewed from the left").
_SEEN = r"(?:(?:viewed|seen|photographed|filmed|captured|pictured|looking|looked\s+at)\s+)"
_OBJECT = r"\s+(?:the|an?|this|that|these|those|it|its|his|her|their|my|your|our|him|them)\b"
_OBJECT_AFTER = re.compile(_OBJECT, re.I)
_DETERMINER_BEFORE = re.compile(
    r"\b(?:the|an?|its|his|her|their|my|your|our|on|at|to|in|into|from)\s+$", re.I
)
#: Words after which "from the left", "from above" ... describe where something else comes from.
_NOT_CAMERA_BEFORE = re.compile(
    r"\b(?:light|lights|lighting|lit|sun|sunlight|glow|shine|shines|shining|falling|falls|fall|coming|comes|"
    r"come|hanging|hangs|wind|breeze|blowing|blows|approaching|approaches|entering|enters|arriving|arrives|"
    r"rain|shadows?|smoke|water|traffic|hiding|hides|peeking|peeks|emerging|emerges|flying|flies|running|"
    r"runs|walking|walks|driving|drives|read|reads|reading)\s+$",
    re.I,
)
#: Where a clause starts: after punctuation or a joining word.
_CLAUSE_BREAK = re.compile(r"[,.;:!?()]|\b(?:and|then|but|also)\b", re.I)
#: Verbs whose object the rest of the clause is about: the picture's content, not the camera.
_EDIT_VERB = re.compile(
    r"\b(?:remove|erase|delete|crop|cut|add|put|place|make|paint|colou?r|replace|light|fill|blur|insert|"
    r"draw|write|give|dress|fix|clean|hide|keep|shift|read|raise|lift|drag|push|pull|bring|"
    r"move(?!\s+(?:the\s+)?camera\b))\b",
    re.I,
)
_NUMBER = r"(?P<{}>\d{{1,9}}(?:\.\d{{1,9}})?)"  # longer numbers are not read as angles
_SIGNED = r"(?P<{}>[-+\u2212]?\d{{1,9}}(?:\.\d{{1,9}})?)"
#: A unit after a number, with or without a space: "45°", "45 degrees". (One optional space run between
#: them, never two in a row, so that no long run of spaces makes a match slow.)
_UNIT = r"(?:\s*(?:degrees?|degs?|°))"
_AMOUNT_WORDS = {"quarter": 90, "half": 180}
_DIRECTION = r"(?P<dir>left|right|clockwise|counter[-\s]?clockwise|anti[-\s]?clockwise)"
_TURN = (
    r"(?P<verb>rotate|turn|orbit|pan|move|swing|spin)\s+(?P<camera>(?:the\s+)?(?:camera|view)\s+)?"
    rf"(?:(?:by\s+)?(?:{_NUMBER.format('n1')}{_UNIT}?|a\s+(?P<amount>quarter|half)[-\s]turn|"
    r"(?P<little>slightly|a\s+little(?:\s+bit)?|a\s+bit))\s+)?"
    rf"(?:to(?:wards?)?\s+(?:the\s+)?)?{_DIRECTION}(?:wards?)?(?P<side>(?:[-\s]hand)?\s+side)?"
    rf"(?:\s+by\s+{_NUMBER.format('n2')}{_UNIT}?|\s+{_NUMBER.format('n3')}{_UNIT})?"
)
#: After "from the left", "from the back" ...: not a noun of the picture ("from the back row", "the second
#: person from the left smiling"), only the end of the phrase.
_PHRASE_END = r"(?!\s+(?!(?:and|then|at|with|in|on|but|while|to|for|please|so)\b)[a-z])"
_QUARTERS = {("front", "right"): 45, ("back", "right"): 135, ("back", "left"): 225, ("front", "left"): 315}


def compile_phrase(source: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w-])(?:{source})(?![\w-])", re.IGNORECASE)


def _phrase(text: str) -> str:
    """A literal phrase as a pattern: any whitespace between words, a hyphen may also be left out."""
    return r"\s+".join(re.escape(word).replace(r"\-", "-?") for word in text.split())


def _set(axis: str, value: float | str) -> EffectOf:
    effect = (axis, Fraction(value))
    return lambda match: effect


def in_edit_clause(match: re.Match[str]) -> bool:
    """Whether the match follows an editing verb in its own clause, so that it says where something in the
    picture is or goes ("remove the person from the left", "shift the hue 30 degrees up"), not the camera."""
    before = match.string[: match.start()]
    start = max((found.end() for found in _CLAUSE_BREAK.finditer(before)), default=0)
    return bool(_EDIT_VERB.search(before[start:]))


def _guarded(
    axis: str, value: float | str, *, before_object: bool = True, edit_clause: bool = False
) -> EffectOf:
    """Like `_set`, but not after a word for something else that comes from somewhere ("light from above"),
    not as "from ... of" ("from the left of the frame"), with `edit_clause` not after an editing verb in
    the same clause (`in_edit_clause`) and, unless hyphenated or `before_object` is off, not before an
    object ("close up the gap", "pull back the curtain")."""

    def effect(match: re.Match[str]) -> Effect | None:
        if _NOT_CAMERA_BEFORE.search(match.string[: match.start()]):
            return None
        if edit_clause and in_edit_clause(match):
            return None
        after = match.string[match.end() :]
        if re.search(r"\bfrom\b", match.group(), re.I) and re.match(r"\s+of\b", after, re.I):
            return None
        if before_object and "-" not in match.group() and _OBJECT_AFTER.match(after):
            return None
        return axis, Fraction(value)

    return effect


def _degrees(match: re.Match[str], *names: str) -> Fraction | None:
    value = next((match.group(name) for name in names if match.group(name)), None)
    return None if value is None else Fraction(value.replace("\u2212", "-"))


def _sign(direction: str) -> int:
    """+1 for the camera moving right (clockwise seen from above), -1 for left."""
    direction = direction.lower()
    return 1 if direction == "right" or direction == "clockwise" else -1


def _turn(match: re.Match[str]) -> Effect | None:
    sign = _sign(match.group("dir"))
    amount = _degrees(match, "n1", "n2", "n3")
    if match.group("amount"):
        amount = Fraction(_AMOUNT_WORDS[match.group("amount").lower()])
    if amount is None and match.group("side") and match.group("dir").lower() in ("left", "right"):
        return "azimuth", Fraction(90 if sign > 0 else 270)  # "move the camera to the right side"
    spoken_to_camera = match.group("camera") or match.group("verb").lower() == "orbit"
    if amount is None and not spoken_to_camera and not match.group("little"):
        return None  # "turn left" alone is a person turning, not the camera
    return "turn", sign * (amount if amount is not None else Fraction(45))


def _camera_turn(match: re.Match[str]) -> Effect | None:
    """ "camera 45 degrees right": a turn from where the camera is."""
    amount = _degrees(match, "n1")
    return None if amount is None else ("turn", _sign(match.group("dir")) * amount)


def _absolute(axis: str) -> EffectOf:
    def effect(match: re.Match[str]) -> Effect | None:
        value = _degrees(match, "n1")
        return None if value is None else (axis, value)

    return effect


def _tilt(match: re.Match[str]) -> Effect | None:
    amount = _degrees(match, "n1")
    if amount is None or in_edit_clause(match):
        return None
    down = match.group("dir").lower().startswith(("down", "below", "lower"))
    return "elevation", -amount if down else amount


def _side(match: re.Match[str]) -> Effect | None:
    before, after = match.string[: match.start()], match.string[match.end() :]
    if _DETERMINER_BEFORE.search(before) or _OBJECT_AFTER.match(after) or re.match(r"\s+of\b", after, re.I):
        return None  # "paint the left side", "left side of the car"
    return "azimuth", Fraction(270 if "left" in match.group().lower() else 90)


def _quarter(match: re.Match[str]) -> Effect | None:
    if _NOT_CAMERA_BEFORE.search(match.string[: match.start()]):
        return None
    if match.group().lower().startswith("from") and in_edit_clause(match):
        return None  # "remove the car from the back left"
    groups = match.groupdict()
    end = "back" if (groups.get("end") or "front").lower() in ("back", "rear") else "front"
    return "azimuth", Fraction(_QUARTERS[end, (groups.get("dir") or "right").lower()])


def _camera_side(match: re.Match[str]) -> Effect:
    return "azimuth", Fraction(90 if match.group("dir").lower() == "right" else 270)


_VOCAB = MULTIPLE_ANGLES_2511
_QUARTER = r"(?:(?:three[-\s]?)?quarters?|3/4)"
_FROM_QUARTER = r"from\s+(?:the\s+)?(?P<end>front|back|rear)[-\s]?(?P<dir>left|right)"

#: Where matches overlap the longest wins, then the earlier rule.
RULES: list[Rule] = [
    (compile_phrase(source), effect)
    for source, effect in [
        # turns, relative to where the camera is so far
        (_TURN, _turn),
        (r"(?:turn|spin|swing)\s+(?:the\s+camera\s+)?around", _set("turn", 180)),
        (
            rf"(?:rotate|turn|orbit|spin)\s+(?:the\s+camera\s+)?(?:by\s+)?(?:180{_UNIT}?|a\s+half[-\s]turn)",
            _set("turn", 180),
        ),
        (rf"(?:camera|view)\s+{_NUMBER.format('n1')}{_UNIT}?\s*(?:to\s+the\s+)?{_DIRECTION}", _camera_turn),
        # the LoRA's own words
        (re.escape(_VOCAB.trigger), _set("trigger", 0)),
        *[(_phrase(name), _set("azimuth", degrees)) for degrees, name in _VOCAB.azimuths],
        *[(_phrase(name), _set("elevation", degrees)) for degrees, name in _VOCAB.elevations],
        *[(_phrase(name), _set("distance", str(factor))) for factor, name in _VOCAB.distances],
        # azimuth given outright
        (rf"(?:camera|view)\s+at\s+{_SIGNED.format('n1')}{_UNIT}", _absolute("azimuth")),
        (rf"azimuth\s*(?:of\s+|=\s*|:\s*)?{_SIGNED.format('n1')}{_UNIT}?", _absolute("azimuth")),
        # quarter views
        (
            rf"(?P<end>front|back|rear)[-\s]?(?P<dir>left|right)\s+(?:{_QUARTER}|view|angle|shot)(?:\s+view)?",
            _quarter,
        ),
        (rf"(?P<dir>left|right)\s+{_QUARTER}\s+view", _quarter),
        (rf"{_QUARTER}\s+(?:back|rear)\s+view|{_QUARTER}\s+view\s+from\s+behind", _set("azimuth", 135)),
        (rf"{_QUARTER}\s+view(?:\s+{_FROM_QUARTER})?", _quarter),
        (rf"(?:{_VIEW}\s+)?{_FROM_QUARTER}", _quarter),
        # sides
        (
            rf"{_SEEN}?from\s+the\s+left(?:[-\s]hand)?(?:\s+side)?{_PHRASE_END}|left[-\s]?side\s+{_VIEW}|"
            rf"left\s+profile(?:\s+{_VIEW})?",
            _guarded("azimuth", 270, before_object=False, edit_clause=True),
        ),
        (
            rf"{_SEEN}?from\s+the\s+(?:right(?:[-\s]hand)?\s+)?side{_PHRASE_END}|"
            rf"{_SEEN}?from\s+the\s+right(?:[-\s]hand)?{_PHRASE_END}|"
            rf"right[-\s]?side\s+{_VIEW}|right\s+profile(?:\s+{_VIEW})?|side[-\s]on(?:\s+{_VIEW})?|"
            r"side\s+(?:view|profile|angle|shot)|profile\s+(?:view|shot)",
            _guarded("azimuth", 90, before_object=False, edit_clause=True),
        ),
        (r"(?:left|right)[-\s]side", _side),
        (r"camera\s+(?:is\s+)?on\s+the\s+(?P<dir>left|right)(?:\s+side)?", _camera_side),
        # back and front
        (
            rf"(?:back|rear)\s+(?:view|shot)(?![-\s]mirror)|{_SEEN}?from\s+the\s+(?:back|rear){_PHRASE_END}|"
            rf"{_SEEN}?from\s+behind(?!{_OBJECT})|{_SEEN}?from\s+the\s+(?:other|opposite)\s+side",
            _guarded("azimuth", 180, before_object=False, edit_clause=True),
        ),
        (
            r"(?:orbit|go|move|walk|circle|swing)\s+(?:the\s+camera\s+)?(?:around\s+)?"
            r"(?:to\s+the\s+back|behind(?:\s+(?:it|him|her|them|the\s+(?:subject|model|person|object)))?)",
            _set("azimuth", 180),
        ),
        (
            rf"front(?:al)?\s+(?:view|shot)|{_SEEN}?from\s+the\s+front{_PHRASE_END}|"
            rf"(?:head|straight)[-\s]on(?:\s+{_VIEW})?",
            _guarded("azimuth", 0, before_object=False, edit_clause=True),
        ),
        # elevation in words
        (rf"{_SEEN}?(?:slightly\s+from\s+above|from\s+slightly\s+above)", _set("elevation", 30)),
        (
            rf"slightly\s+elevated(?:\s+{_VIEW})?|elevated\s+{_VIEW}|higher\s+angle|raise\s+the\s+camera",
            _set("elevation", 30),
        ),
        (
            rf"bird(?:['\u2019]?s)?[-\s]?eye(?:\s+{_VIEW})?|top-down(?:\s+{_VIEW})?|top\s+down\s+{_VIEW}|"
            rf"overhead\s+{_VIEW}|from\s+overhead|high[-\s]angle(?:\s+{_VIEW})?|from\s+a\s+high\s+angle|"
            rf"aerial(?:\s+{_VIEW}|(?=\s+(?:wide|close|long|full|medium)\b))|drone\s+(?:{_VIEW}|footage)|"
            r"from\s+the\s+air|from\s+(?:directly|high)\s+above|top\s+view|view\s+from\s+(?:the\s+)?top(?!\s+of)|"
            r"looking\s+down\s+from\s+above",
            _set("elevation", 60),
        ),
        (rf"{_SEEN}?from\s+above", _guarded("elevation", 60, edit_clause=True)),
        (
            rf"worm(?:['\u2019]?s)?[-\s]?eye(?:\s+{_VIEW})?|low[-\s]angle(?:\s+{_VIEW})?|from\s+a\s+low\s+angle|"
            rf"lower\s+angle|lower\s+the\s+camera|ground[-\s]level\s+(?:{_VIEW}|camera)|"
            r"(?:from|camera\s+at)\s+ground\s+level|from\s+slightly\s+below|slightly\s+from\s+below",
            _set("elevation", -30),
        ),
        (rf"{_SEEN}?from\s+below", _guarded("elevation", -30, edit_clause=True)),
        (rf"(?:at\s+)?eye[-\s]?level(?:\s+{_VIEW})?(?!\s+with\b)", _set("elevation", 0)),
        # elevation in degrees
        (
            rf"(?:(?:tilt|raise|lower|move)\s+(?:the\s+)?camera\s+|camera\s+|from\s+)?{_NUMBER.format('n1')}{_UNIT}"
            r"\s*(?P<dir>up(?:wards?)?|down(?:wards?)?|above|below|higher|lower)",
            _tilt,
        ),
        (rf"elevation\s*(?:of\s+|=\s*|:\s*)?{_SIGNED.format('n1')}{_UNIT}?", _absolute("elevation")),
        # distance
        (rf"(?:extreme\s+|medium\s+)?close[-\s]?up(?:\s+{_VIEW})?", _guarded("distance", "0.6")),
        (
            r"zoom(?:ed)?(?:\s+the\s+camera)?\s+in(?:\s+(?:a\s+(?:little\s+)?bit|a\s+little|slightly))?|"
            r"closer\s+(?:view|shot)|(?:from\s+)?up\s+close|(?:tight|close|macro)\s+shot|head[-\s]?shot",
            _set("distance", "0.6"),
        ),
        (
            r"(?:move|bring|get|come|go)\s+(?:the\s+camera\s+|it\s+)?closer|"
            r"(?:a\s+(?:little\s+)?bit|slightly|much|a\s+little)\s+closer|"
            r"move\s+(?:the\s+camera\s+)?forwards?|(?:push|dolly)\s+in",
            _guarded("distance", "0.6", edit_clause=True),
        ),
        (
            rf"(?:extreme\s+)?wide[-\s]angle(?:\s+(?:{_VIEW}|lens))?|(?:full|full[-\s]body|long|establishing)\s+shot|"
            r"full[-\s]body(?:\s+view)?|extreme\s+wide\s+shot|wide\s+view|wider\s+(?:shot|view|angle|framing)|"
            r"zoom(?:ed)?(?:\s+the\s+camera)?\s+out(?:\s+(?:a\s+(?:little\s+)?bit|a\s+little|slightly))?|"
            r"dolly\s+out|far\s+shot",
            _set("distance", "1.8"),
        ),
        (r"from\s+far\s+away|from\s+a\s+distance", _guarded("distance", "1.8", edit_clause=True)),
        (
            r"(?:pull|move|step)\s+(?:the\s+camera\s+)?back(?:wards?)?(?!\s+(?:in|into|to|from)\b)|"
            r"pull\s+the\s+camera\s+back",
            _guarded("distance", "1.8"),
        ),
        (r"mid(?:dle)?[-\s]?shot|waist[-\s]up(?:\s+shot)?", _set("distance", 1)),
    ]
]
