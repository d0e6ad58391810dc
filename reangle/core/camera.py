"""The canonical camera pose and the Multiple-Angles LoRA prompt vocabulary.

Every way a request can name a camera angle (continuous sliders, snapped degrees, the LoRA's own
phrases, plain English) ends up as one `CameraPose`: 8 azimuths x 4 elevations x 3 distances = 96 poses.
The vocabulary is data (`CameraVocabulary`); the parsers here only decide which entry a number falls into.

Direction convention: azimuth grows clockwise when the subject is seen from above, so 90 is the subject's
right side as seen by the camera ("right side view") and 270 its left. The user-facing page is docs/camera.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from numbers import Real
from typing import TypeVar

from reangle.errors import InvalidInput


@dataclass(frozen=True)
class CameraVocabulary:
    """A camera LoRA's prompt vocabulary: which phrase stands for which angle or distance."""

    name: str
    trigger: str
    azimuths: tuple[tuple[int, str], ...]
    elevations: tuple[tuple[int, str], ...]
    distances: tuple[tuple[float, str], ...]


MULTIPLE_ANGLES_2511 = CameraVocabulary(
    name="qwen-edit-2511-multiple-angles",
    trigger="<sks>",
    azimuths=(
        (0, "front view"),
        (45, "front-right quarter view"),
        (90, "right side view"),
        (135, "back-right quarter view"),
        (180, "back view"),
        (225, "back-left quarter view"),
        (270, "left side view"),
        (315, "front-left quarter view"),
    ),
    elevations=(
        (-30, "low-angle shot"),
        (0, "eye-level shot"),
        (30, "elevated shot"),
        (60, "high-angle shot"),
    ),
    distances=(
        (0.6, "close-up"),
        (1.0, "medium shot"),
        (1.8, "wide shot"),
    ),
)

_T = TypeVar("_T", int, float)
_VOCAB = MULTIPLE_ANGLES_2511
_AZIMUTHS = dict(_VOCAB.azimuths)
_ELEVATIONS = dict(_VOCAB.elevations)
_DISTANCES = dict(_VOCAB.distances)

# Banded axes: (upper bound, value) pairs read in order; a value below the bound gets that entry, a value
# exactly on a bound goes to the next entry; anything past the last bound gets the final value.
_ELEVATION_BANDS: tuple[tuple[float, int], ...] = ((-15, -30), (15, 0), (45, 30))
_ELEVATION_TOP = 60
_ZOOM_BANDS: tuple[tuple[float, float], ...] = ((2, 1.8), (6, 1.0))
_ZOOM_TOP = 0.6
# The RunPod worker's distance factors are 0.6, 1.0, 1.4 and 1.8; 1.4 is a medium shot.
_FACTOR_BANDS: tuple[tuple[float, float], ...] = ((0.8, 0.6), (1.6, 1.0))
_FACTOR_TOP = 1.8


def _fmt(value: float) -> str:
    """A number as a message shows it: 90 rather than 90.0, but every digit of 90.0000001."""
    value = float(value)
    if math.isfinite(value) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _choices(values: Iterable[float]) -> str:
    return ", ".join(str(v) for v in values)


def _number(value: object, field: str) -> float:
    """`value` as a finite float, or InvalidInput naming `field`."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InvalidInput(f"{field} must be a number, got {value!r}", field=field)
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise InvalidInput(f"{field} must be a finite number, got {_fmt(number)}", field=field)
    return number


def _in_range(value: object, field: str, low: float, high: float, *, low_open: bool = False) -> float:
    number = _number(value, field)
    if low_open and not low < number <= high:
        accepted = f"greater than {_fmt(low)} and at most {_fmt(high)}"
    elif not low <= number <= high:
        accepted = f"between {_fmt(low)} and {_fmt(high)}"
    else:
        return number
    raise InvalidInput(f"{field} must be {accepted}, got {_fmt(number)}", field=field)


def _band(value: float, bands: tuple[tuple[float, _T], ...], top: _T) -> _T:
    for upper, result in bands:
        if value < upper:
            return result
    return top


def snap_azimuth(degrees: object, field: str = "azimuth") -> int:
    """The nearest of the 8 azimuths to any finite angle in degrees, with wrap-around.

    Each azimuth owns the 45-degree sector centred on it; a value exactly on a sector boundary goes to the
    next azimuth clockwise (22.5 -> 45, 337.5 -> 0). The arithmetic is exact, so 720 + 90 and 90 agree;
    ints and Fractions of any size are taken exactly.
    """
    if isinstance(degrees, int | Fraction) and not isinstance(degrees, bool):
        exact = Fraction(degrees) % 360  # exact, however large
    else:
        exact = Fraction(_number(degrees, field)) % 360
    sector, within = divmod(exact, 45)
    return (int(sector) + (1 if within >= Fraction(45, 2) else 0)) % 8 * 45


def _canonical(value: object, field: str, table: dict[int, str] | dict[float, str], kind: type) -> object:
    if isinstance(value, bool) or not isinstance(value, Real) or value not in table:
        raise InvalidInput(f"{field} must be one of {_choices(table)}, got {value!r}", field=field)
    return kind(value)


@dataclass(frozen=True, kw_only=True)
class CameraPose:
    """One of the 96 poses the LoRA knows. Build one from user input with the parsers below."""

    azimuth_deg: int = 0
    elevation_deg: int = 0
    distance_factor: float = 1.0

    def __post_init__(self) -> None:
        # Normalise 90.0 to 90 and 1 to 1.0 so equal poses compare and hash equal.
        object.__setattr__(self, "azimuth_deg", _canonical(self.azimuth_deg, "azimuth_deg", _AZIMUTHS, int))
        object.__setattr__(
            self, "elevation_deg", _canonical(self.elevation_deg, "elevation_deg", _ELEVATIONS, int)
        )
        object.__setattr__(
            self, "distance_factor", _canonical(self.distance_factor, "distance_factor", _DISTANCES, float)
        )

    @property
    def azimuth(self) -> str:
        return _AZIMUTHS[self.azimuth_deg]

    @property
    def elevation(self) -> str:
        return _ELEVATIONS[self.elevation_deg]

    @property
    def distance(self) -> str:
        return _DISTANCES[self.distance_factor]

    @property
    def camera_phrase(self) -> str:
        """The LoRA's prompt for this pose, e.g. "<sks> right side view elevated shot close-up"."""
        return f"{_VOCAB.trigger} {self.azimuth} {self.elevation} {self.distance}"

    def prompt(self, instruction: str = "") -> str:
        """The camera phrase, then the user's own instruction (stripped) if there is one."""
        extra = instruction.strip()
        return f"{self.camera_phrase} {extra}" if extra else self.camera_phrase

    def to_dict(self) -> dict[str, object]:
        return {
            "azimuth": self.azimuth,
            "azimuth_deg": self.azimuth_deg,
            "elevation": self.elevation,
            "elevation_deg": self.elevation_deg,
            "distance": self.distance,
            "prompt": self.camera_phrase,
        }


DEFAULT_POSE = CameraPose()


def all_poses() -> list[CameraPose]:
    """The 96 poses, ordered by azimuth, then elevation, then distance factor (all ascending)."""
    return [
        CameraPose(azimuth_deg=a, elevation_deg=e, distance_factor=d)
        for a in sorted(_AZIMUTHS)
        for e in sorted(_ELEVATIONS)
        for d in sorted(_DISTANCES)
    ]


def _azimuth_axis(value: float | None, field: str) -> int:
    return DEFAULT_POSE.azimuth_deg if value is None else snap_azimuth(value, field)


def _elevation_axis(value: float | None, field: str) -> int:
    if value is None:
        return DEFAULT_POSE.elevation_deg
    return _band(_in_range(value, field, -90, 90), _ELEVATION_BANDS, _ELEVATION_TOP)


def _zoom_axis(value: float | None, field: str) -> float:
    if value is None:
        return DEFAULT_POSE.distance_factor
    return _band(_in_range(value, field, 0, 10), _ZOOM_BANDS, _ZOOM_TOP)


def _factor_axis(value: float | None, field: str) -> float:
    if value is None:
        return DEFAULT_POSE.distance_factor
    return _band(_in_range(value, field, 0, 10, low_open=True), _FACTOR_BANDS, _FACTOR_TOP)


def pose_from_continuous(
    horizontal_angle: float = 0, vertical_angle: float = 0, zoom: float = 5
) -> CameraPose:
    """Slider-style input (Scenario, fal): any finite horizontal angle, vertical angle in [-90, 90],
    zoom in [0, 10]. The horizontal angle snaps like `snap_azimuth`.

    Vertical: < -15 low-angle, [-15, 15) eye-level, [15, 45) elevated, >= 45 high-angle.
    Zoom: < 2 wide shot, [2, 6) medium shot, >= 6 close-up.
    """
    return resolve_pose(horizontal_angle=horizontal_angle, vertical_angle=vertical_angle, zoom=zoom)


def pose_from_snapped(azimuth: float = 0, elevation: float = 0, distance: float = 1.0) -> CameraPose:
    """Degree-and-factor input (RunPod worker): any finite azimuth, elevation in [-90, 90], distance
    factor in (0, 10]. The azimuth snaps like `snap_azimuth`.

    Elevation goes to the nearest of -30/0/30/60, ties to the higher one: the same bands as the vertical
    angle above.
    Distance goes to the nearest of 0.6/1.0/1.4/1.8, ties to the larger: < 0.8 close-up,
    [0.8, 1.6) medium shot (1.4 included), >= 1.6 wide shot.
    """
    return resolve_pose(azimuth=azimuth, elevation=elevation, distance=distance)


def resolve_pose(
    *,
    horizontal_angle: float | None = None,
    vertical_angle: float | None = None,
    zoom: float | None = None,
    azimuth: float | None = None,
    elevation: float | None = None,
    distance: float | None = None,
) -> CameraPose:
    """One pose from any mix of continuous and snapped fields, one field per axis.

    The pairs horizontal_angle/azimuth, vertical_angle/elevation and zoom/distance each name one axis; giving
    both members of a pair is an error. An axis given by neither keeps the default (front, eye-level, medium).
    """
    for continuous, snapped, c_name, s_name in (
        (horizontal_angle, azimuth, "horizontal_angle", "azimuth"),
        (vertical_angle, elevation, "vertical_angle", "elevation"),
        (zoom, distance, "zoom", "distance"),
    ):
        if continuous is not None and snapped is not None:
            raise InvalidInput(f"give either {c_name} or {s_name}, not both", field=s_name)
    return CameraPose(
        azimuth_deg=(
            _azimuth_axis(horizontal_angle, "horizontal_angle")
            if horizontal_angle is not None
            else _azimuth_axis(azimuth, "azimuth")
        ),
        elevation_deg=(
            _elevation_axis(vertical_angle, "vertical_angle")
            if vertical_angle is not None
            else _elevation_axis(elevation, "elevation")
        ),
        distance_factor=_zoom_axis(zoom, "zoom") if zoom is not None else _factor_axis(distance, "distance"),
    )


def views_given_twice(azimuths: Sequence[float]) -> list[str]:
    """Each view that two or more of `azimuths` snap to, said as `0 and 360 snap to the same view, 0`: a
    turntable shows each view once. Non-finite ones are left to the pose's own check."""
    views: dict[int, list[float]] = {}
    for azimuth in azimuths:
        if math.isfinite(azimuth):
            views.setdefault(snap_azimuth(azimuth, "azimuths"), []).append(azimuth)
    shown = {view: [f"{azimuth:g}" for azimuth in given] for view, given in views.items() if len(given) > 1}
    return [
        f"{', '.join(given[:-1])} and {given[-1]} snap to the same view, {view}"
        for view, given in shown.items()
    ]
