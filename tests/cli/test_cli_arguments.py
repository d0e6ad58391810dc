"""What the CLI makes of its arguments before anything runs: the camera fields it sends (only the axes given,
so a catalog model's defaults keep the others), -o against --format, the help an unknown argument points to,
and orbit's --azimuths. On a server (the FakeServer of the SDK tests) and in process (the fake engine)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reangle.cli.main import build_parser, main
from tests.client.fakes import API, API_KEY, FakeServer

SERVER = ("--server", API, "--api-key", API_KEY)
CAMERA_FIELDS = ("horizontal_angle", "vertical_angle", "zoom", "azimuth", "elevation", "distance")


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("reangle")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# the camera fields sent: only the axes given


@pytest.mark.parametrize(
    ("flags", "camera", "prompt"),
    [
        (["--horizontal-angle", "90"], {"azimuth": 90}, None),
        (["--vertical-angle", "20", "--zoom", "8"], {"elevation": 30, "distance": 0.6}, None),
        (["--azimuth", "0"], {"azimuth": 0}, None),
        (["--text", "rotate 90 degrees right, make it snowy"], {"azimuth": 90}, "make it snowy"),
        (["--text", "front view"], {"azimuth": 0}, None),
        (["--text", "high-angle shot, wide shot"], {"elevation": 60, "distance": 1.8}, None),
        (["--text", "make it snowy"], {}, "make it snowy"),
    ],
)
def test_a_dry_run_sends_only_the_camera_axes_given(
    photo: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    camera: dict[str, Any],
    prompt: str | None,
) -> None:
    """A catalog model's defaults (a top-down model's elevation 60) stay in force for the axes not given, as
    they do with the SDK: the front, eye-level, medium pose is not sent in their place."""
    assert main(["edit", str(photo), *SERVER, "--model", "top-down", *flags, "--dry-run"]) == 0
    sent = json.loads(capsys.readouterr().out)["input"]
    assert {name: sent[name] for name in CAMERA_FIELDS if name in sent} == camera
    assert sent.get("prompt") == prompt


def test_a_submitted_edit_sends_only_the_camera_axes_given(
    fake: FakeServer, photo: Path, tmp_path: Path
) -> None:
    argv = ["edit", str(photo), *SERVER, "--horizontal-angle", "90"]
    assert main([*argv, "-o", str(tmp_path / "out.jpg")]) == 0
    (request,) = fake.requests_to("POST", "/v1/jobs")
    sent = json.loads(request.content)["input"]
    assert sent == {"images": ["asset_1"], "azimuth": 90, "output_format": "jpeg"}


# -o against --format


@pytest.mark.parametrize(
    ("command", "output", "fmt", "message", "agreeing"),
    [
        (
            "edit",
            "fmt.png",
            "jpeg",
            "-o {dir}/fmt.png is a PNG name but --format jpeg writes JPEG: name it {dir}/fmt.jpg or leave "
            "out --format",
            "fmt.JPEG",
        ),
        (
            "generate",
            "fmt.JPG",
            "webp",
            "-o {dir}/fmt.JPG is a JPEG name but --format webp writes WebP: name it {dir}/fmt.webp or leave "
            "out --format",
            "fmt.raw",
        ),
    ],
)
@pytest.mark.parametrize("where", ["server", "in process"])
def test_an_output_name_of_another_format_than_format_is_refused_before_anything_runs(
    fake: FakeServer,
    photo: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    output: str,
    fmt: str,
    message: str,
    agreeing: str,
    where: str,
) -> None:
    monkeypatch.delenv("REANGLE_SERVER", raising=False)
    source = [str(photo)] if command == "edit" else ["a cat"]
    place = list(SERVER) if where == "server" else ["--engine", "fake"]
    assert main([command, *source, *place, "-o", str(tmp_path / output), "--format", fmt]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line == "reangle: error: " + message.format(dir=tmp_path)
    assert fake.requests == []
    assert not (tmp_path / output).exists()
    # a name of the same format, or one that tells none, is taken
    assert main([command, *source, *place, "-o", str(tmp_path / agreeing), "--format", fmt, "--dry-run"]) == 0


# unrecognized arguments


@pytest.mark.parametrize(
    ("argv", "command", "extras"),
    [
        (["edit", "photo.png", "--bogus"], "reangle edit", "--bogus"),
        (["jobs", "list", "--bogus", "x"], "reangle jobs list", "--bogus x"),
        (["poses", "extra"], "reangle poses", "extra"),
    ],
)
def test_unrecognized_arguments_point_to_the_help_of_the_command_run(
    capsys: pytest.CaptureFixture[str], argv: list[str], command: str, extras: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        f"{command}: error: unrecognized arguments: {extras} (see {command} --help)\n"
    )
    # what is parsed keeps no trace of the command's name
    parsed = build_parser().parse_args(argv[: -len(extras.split())])
    assert [name for name in vars(parsed) if name.startswith("_")] == []


# orbit --azimuths


@pytest.mark.parametrize(
    ("azimuths", "message", "fixed"),
    [
        ("10,20", "10 and 20 snap to the same view, 0 (azimuths snap to the nearest 45 degrees)", "10,50"),
        (
            "0,22.5,405,90",
            "22.5 and 405 snap to the same view, 45 (azimuths snap to the nearest 45 degrees)",
            "0,22.5,-90,90",
        ),
        ("0,,90", "an empty entry in '0,,90': give degrees between commas, e.g. 0,90", "0, 90"),
        ("0,90,", "an empty entry in '0,90,': give degrees between commas, e.g. 0,90", "0,400"),
        ("0,nan", "'nan' in '0,nan' is not a finite number of degrees", "0"),
    ],
)
def test_orbit_refuses_azimuths_that_would_repeat_a_view_or_name_none(
    fake: FakeServer,
    photo: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    azimuths: str,
    message: str,
    fixed: str,
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["orbit", str(photo), *SERVER, "--azimuths", azimuths, "-o", str(tmp_path / "views")])
    assert exited.value.code == 2
    assert one_error_line(capsys.readouterr().err) == (
        f"reangle orbit: error: argument --azimuths: {message} (see reangle orbit --help)"
    )
    assert fake.requests == []
    # azimuths that snap to as many views are taken, as given
    assert main(["orbit", str(photo), *SERVER, "--azimuths", fixed, "-o", str(tmp_path / "views")]) == 0
    (request,) = fake.requests_to("POST", "/v1/jobs")
    assert json.loads(request.content)["input"]["azimuths"] == [float(part) for part in fixed.split(",")]


def test_orbit_help_says_the_azimuths_snap(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["orbit", "--help"])
    assert "snapped to the nearest 45" in " ".join(capsys.readouterr().out.split())
