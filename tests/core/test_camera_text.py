"""Camera requests in plain English (Segmind-style prompts)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reangle.core.camera import DEFAULT_POSE, CameraPose, all_poses
from reangle.core.camera_text import CameraText, parse_camera_text
from reangle.errors import InvalidInput


def pose(azimuth: int = 0, elevation: int = 0, distance: float = 1.0) -> CameraPose:
    return CameraPose(azimuth_deg=azimuth, elevation_deg=elevation, distance_factor=distance)


RECOGNISED = [
    # the LoRA's own phrases, with or without the trigger
    ("<sks> back view high-angle shot wide shot", pose(180, 60, 1.8), ""),
    ("<sks> front-left quarter view low-angle shot close-up", pose(315, -30, 0.6), ""),
    ("left side view", pose(270), ""),
    ("back-right quarter view", pose(135), ""),
    ("Back-Left Quarter View, elevated shot", pose(225, 30), ""),
    ("front right quarter view", pose(45), ""),
    ("EYE-LEVEL SHOT", pose(0, 0), ""),
    ("high angle shot of a castle", pose(0, 60), "of a castle"),
    ("<sks> make it blue", DEFAULT_POSE, "make it blue"),
    # view names
    ("front view of the statue", pose(0), "of the statue"),
    ("side view", pose(90), ""),
    ("Show a side view of the car", pose(90), "of the car"),
    # lead-in words that only introduce the camera phrase go with it
    ("Turn the camera to a top-down view.", pose(0, 60), ""),
    ("Switch to a wide shot", pose(0, 0, 1.8), ""),
    ("Change the view to the back view and add snow", pose(180), "add snow"),
    ("add a hat and show the back view", pose(180), "add a hat"),
    ("left side, make it blue", pose(270), "make it blue"),
    ("right side", pose(90), ""),
    ("left profile", pose(270), ""),
    ("viewed from the left", pose(270), ""),
    ("seen from the right side", pose(90), ""),
    ("back view", pose(180), ""),
    ("rear view of the house", pose(180), "of the house"),
    ("from behind", pose(180), ""),
    ("photographed from behind, add a scarf", pose(180), "add a scarf"),
    ("seen from the back", pose(180), ""),
    ("three-quarter view", pose(45), ""),
    ("quarter view", pose(45), ""),
    ("3/4 view", pose(45), ""),
    ("rear-left three-quarter view", pose(225), ""),
    # elevation
    ("bird's-eye view of the city", pose(0, 60), "of the city"),
    ("Birds eye view", pose(0, 60), ""),
    ("bird\u2019s eye", pose(0, 60), ""),
    ("top-down view of a desk", pose(0, 60), "of a desk"),
    ("overhead shot", pose(0, 60), ""),
    ("From above, add a red hat", pose(0, 60), "add a red hat"),
    ("high angle", pose(0, 60), ""),
    ("slightly elevated", pose(0, 30), ""),
    ("elevated view of the street", pose(0, 30), "of the street"),
    ("seen slightly from above", pose(0, 30), ""),
    ("seen from below", pose(0, -30), ""),
    ("from below, make it dramatic", pose(0, -30), "make it dramatic"),
    ("low angle", pose(0, -30), ""),
    ("worm's-eye view", pose(0, -30), ""),
    ("at eye level", pose(0, 0), ""),
    # distance
    ("close-up of her face, make her smile", pose(0, 0, 0.6), "of her face, make her smile"),
    ("Close up shot", pose(0, 0, 0.6), ""),
    ("extreme close-up", pose(0, 0, 0.6), ""),
    ("zoom in on the face", pose(0, 0, 0.6), "on the face"),
    ("move the camera closer", pose(0, 0, 0.6), ""),
    ("move forward", pose(0, 0, 0.6), ""),
    ("wide shot", pose(0, 0, 1.8), ""),
    ("wide-angle", pose(0, 0, 1.8), ""),
    ("zoom out", pose(0, 0, 1.8), ""),
    ("pull back", pose(0, 0, 1.8), ""),
    ("move back", pose(0, 0, 1.8), ""),
    ("move the camera back", pose(0, 0, 1.8), ""),
    ("full shot of the model", pose(0, 0, 1.8), "of the model"),
    ("medium shot", pose(0, 0, 1.0), ""),
    # rotation: right is +N, left is -N, no number is 45
    ("Rotate the camera 90 degrees to the right", pose(90), ""),
    ("rotate the camera 90 degrees right", pose(90), ""),
    ("rotate the camera 45 degrees left and make the sky blue", pose(315), "make the sky blue"),
    ("rotate 45° left", pose(315), ""),
    ("rotate 90 deg right", pose(90), ""),
    ("Rotate the camera left", pose(315), ""),
    ("turn the camera right", pose(45), ""),
    ("pan the camera to the left", pose(315), ""),
    ("move the camera 135 degrees to the right", pose(135), ""),
    ("orbit 90 degrees to the right", pose(90), ""),
    ("orbit left", pose(315), ""),
    ("turn 90 degrees left", pose(270), ""),
    ("rotate camera right by 90 degrees", pose(90), ""),
    ("rotate the camera by 30 degrees right", pose(45), ""),
    ("rotate 22.5 degrees right", pose(45), ""),
    ("rotate 22 degrees right", pose(0), ""),
    ("rotate the camera 450 degrees to the left", pose(270), ""),
    ("turn around", pose(180), ""),
    ("Turn the camera around, add snow", pose(180), "add snow"),
    ("rotate 180 degrees", pose(180), ""),
    ("rotate left 90 degrees then rotate left 90 degrees", pose(180), ""),
    # several axes, later phrases and turns applied in order
    ("Rotate the camera 90 degrees right, bird's-eye view, zoom out", pose(90, 60, 1.8), ""),
    ("back view, rotate 45 degrees right", pose(225), ""),
    ("side view, close-up. Make the sky blue.", pose(90, 0, 0.6), "Make the sky blue."),
    ("Make the sky blue. Back view.", pose(180), "Make the sky blue."),
    ("(close-up) add a hat", pose(0, 0, 0.6), "add a hat"),
    ("Add snow - low angle shot", pose(0, -30), "Add snow"),
    ("add a hat, a close-up", pose(0, 0, 0.6), "add a hat"),
    ("viewed from the side", pose(90), ""),
    ("rear left quarter", pose(225), ""),
    ("left side shot", pose(270), ""),
    ("top down view", pose(0, 60), ""),
    ("eye level shot", pose(0, 0), ""),
    ("closeup", pose(0, 0, 0.6), ""),
    ("middle shot", pose(0, 0, 1.0), ""),
    ("full-body shot", pose(0, 0, 1.8), ""),
    ("swing the camera right", pose(45), ""),
    ("Rotate the camera 90 degrees right, bird's-eye view, make it snow", pose(90, 60), "make it snow"),
]


@pytest.mark.parametrize(("text", "expected", "instruction"), RECOGNISED)
def test_recognised_phrasings(text: str, expected: CameraPose, instruction: str):
    assert parse_camera_text(text) == CameraText(pose=expected, instruction=instruction)


ORDINARY = [
    "put the cup back on the table",
    "make the sky bright",
    "paint the left side of the car red",
    "show the right side of the building in red",
    "remove the person on the right",
    "move the vase to the left",
    "move the chair back",
    "bring it back to life",
    "she looks back at the camera",
    "make the person turn left",
    "turn right at the corner",
    "rotate the left wheel",
    "turn on the lights",
    "add overhead lighting",
    "add light from above",
    "a lamp hanging from above the table",
    "the sun comes from below",
    "the dog is hiding from behind the tree",
    "close up the gap in the fence",
    "replace the rear view mirror",
    "a convertible with the top down",
    "an elevated platform",
    "a wide road",
    "frontal lobe diagram",
    "write 'zoom' on the sign",
    "the sun shining from above",
    "rotate the camera",
    "rotate the camera 1234567890 degrees right",
    "Make it look like a watercolor painting, keep the background.",
    "",
    "   ",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_instructions_pass_through_unchanged(text: str):
    assert parse_camera_text(text) == CameraText(pose=None, instruction=text)


def test_rejects_non_text():
    with pytest.raises(InvalidInput) as caught:
        parse_camera_text(42)  # type: ignore[arg-type]
    assert caught.value.field == "prompt"


INSTRUCTIONS = [
    "",
    "make it snow",
    "the cat wears a red hat",
    "add a rainbow over the hills",
    "keep the lighting, remove the car",
    "turn the sky orange.",
]


@given(st.sampled_from(all_poses()), st.sampled_from(INSTRUCTIONS))
def test_pose_prompts_round_trip(expected: CameraPose, instruction: str):
    assert parse_camera_text(expected.prompt(instruction)) == CameraText(
        pose=expected, instruction=instruction
    )


@given(st.sampled_from(all_poses()))
def test_round_trip_ignores_case_and_trigger(expected: CameraPose):
    phrase = f"{expected.azimuth} {expected.elevation} {expected.distance}"
    assert parse_camera_text(expected.prompt().upper()).pose == expected
    assert parse_camera_text(phrase).pose == expected


@given(st.text(max_size=200))
def test_any_text_parses_to_a_known_pose_or_passes_through(text: str):
    result = parse_camera_text(text)
    if result.pose is None:
        assert result.instruction == text
    else:
        assert result.pose in set(all_poses())
        assert len(result.instruction) < len(text)


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["left", "right"]))
def test_rotation_matches_the_azimuth_convention(degrees: int, direction: str):
    result = parse_camera_text(f"rotate the camera {degrees} degrees to the {direction}")
    signed = degrees if direction == "right" else -degrees
    assert result.pose == CameraPose(azimuth_deg=round(signed / 45) % 8 * 45)  # integers never tie
    assert result.instruction == ""
