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
        named = _FIELD_PATH.sub(self._option_for, message)
        return _LEADING_FIELD.sub(lambda match: self.options.get(match.group(1), match.group(0)), named)

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
    }
    return OptionNames(options, {"loras": len(args.loras), "images": len(args.inputs)})


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
