"""Camera pose flags shared by `reangle pose` and `reangle edit`."""

from __future__ import annotations

import argparse

from reangle.cli.arg_types import finite_number
from reangle.core.camera import CameraPose, resolve_pose
from reangle.core.camera_text import parse_camera_text
from reangle.errors import InvalidInput

_AXIS_FLAGS = ("horizontal_angle", "vertical_angle", "zoom", "azimuth", "elevation", "distance")
#: The axis each pose flag sets, by its snapped field's name.
_AXIS_OF = {
    "horizontal_angle": "azimuth",
    "azimuth": "azimuth",
    "vertical_angle": "elevation",
    "elevation": "elevation",
    "zoom": "distance",
    "distance": "distance",
}


def add_pose_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("camera pose (default: front view, eye-level shot, medium shot)")
    group.add_argument(
        "--horizontal-angle", type=finite_number, metavar="H", help="azimuth in degrees, any value (mod 360)"
    )
    group.add_argument(
        "--vertical-angle", type=finite_number, metavar="V", help="elevation in degrees, -90..90"
    )
    group.add_argument("--zoom", type=finite_number, metavar="Z", help="0 (wide shot) .. 10 (close-up)")
    group.add_argument(
        "--azimuth", type=finite_number, metavar="A", help="azimuth snapped to 0, 45, ..., 315"
    )
    group.add_argument(
        "--elevation", type=finite_number, metavar="E", help="elevation snapped to -30, 0, 30, 60"
    )
    group.add_argument(
        "--distance", type=finite_number, metavar="D", help="distance factor snapped to 0.6, 1.0, 1.8"
    )
    group.add_argument("--text", metavar="TEXT", help='camera move in words, e.g. "rotate 90 degrees right"')


def pose_from_args(args: argparse.Namespace) -> tuple[CameraPose, str]:
    """The pose the flags ask for, and any instruction left over from `--text`."""
    axes = {name: getattr(args, name) for name in _AXIS_FLAGS if getattr(args, name) is not None}
    if args.text is not None:
        if axes:
            flags = ", ".join("--" + name.replace("_", "-") for name in axes)
            raise InvalidInput(f"give either --text or pose flags ({flags}), not both", field="text")
        parsed = parse_camera_text(args.text)
        return parsed.pose or CameraPose(), parsed.instruction
    try:
        return resolve_pose(**axes), ""
    except InvalidInput as exc:
        raise InvalidInput(_as_flags(exc.message), field=exc.field) from None


def given_axes(args: argparse.Namespace, pose: CameraPose) -> dict[str, float]:
    """The snapped camera fields (`azimuth`, `elevation`, `distance`) of `pose` (what `pose_from_args` made of
    `args`) for the axes the flags or the words of --text name, and only those: on a server, an axis not
    named keeps the model's default, which need not be the front, eye-level, medium one."""
    if args.text is not None:
        named = set(parse_camera_text(args.text).axes)
    else:
        named = {_AXIS_OF[name] for name in _AXIS_FLAGS if getattr(args, name) is not None}
    snapped = {"azimuth": pose.azimuth_deg, "elevation": pose.elevation_deg, "distance": pose.distance_factor}
    return {axis: value for axis, value in snapped.items() if axis in named}


def _as_flags(message: str) -> str:
    """Name fields the way the user typed them (`--horizontal-angle`, not `horizontal_angle`)."""
    for name in _AXIS_FLAGS:
        message = message.replace(name, "--" + name.replace("_", "-"))
    return message
