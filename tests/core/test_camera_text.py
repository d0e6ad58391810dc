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


#: How people write camera moves in prompts (the issue threads of the ComfyUI nodes for this LoRA, the hosted
#: providers' examples, everyday photo words), anywhere in the sentence and in any order.
EVERYDAY = [
    # directions, with or without "side", before or after other phrases
    ("wide shot from the left side", pose(270, 0, 1.8), ""),
    ("from the left side, wide shot", pose(270, 0, 1.8), ""),
    ("from the left", pose(270), ""),
    ("from the right", pose(90), ""),
    ("shot from the left", pose(270), ""),
    ("a view from the right", pose(90), ""),
    ("from the right-hand side", pose(90), ""),
    ("from the left hand side", pose(270), ""),
    ("from the side", pose(90), ""),
    ("shot from the side", pose(90), ""),
    ("side-on view", pose(90), ""),
    ("side angle", pose(90), ""),
    ("profile shot", pose(90), ""),
    ("left profile view", pose(270), ""),
    ("extreme close-up from the right", pose(90, 0, 0.6), ""),
    ("show it from the left", pose(270), ""),
    ("the same scene from the right", pose(90), "the same scene"),
    ("camera on the left", pose(270), ""),
    ("camera on the right side", pose(90), ""),
    ("from the back right", pose(135), ""),
    ("from the back-left", pose(225), ""),
    ("from the front right", pose(45), ""),
    ("from the front-left", pose(315), ""),
    ("view from the rear left", pose(225), ""),
    ("three-quarter view from the front left", pose(315), ""),
    ("3/4 view from the back right", pose(135), ""),
    ("three quarter view from behind", pose(135), ""),
    ("three-quarter back view", pose(135), ""),
    ("3/4 rear view", pose(135), ""),
    ("left three-quarter view", pose(315), ""),
    ("right 3/4 view", pose(45), ""),
    ("back-right view", pose(135), ""),
    ("front-left view", pose(315), ""),
    ("rear-right angle", pose(135), ""),
    ("front right angle", pose(45), ""),
    ("rear shot", pose(180), ""),
    ("front shot", pose(0), ""),
    ("frontal shot", pose(0), ""),
    ("head-on view", pose(0), ""),
    ("straight-on shot", pose(0), ""),
    ("from the other side", pose(180), ""),
    ("view from the opposite side", pose(180), ""),
    ("orbit to the back", pose(180), ""),
    ("go around to the back", pose(180), ""),
    ("move the camera behind the subject", pose(180), ""),
    # the sides as places to move the camera to
    ("Move the camera to the right side, low angle", pose(90, -30), ""),
    ("Turn the camera to the left side", pose(270), ""),
    ("move to the left side", pose(270), ""),
    ("orbit the camera to the right side", pose(90), ""),
    # rotations: degrees with or without a unit, clockwise seen from above, words for amounts
    ("Rotate the camera 45 degrees to the left and move it closer", pose(315, 0, 0.6), ""),
    ("camera 45° right, 30° up", pose(45, 30), ""),
    ("camera 90 degrees left", pose(270), ""),
    ("camera 45 degrees to the left", pose(315), ""),
    ("rotate camera 90 right", pose(90), ""),
    ("Rotate 45 degrees to the left.", pose(315), ""),
    ("Move the camera 90° to the left", pose(270), ""),
    ("rotate 30 degrees to the right", pose(45), ""),
    ("rotate right 45°", pose(45), ""),
    ("rotate 180", pose(180), ""),
    ("turn the camera 90 degrees clockwise", pose(90), ""),
    ("rotate 45 degrees counterclockwise", pose(315), ""),
    ("rotate the camera 90° anticlockwise", pose(270), ""),
    ("rotate the camera counter-clockwise", pose(315), ""),
    ("rotate the camera a quarter turn right", pose(90), ""),
    ("rotate a half turn", pose(180), ""),
    ("turn the camera slightly right", pose(45), ""),
    ("rotate the camera a little to the left", pose(315), ""),
    ("spin around", pose(180), ""),
    ("turn the camera 45 degrees right and zoom out", pose(45, 0, 1.8), ""),
    ("camera at 90 degrees", pose(90), ""),
    ("azimuth 135", pose(135), ""),
    ("azimuth 225 degrees, elevation 30 degrees", pose(225, 30), ""),
    # elevation in words
    ("aerial view", pose(0, 60), ""),
    ("aerial shot of the city", pose(0, 60), "of the city"),
    ("drone shot", pose(0, 60), ""),
    ("drone view of the beach", pose(0, 60), "of the beach"),
    ("from the air", pose(0, 60), ""),
    ("from directly above", pose(0, 60), ""),
    ("top view", pose(0, 60), ""),
    ("view from the top", pose(0, 60), ""),
    ("the view from above", pose(0, 60), ""),
    ("from a high angle", pose(0, 60), ""),
    ("from a low angle", pose(0, -30), ""),
    ("change to a low angle", pose(0, -30), ""),
    ("ground-level shot looking up", pose(0, -30), ""),
    ("ground level view", pose(0, -30), ""),
    ("from ground level", pose(0, -30), ""),
    ("camera at ground level", pose(0, -30), ""),
    ("slightly from below", pose(0, -30), ""),
    ("from slightly below", pose(0, -30), ""),
    ("higher angle", pose(0, 30), ""),
    ("lower angle", pose(0, -30), ""),
    ("raise the camera", pose(0, 30), ""),
    ("lower the camera", pose(0, -30), ""),
    ("looking down from above", pose(0, 60), ""),
    # elevation in degrees (to the nearest of -30, 0, 30, 60)
    ("30° up", pose(0, 30), ""),
    ("camera 60 degrees up", pose(0, 60), ""),
    ("30 degrees above", pose(0, 30), ""),
    ("from 60 degrees above", pose(0, 60), ""),
    ("camera 30 degrees down", pose(0, -30), ""),
    ("elevation -30", pose(0, -30), ""),
    ("tilt the camera 45 degrees up", pose(0, 60), ""),
    ("80 degrees up", pose(0, 60), ""),
    # distance
    ("move it closer", pose(0, 0, 0.6), ""),
    ("a bit closer", pose(0, 0, 0.6), ""),
    ("get closer to the dog", pose(0, 0, 0.6), "to the dog"),
    ("come closer", pose(0, 0, 0.6), ""),
    ("zoom in a bit", pose(0, 0, 0.6), ""),
    ("zoom out a little", pose(0, 0, 1.8), ""),
    ("zoomed in", pose(0, 0, 0.6), ""),
    ("zoomed out", pose(0, 0, 1.8), ""),
    ("up close", pose(0, 0, 0.6), ""),
    ("from up close", pose(0, 0, 0.6), ""),
    ("tight shot", pose(0, 0, 0.6), ""),
    ("close shot", pose(0, 0, 0.6), ""),
    ("macro shot", pose(0, 0, 0.6), ""),
    ("headshot", pose(0, 0, 0.6), ""),
    ("medium close-up", pose(0, 0, 0.6), ""),
    ("waist-up shot", pose(0, 0, 1.0), ""),
    ("full body", pose(0, 0, 1.8), ""),
    ("full-body view of the woman", pose(0, 0, 1.8), "of the woman"),
    ("establishing shot", pose(0, 0, 1.8), ""),
    ("extreme wide shot", pose(0, 0, 1.8), ""),
    ("wide view", pose(0, 0, 1.8), ""),
    ("wider shot", pose(0, 0, 1.8), ""),
    ("from far away", pose(0, 0, 1.8), ""),
    ("from a distance", pose(0, 0, 1.8), ""),
    ("step back", pose(0, 0, 1.8), ""),
    ("pull the camera back", pose(0, 0, 1.8), ""),
    ("make it a close-up", pose(0, 0, 0.6), ""),
    # several at once, in any order, with an instruction around them
    ("top-down view from the right", pose(90, 60), ""),
    ("eye-level view from the back", pose(180, 0), ""),
    ("close-up from below", pose(0, -30, 0.6), ""),
    ("wide shot from above", pose(0, 60, 1.8), ""),
    ("aerial wide shot", pose(0, 60, 1.8), ""),
    ("low-angle close-up of the face", pose(0, -30, 0.6), "of the face"),
    ("worm's eye view from behind", pose(180, -30), ""),
    ("high-angle shot from behind", pose(180, 60), ""),
    ("low angle view from the left", pose(270, -30), ""),
    ("close-up view of the watch from the left", pose(270, 0, 0.6), "of the watch"),
    ("low angle shot from the right side, add fog", pose(90, -30), "add fog"),
    ("rotate 90 degrees to the right and look from above", pose(90, 60), ""),
    ("make it snow, from the left, wide shot", pose(270, 0, 1.8), "make it snow"),
    ("add a red scarf, seen from behind at eye level", pose(180, 0), "add a red scarf"),
    ("a boy looking up at the sky, low angle", pose(0, -30), "a boy looking up at the sky"),
]


@pytest.mark.parametrize(("text", "expected", "instruction"), RECOGNISED + EVERYDAY)
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
    "put a hat on the left",
    "the light comes from the right",
    "wind blowing from the left",
    "a car coming from the right",
    "a lamp on the right side of the desk",
    "pull back the curtain",
    "move the trees closer together",
    "a house far away in the distance",
    "a tower seen from far",
    "the view from the top of the mountain",
    "a boy looking up at the sky",
    "a door at ground level",
    "an aerial on the roof",
    "raise the flag",
    "lower the lights",
    "step back in time",
    "make the camera on the table red",
    "add a clock showing 30 degrees",
    "a 45 degree slope to the right",
    "a close shave",
    # misread once, found in review: the words after an editing verb are about the picture
    "Remove the person from the left",
    "Make the second person from the left smile",
    "Erase the second car from the right",
    "Crop out the photobomber from the back row",
    "Remove the reflection from the back window",
    "Add a label from the front desk",
    "Make the text read from the right to the left",
    "Light the scene from the left",
    "Add a bird flying from the right",
    "Add a dog running in from the right",
    "Shift the hue 30 degrees up",
    "Lower the horizon slightly below the middle",
    "Make the picture a bit closer to the original colours",
    "Add a person walking from far away",
    "The woman is standing at eye level with the horse",
    "Move forward the date on the calendar",
    "Push in the drawer",
    "a man from the back row",
    "",
    "   ",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_instructions_pass_through_unchanged(text: str):
    assert parse_camera_text(text) == CameraText(pose=None, instruction=text)


def test_a_prompt_over_the_limit_is_refused_before_any_pattern_runs() -> None:
    with pytest.raises(InvalidInput, match="2,000") as caught:
        parse_camera_text("rotate 5" + " " * 2000 + "x")
    assert caught.value.field == "prompt"


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


@pytest.mark.parametrize(
    ("text", "axes"),
    [
        ("rotate the camera 90 degrees right, make it snowy", {"azimuth"}),
        ("bird's-eye view", {"elevation"}),
        ("back view, close-up", {"azimuth", "distance"}),
        ("<sks>", set()),
    ],
)
def test_the_axes_a_prompt_names_are_told(text: str, axes: set[str]) -> None:
    assert parse_camera_text(text).axes == axes
