"""The CLI options behind each API input field, so that an error names what the user typed (`--num-outputs`,
`--lora #2`) rather than the field the server checked (`input.num_outputs`, `input.loras.1.url`). No torch,
no engine: the remote commands import this too."""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from reangle.client._inputs import IMAGE_SET_FIELDS

#: `input.<field>` and any path below it (`input.loras.0.url`), as the server's messages name fields.
_FIELD_PATH = re.compile(r"\binput\.([A-Za-z_]\w*)((?:\.\w+)*)")
#: A bare field name opening a message (`num_outputs must be between 1 and 4`), as the engine words it.
_LEADING_FIELD = re.compile(r"^([a-z_]+)(?=:| must | is | has )")
#: A clash of fields, worded with bare field names (`give either width/height or aspect_ratio, not both`).
_CLASH = re.compile(r"^give either .+, not both$")
_WORD = re.compile(r"\b[a-z_]+\b")
#: pydantic's words for a list of the wrong length (`input.images: List should have at most 3 items after
#: validation, not 4`).
_LIST_LENGTH = re.compile(
    r"\binput\.(\w+): List should have at (most|least) (\d+) items? after validation, not (\d+)"
)
#: What the items of a list field are, for a list of the wrong length (`at most 4 LoRAs, got 5`).
_ITEMS = {"images": "images", "loras": "LoRAs", "set_prompts": "set prompts", "azimuths": "azimuths"}
#: A field of the request that the model does not take (`input.azimuth: unknown field`).
_UNKNOWN_FIELD = re.compile(r"\binput\.([A-Za-z_]\w*): unknown field$")

#: The fields the commands that take a prompt share, and their options.
_PROMPT_OPTIONS = {
    "seed": "--seed",
    "num_inference_steps": "--steps",
    "guidance_scale": "--guidance",
    "acceleration": "--acceleration",
    "width": "--width",
    "height": "--height",
    "aspect_ratio": "--aspect-ratio",
    "output_format": "--format",
    "quality": "--quality",
}

#: The fields beside the input of a submitted job that an option sets (its webhook), as the server's
#: refusals name them (`webhook_url: refusing to call ...`).
_SUBMISSION_OPTIONS = {"webhook_url": "--webhook-url", "webhook_events": "--webhook-event"}

#: What models call their thinking switch (planning the image first), in the order looked for.
THINKING_FIELDS = ("thinking_mode", "thinking")


@dataclass(frozen=True)
class OptionNames:
    """Which option sets each input field; `repeated` holds the options given once per list item (`--lora`,
    `--image`, INPUT) with how many items were given, so `input.loras.1` is `--lora #2`."""

    options: Mapping[str, str]
    repeated: Mapping[str, int] = field(default_factory=dict)

    def rewrite(self, message: str) -> str:
        """`message` with each `input.<field>...` it names, and a bare field name it opens with, replaced by
        that field's option; fields no option sets stay as they are."""
        if _CLASH.match(message):
            return _WORD.sub(lambda match: self.options.get(match.group(0), match.group(0)), message)
        message = _LIST_LENGTH.sub(_plain_length, message)
        message = _UNKNOWN_FIELD.sub(self._unknown, message)
        named = _FIELD_PATH.sub(self._option_for, message)
        return _LEADING_FIELD.sub(lambda match: self.options.get(match.group(1), match.group(0)), named)

    def _unknown(self, match: re.Match[str]) -> str:
        name = match.group(1)
        return f"input.{name}: this model has no {name} input" if name in self.options else match.group(0)

    def _option_for(self, match: re.Match[str]) -> str:
        name, below = match.group(1), match.group(2)
        option = self.options.get(name)
        if option is None:
            return match.group(0)
        count = self.repeated.get(name)
        index = below.split(".")[1] if below else ""
        if count is not None and count > 1 and index.isdigit():
            return f"{option} #{int(index) + 1}"
        return option


def _plain_length(match: re.Match[str]) -> str:
    name, bound, limit, given = match.groups()
    return f"input.{name}: at {bound} {limit} {_ITEMS.get(name, 'items')}, got {given}"


def bool_option(flag: str, value: bool | None) -> str:
    """`--rewrite` or `--no-rewrite`, whichever the user typed (`--rewrite` when neither)."""
    return f"--no-{flag.removeprefix('--')}" if value is False else flag


def generate_options(args: argparse.Namespace) -> OptionNames:
    """`reangle generate` (in process or on a server)."""
    set_option = "--set-prompt" if args.set_prompts and args.image_set is None else "--set"
    options = {
        **_PROMPT_OPTIONS,
        **_SUBMISSION_OPTIONS,
        **_shared_prompt_options(args),
        "prompt": "PROMPT",
        "size": "--size",
        "num_outputs": "--num-outputs",
        "negative_prompt": "--negative",
        "images": "--image",
        "set_prompts": "--set-prompt",
        **dict.fromkeys(IMAGE_SET_FIELDS, bool_option(set_option, args.image_set)),
        **dict.fromkeys(THINKING_FIELDS, bool_option("--thinking", args.thinking)),
    }
    repeated = {"loras": len(args.loras), "images": len(args.images), "set_prompts": len(args.set_prompts)}
    return OptionNames(options, repeated)


def edit_options(args: argparse.Namespace) -> OptionNames:
    """`reangle edit --server URL`."""
    options = {
        **_PROMPT_OPTIONS,
        **_SUBMISSION_OPTIONS,
        **_shared_prompt_options(args),
        "images": "INPUT",
        "prompt": "--prompt",
        "num_outputs": "--num-outputs",
        "lora_scale": "--lora-scale",
        **_camera_options(args),
    }
    return OptionNames(options, {"loras": len(args.loras), "images": len(args.inputs)})


def _camera_options(args: argparse.Namespace) -> dict[str, str]:
    """The option behind each camera field: --text, or the axis's flag the user gave (continuous or
    snapped)."""
    if getattr(args, "text", None) is not None:
        return dict.fromkeys(("azimuth", "elevation", "distance"), "--text")
    axes = (("horizontal_angle", "azimuth"), ("vertical_angle", "elevation"), ("zoom", "distance"))
    return {
        snapped: "--"
        + (continuous if getattr(args, continuous, None) is not None else snapped).replace("_", "-")
        for continuous, snapped in axes
    }


def orbit_options(args: argparse.Namespace) -> OptionNames:
    """`reangle orbit`."""
    options = {
        **_PROMPT_OPTIONS,
        **_SUBMISSION_OPTIONS,
        **_shared_prompt_options(args),
        "image": "INPUT",
        "azimuths": "--azimuths",
        "elevation": "--elevation",
        "distance": "--distance",
        "prompt": "--prompt",
        "lora_scale": "--lora-scale",
    }
    return OptionNames(options, {"loras": len(args.loras)})


def _shared_prompt_options(args: argparse.Namespace) -> dict[str, str]:
    return {"rewrite_prompt": bool_option("--rewrite", args.rewrite), "loras": "--lora"}
