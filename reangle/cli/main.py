"""`reangle`: the command line. Parsing and --help import no torch; engines load only when they run."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from typing import NoReturn

from pydantic import ValidationError
from pydantic_settings import SettingsError

from reangle import __version__
from reangle.cli.admin import add_admin_commands
from reangle.cli.db import add_db_commands
from reangle.cli.edit import add_edit_command
from reangle.cli.generate import add_generate_command
from reangle.cli.keys import add_keys_commands
from reangle.cli.pose_args import add_pose_flags, pose_from_args
from reangle.cli.remote import add_remote_commands
from reangle.cli.serve import add_serve_commands
from reangle.core.camera import all_poses
from reangle.errors import Canceled, InvalidInput, ReangleError, Unavailable
from reangle.settings import Settings, unknown_settings

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
#: As a command killed by SIGPIPE exits: what `reangle poses | head -1` ends with, quietly.
EXIT_BROKEN_PIPE = 141


#: Where the parser of the (sub)command that was run leaves its name in the namespace.
_COMMAND_PROG = "_reangle_command_prog"


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, like every other error of the CLI, naming the help of the command run."""

    def error(self, message: str) -> NoReturn:
        self._usage_error(self.prog, message)

    def _usage_error(self, prog: str, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{prog}: error: {message} (see {prog} --help)\n")

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        # a subcommand's parser returns first: the innermost one's name is the one kept
        if not hasattr(parsed, _COMMAND_PROG):
            setattr(parsed, _COMMAND_PROG, self.prog)
        return parsed, extras

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        """As argparse's, but arguments nobody took are refused by the subcommand that was run, so the error
        names its help (`reangle edit --help`), not the top-level one."""
        parsed, extras = self.parse_known_args(args, namespace)
        prog = vars(parsed).pop(_COMMAND_PROG, self.prog)
        if extras:
            self._usage_error(prog, f"unrecognized arguments: {' '.join(extras)}")
        return parsed


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="reangle",
        description="Re-photograph an image from another camera angle (Qwen-Image-Edit-2511 + angles LoRA).",
    )
    parser.add_argument("--version", action="version", version=f"reangle {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    poses = commands.add_parser("poses", help="print the 96 camera prompts of the Multiple-Angles LoRA")
    poses.set_defaults(run=run_poses)

    pose = commands.add_parser("pose", help="show the camera prompt for a pose")
    add_pose_flags(pose)
    pose.add_argument("--json", action="store_true", help="print the pose as JSON")
    pose.set_defaults(run=run_pose)

    add_edit_command(commands)
    add_generate_command(commands)
    add_remote_commands(commands)
    add_serve_commands(commands)
    add_keys_commands(commands)
    add_admin_commands(commands)
    add_db_commands(commands)
    return parser


def run_poses(_args: argparse.Namespace, _settings: Settings) -> int:
    for pose in all_poses():
        print(pose.camera_phrase)
    return 0


def run_pose(args: argparse.Namespace, _settings: Settings) -> int:
    pose, instruction = pose_from_args(args)
    described = pose.to_dict() | {"prompt": pose.prompt(instruction)}
    print(json.dumps(described) if args.json else described["prompt"])
    return 0


def unparsable_setting(exc: SettingsError) -> str:
    """pydantic-settings says `error parsing value for field "loras" from source ...`: name the variable."""
    field = re.search(r'field "(\w+)"', str(exc))
    name = f"REANGLE_{field.group(1).upper()}" if field else "a REANGLE_ variable"
    return f"{name}: not valid JSON ({exc.__cause__})" if exc.__cause__ else f"{name}: {exc}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name, close in unknown_settings(os.environ):
        maybe = f" (did you mean {close}?)" if close else ""
        print(f"reangle: warning: {name} is not a reangle setting: ignored{maybe}", file=sys.stderr)
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"REANGLE_{'_'.join(map(str, e['loc'])).upper()}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        print(f"reangle: error: bad setting: {problems}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SettingsError as exc:  # a JSON setting that is not JSON
        print(f"reangle: error: bad setting: {unparsable_setting(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        code = int(args.run(args, settings))
        sys.stdout.flush()  # here, where a reader that stopped early is caught, not at the exit
        return code
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more goes to the pipe
        return EXIT_BROKEN_PIPE
    except InvalidInput as exc:
        print(f"reangle: error: {exc.with_hint()}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (Canceled, KeyboardInterrupt):
        print("reangle: canceled", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Unavailable as exc:  # its hint ("retry in 5 s") is for an API client's retry loop, not a command's
        print(f"reangle: error: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    except ReangleError as exc:
        print(f"reangle: error: {exc.with_hint()}", file=sys.stderr)
        return EXIT_FAILED
