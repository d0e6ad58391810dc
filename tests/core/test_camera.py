"""The canonical pose, the 2511 Multiple-Angles vocabulary and the numeric parsers."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from reangle.core.camera import (
    DEFAULT_POSE,
    MULTIPLE_ANGLES_2511,
    CameraPose,
    all_poses,
    pose_from_continuous,
    pose_from_snapped,
    resolve_pose,
    snap_azimuth,
)
from reangle.errors import InvalidInput

ALL = set(all_poses())
AZIMUTHS = [0, 45, 90, 135, 180, 225, 270, 315]
finite = st.floats(allow_nan=False, allow_infinity=False)
verticals = st.floats(min_value=-90, max_value=90)
zooms = st.floats(min_value=0, max_value=10)
factors = st.floats(min_value=0, max_value=10, exclude_min=True)


# --- the vocabulary and the pose --------------------------------------------------------------------------


def test_vocabulary_is_the_2511_table():
    vocab = MULTIPLE_ANGLES_2511
    assert vocab.name == "qwen-edit-2511-multiple-angles"
    assert vocab.trigger == "<sks>"
    assert dict(vocab.azimuths) == {
        0: "front view",
        45: "front-right quarter view",
        90: "right side view",
        135: "back-right quarter view",
        180: "back view",
        225: "back-left quarter view",
        270: "left side view",
        315: "front-left quarter view",
    }
    assert dict(vocab.elevations) == {
        -30: "low-angle shot",
        0: "eye-level shot",
        30: "elevated shot",
        60: "high-angle shot",
    }
    assert dict(vocab.distances) == {0.6: "close-up", 1.0: "medium shot", 1.8: "wide shot"}


def test_default_pose_is_front_eye_level_medium():
    assert CameraPose(azimuth_deg=0, elevation_deg=0, distance_factor=1.0) == DEFAULT_POSE
    assert DEFAULT_POSE.camera_phrase == "<sks> front view eye-level shot medium shot"


def test_phrases_and_to_dict():
    pose = CameraPose(azimuth_deg=90, elevation_deg=30, distance_factor=0.6)
    assert (pose.azimuth, pose.elevation, pose.distance) == ("right side view", "elevated shot", "close-up")
    assert pose.camera_phrase == "<sks> right side view elevated shot close-up"
    assert pose.to_dict() == {
        "azimuth": "right side view",
        "azimuth_deg": 90,
        "elevation": "elevated shot",
        "elevation_deg": 30,
        "distance": "close-up",
        "prompt": "<sks> right side view elevated shot close-up",
    }


@pytest.mark.parametrize("pose", all_poses())
def test_to_dict_has_exactly_the_keys_in_order(pose: CameraPose):
    data = pose.to_dict()
    assert list(data) == ["azimuth", "azimuth_deg", "elevation", "elevation_deg", "distance", "prompt"]
    assert data["prompt"] == pose.camera_phrase
    assert data["azimuth_deg"] == pose.azimuth_deg


def test_prompt_appends_the_stripped_instruction():
    pose = CameraPose(azimuth_deg=180, elevation_deg=60, distance_factor=1.8)
    assert pose.prompt() == "<sks> back view high-angle shot wide shot"
    assert pose.prompt("   ") == "<sks> back view high-angle shot wide shot"
    assert pose.prompt("  make it snow\n") == "<sks> back view high-angle shot wide shot make it snow"


def test_all_poses_are_96_distinct_and_ordered():
    poses = all_poses()
    assert len(poses) == 96
    assert len({p.camera_phrase for p in poses}) == 96
    assert len(set(poses)) == 96
    key = [(p.azimuth_deg, p.elevation_deg, p.distance_factor) for p in poses]
    assert key == sorted(key)
    assert poses[0] == CameraPose(azimuth_deg=0, elevation_deg=-30, distance_factor=0.6)
    assert poses[-1] == CameraPose(azimuth_deg=315, elevation_deg=60, distance_factor=1.8)


def test_pose_normalises_equal_numbers():
    pose = CameraPose(azimuth_deg=90.0, elevation_deg=30.0, distance_factor=1)  # type: ignore[arg-type]
    assert pose == CameraPose(azimuth_deg=90, elevation_deg=30, distance_factor=1.0)
    assert type(pose.azimuth_deg) is int
    assert type(pose.elevation_deg) is int
    assert type(pose.distance_factor) is float
    assert hash(pose) == hash(CameraPose(azimuth_deg=90, elevation_deg=30, distance_factor=1.0))


@pytest.mark.parametrize(
    ("kwargs", "field", "accepted"),
    [
        ({"azimuth_deg": 360}, "azimuth_deg", "0, 45, 90, 135, 180, 225, 270, 315"),
        ({"azimuth_deg": -45}, "azimuth_deg", "0, 45, 90, 135, 180, 225, 270, 315"),
        ({"azimuth_deg": 30}, "azimuth_deg", "0, 45, 90, 135, 180, 225, 270, 315"),
        ({"elevation_deg": 45}, "elevation_deg", "-30, 0, 30, 60"),
        ({"elevation_deg": 90}, "elevation_deg", "-30, 0, 30, 60"),
        ({"distance_factor": 1.4}, "distance_factor", "0.6, 1.0, 1.8"),
        ({"distance_factor": True}, "distance_factor", "0.6, 1.0, 1.8"),
        ({"azimuth_deg": "90"}, "azimuth_deg", "0, 45, 90, 135, 180, 225, 270, 315"),
        ({"elevation_deg": math.nan}, "elevation_deg", "-30, 0, 30, 60"),
    ],
)
def test_pose_rejects_values_outside_the_vocabulary(kwargs: dict[str, object], field: str, accepted: str):
    with pytest.raises(InvalidInput) as caught:
        CameraPose(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert caught.value.message.startswith(f"{field} must be one of {accepted}, got ")


# --- continuous (Scenario, fal) -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("horizontal", "azimuth"),
    [
        (0, "front view"),
        (350, "front view"),
        (337.5, "front view"),
        (337.4, "front-left quarter view"),
        (22.4, "front view"),
        (22.5, "front-right quarter view"),
        (45, "front-right quarter view"),
        (67.5, "right side view"),
        (90, "right side view"),
        (135, "back-right quarter view"),
        (180, "back view"),
        (202.4, "back view"),
        (202.5, "back-left quarter view"),
        (270, "left side view"),
        (-45, "front-left quarter view"),
        (-90, "left side view"),
        (-22.5, "front view"),
        (-22.6, "front-left quarter view"),
        (-22.500000000000004, "front-left quarter view"),  # float % 360 would round this onto 337.5
        (22.499999999999996, "front view"),
        (360, "front view"),
        (720 + 90, "right side view"),
        (-720 - 90, "left side view"),
        (1e300, "front view"),
        (-5e-324, "front view"),
    ],
)
def test_continuous_horizontal_angle(horizontal: float, azimuth: str):
    assert pose_from_continuous(horizontal_angle=horizontal).azimuth == azimuth


@pytest.mark.parametrize(
    ("vertical", "elevation"),
    [
        (-90, "low-angle shot"),
        (-15.000001, "low-angle shot"),
        (-15, "eye-level shot"),
        (0, "eye-level shot"),
        (14.999, "eye-level shot"),
        (15, "elevated shot"),
        (30, "elevated shot"),
        (44.999, "elevated shot"),
        (45, "high-angle shot"),
        (60, "high-angle shot"),
        (90, "high-angle shot"),
    ],
)
def test_continuous_vertical_angle(vertical: float, elevation: str):
    assert pose_from_continuous(vertical_angle=vertical).elevation == elevation


@pytest.mark.parametrize(
    ("zoom", "distance"),
    [
        (0, "wide shot"),
        (1.999, "wide shot"),
        (2, "medium shot"),
        (5, "medium shot"),
        (5.999, "medium shot"),
        (6, "close-up"),
        (10, "close-up"),
    ],
)
def test_continuous_zoom(zoom: float, distance: str):
    assert pose_from_continuous(zoom=zoom).distance == distance


def test_continuous_defaults_are_the_default_pose():
    assert pose_from_continuous() == DEFAULT_POSE


# --- snapped (RunPod worker) --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("azimuth", "expected"),
    [(0, 0), (350, 0), (22.5, 45), (-45, 315), (810, 90), (100, 90), (112.5, 135), (-180, 180), (675, 315)],
)
def test_snapped_azimuth(azimuth: float, expected: int):
    assert pose_from_snapped(azimuth=azimuth).azimuth_deg == expected


@pytest.mark.parametrize(
    ("elevation", "expected"),
    [
        (-90, -30),
        (-30, -30),
        (-15.5, -30),
        (-15, 0),  # tie between -30 and 0 goes to the higher
        (0, 0),
        (14.9, 0),
        (15, 30),  # tie between 0 and 30
        (30, 30),
        (45, 60),  # tie between 30 and 60
        (60, 60),
        (90, 60),
    ],
)
def test_snapped_elevation(elevation: float, expected: int):
    assert pose_from_snapped(elevation=elevation).elevation_deg == expected


@pytest.mark.parametrize(
    ("distance", "expected"),
    [
        (0.0001, "close-up"),
        (0.6, "close-up"),
        (0.79, "close-up"),
        (0.8, "medium shot"),
        (1.0, "medium shot"),
        (1.2, "medium shot"),
        (1.4, "medium shot"),
        (1.59, "medium shot"),
        (1.6, "wide shot"),
        (1.8, "wide shot"),
        (10, "wide shot"),
    ],
)
def test_snapped_distance(distance: float, expected: str):
    assert pose_from_snapped(distance=distance).distance == expected


def test_snapped_defaults_are_the_default_pose():
    assert pose_from_snapped() == DEFAULT_POSE


# --- resolve_pose -------------------------------------------------------------------------------------------


def test_resolve_pose_defaults_every_missing_axis():
    assert resolve_pose() == DEFAULT_POSE
    assert resolve_pose(horizontal_angle=90) == CameraPose(azimuth_deg=90)
    assert resolve_pose(elevation=30) == CameraPose(elevation_deg=30)
    assert resolve_pose(distance=1.8) == CameraPose(distance_factor=1.8)


def test_resolve_pose_mixes_axes_independently():
    pose = resolve_pose(azimuth=180, vertical_angle=50, distance=0.6)
    assert pose == CameraPose(azimuth_deg=180, elevation_deg=60, distance_factor=0.6)
    pose = resolve_pose(horizontal_angle=-90, elevation=-20, zoom=1)
    assert pose == CameraPose(azimuth_deg=270, elevation_deg=-30, distance_factor=1.8)


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        (
            {"horizontal_angle": 10, "azimuth": 10},
            "azimuth",
            "give either horizontal_angle or azimuth, not both",
        ),
        (
            {"vertical_angle": 0, "elevation": 0},
            "elevation",
            "give either vertical_angle or elevation, not both",
        ),
        ({"zoom": 5, "distance": 1.0}, "distance", "give either zoom or distance, not both"),
    ],
)
def test_resolve_pose_rejects_both_members_of_a_pair(kwargs: dict[str, float], field: str, message: str):
    with pytest.raises(InvalidInput) as caught:
        resolve_pose(**kwargs)
    assert caught.value.field == field
    assert caught.value.message == message


# --- errors -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        (
            {"horizontal_angle": math.nan},
            "horizontal_angle",
            "horizontal_angle must be a finite number, got nan",
        ),
        (
            {"horizontal_angle": math.inf},
            "horizontal_angle",
            "horizontal_angle must be a finite number, got inf",
        ),
        ({"azimuth": -math.inf}, "azimuth", "azimuth must be a finite number, got -inf"),
        ({"vertical_angle": math.nan}, "vertical_angle", "vertical_angle must be a finite number, got nan"),
        ({"vertical_angle": 90.5}, "vertical_angle", "vertical_angle must be between -90 and 90, got 90.5"),
        ({"vertical_angle": -91}, "vertical_angle", "vertical_angle must be between -90 and 90, got -91"),
        ({"elevation": math.inf}, "elevation", "elevation must be a finite number, got inf"),
        ({"elevation": 100}, "elevation", "elevation must be between -90 and 90, got 100"),
        ({"zoom": 12.5}, "zoom", "zoom must be between 0 and 10, got 12.5"),
        ({"zoom": -0.1}, "zoom", "zoom must be between 0 and 10, got -0.1"),
        ({"zoom": math.nan}, "zoom", "zoom must be a finite number, got nan"),
        ({"distance": 0}, "distance", "distance must be greater than 0 and at most 10, got 0"),
        ({"distance": -1}, "distance", "distance must be greater than 0 and at most 10, got -1"),
        ({"distance": 10.01}, "distance", "distance must be greater than 0 and at most 10, got 10.01"),
        ({"distance": math.inf}, "distance", "distance must be a finite number, got inf"),
        ({"zoom": "5"}, "zoom", "zoom must be a number, got '5'"),
        ({"azimuth": True}, "azimuth", "azimuth must be a number, got True"),
        (
            {"azimuth": None, "vertical_angle": [0]},
            "vertical_angle",
            "vertical_angle must be a number, got [0]",
        ),
    ],
)
def test_bad_numbers_name_the_field_and_range(kwargs: dict[str, object], field: str, message: str):
    with pytest.raises(InvalidInput) as caught:
        resolve_pose(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert caught.value.message == message
    assert caught.value.code == "invalid_input"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_every_parser_rejects_nan_and_infinities(bad: float):
    for call, field in [
        (lambda: pose_from_continuous(horizontal_angle=bad), "horizontal_angle"),
        (lambda: pose_from_continuous(vertical_angle=bad), "vertical_angle"),
        (lambda: pose_from_continuous(zoom=bad), "zoom"),
        (lambda: pose_from_snapped(azimuth=bad), "azimuth"),
        (lambda: pose_from_snapped(elevation=bad), "elevation"),
        (lambda: pose_from_snapped(distance=bad), "distance"),
        (lambda: snap_azimuth(bad, "yaw"), "yaw"),
    ]:
        with pytest.raises(InvalidInput) as caught:
            call()
        assert caught.value.field == field


# --- properties ---------------------------------------------------------------------------------------------


def _angular_gap(a: Fraction, b: int) -> Fraction:
    gap = (a - b) % 360
    return min(gap, 360 - gap)


@given(finite)
def test_any_finite_horizontal_angle_gives_a_pose_at_most_22_5_degrees_away(horizontal: float):
    pose = pose_from_continuous(horizontal_angle=horizontal)
    assert pose in ALL
    assert pose.azimuth_deg in AZIMUTHS
    assert _angular_gap(Fraction(horizontal), pose.azimuth_deg) <= Fraction(45, 2)


@given(st.floats(min_value=-1e12, max_value=1e12), st.integers(min_value=-50, max_value=50))
def test_horizontal_angle_wraps_around(horizontal: float, turns: int):
    shifted = horizontal + 360 * turns
    assume(Fraction(shifted) == Fraction(horizontal) + 360 * turns)  # the float sum is exact
    assert pose_from_continuous(horizontal_angle=shifted) == pose_from_continuous(horizontal_angle=horizontal)
    assert pose_from_snapped(azimuth=shifted) == pose_from_snapped(azimuth=horizontal)


@given(st.integers(), st.integers(min_value=-(10**30), max_value=10**30))
def test_integer_azimuths_wrap_around_exactly(degrees: int, turns: int):
    assert snap_azimuth(degrees + 360 * turns) == snap_azimuth(degrees)


@given(finite, verticals, zooms)
def test_continuous_always_gives_one_of_the_96(horizontal: float, vertical: float, zoom: float):
    assert pose_from_continuous(horizontal, vertical, zoom) in ALL


def _nearest(value: float, choices: list[str]) -> str:
    """The choice nearest to value in exact arithmetic, ties to the higher choice."""
    return max(choices, key=lambda c: (-abs(Fraction(value) - Fraction(c)), Fraction(c)))


@given(finite, verticals, factors)
def test_snapped_always_gives_one_of_the_96_and_the_nearest(
    azimuth: float, elevation: float, distance: float
):
    pose = pose_from_snapped(azimuth, elevation, distance)
    assert pose in ALL
    assert pose.elevation_deg == int(_nearest(elevation, ["-30", "0", "30", "60"]))
    worker_factor = _nearest(distance, ["0.6", "1.0", "1.4", "1.8"])
    assert pose.distance_factor == {"0.6": 0.6, "1.0": 1.0, "1.4": 1.0, "1.8": 1.8}[worker_factor]


@given(st.floats(min_value=-90, max_value=90), st.floats(min_value=-90, max_value=90))
def test_elevation_is_monotonic(low: float, high: float):
    low, high = sorted((low, high))
    assert (
        pose_from_continuous(vertical_angle=low).elevation_deg
        <= pose_from_continuous(vertical_angle=high).elevation_deg
    )


@given(zooms, zooms)
def test_more_zoom_never_moves_the_camera_back(low: float, high: float):
    low, high = sorted((low, high))
    assert pose_from_continuous(zoom=low).distance_factor >= pose_from_continuous(zoom=high).distance_factor


@given(
    st.one_of(st.none(), finite),
    st.one_of(st.none(), verticals),
    st.one_of(st.none(), zooms),
    st.one_of(st.none(), finite),
    st.one_of(st.none(), verticals),
    st.one_of(st.none(), factors),
)
def test_resolve_pose_gives_one_of_the_96_or_refuses_a_pair(
    h: float | None, v: float | None, z: float | None, a: float | None, e: float | None, d: float | None
):
    pairs = [(h, a), (v, e), (z, d)]
    if any(x is not None and y is not None for x, y in pairs):
        with pytest.raises(InvalidInput, match="not both"):
            resolve_pose(horizontal_angle=h, vertical_angle=v, zoom=z, azimuth=a, elevation=e, distance=d)
    else:
        pose = resolve_pose(horizontal_angle=h, vertical_angle=v, zoom=z, azimuth=a, elevation=e, distance=d)
        assert pose in ALL
