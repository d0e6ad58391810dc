"""The `reangle generate` flags whose fields depend on the model: image sets (`--set`, `--set-prompt`) and
thinking (`--thinking/--no-thinking`), sent under the names the model's input schema gives them (the
server's description of the model, or the local catalog's in process). No torch, no engine."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from reangle.cli.option_names import THINKING_FIELDS, bool_option
from reangle.client._inputs import image_set_field, image_set_fields, schema_fields
from reangle.errors import InvalidInput


def check_set_flags(args: argparse.Namespace) -> None:
    """`--set-prompt` makes a set of one image per prompt: `-n` must agree and `--no-set` cannot go with it.
    Checked before anything loads or is sent."""
    count = len(args.set_prompts)
    if not count:
        return
    if args.image_set is False:
        raise InvalidInput(
            "--set-prompt makes an image set, so it cannot go with --no-set", field="set_prompts"
        )
    if args.num_outputs is not None and args.num_outputs != count:
        times = "once" if count == 1 else f"{count} times"
        raise InvalidInput(
            f"--set-prompt was given {times}, one image each, but -n/--num-outputs is {args.num_outputs}; "
            f"leave -n out or make it {count}",
            field="num_outputs",
        )


def needs_schema(args: argparse.Namespace) -> bool:
    """Whether the flags name a field whose name the model's schema decides."""
    return args.image_set is not None or bool(args.set_prompts) or args.thinking is not None


def check_model_switches(args: argparse.Namespace, model: str, schema: Mapping[str, Any]) -> None:
    """InvalidInput naming the flag when the model has no field for `--set`, `--set-prompt` or
    `--thinking/--no-thinking`."""
    if (args.image_set is not None or args.set_prompts) and image_set_field(schema) is None:
        option = "--set-prompt" if args.image_set is None else bool_option("--set", args.image_set)
        raise InvalidInput(f"{option}: model {model} makes no image sets", field="image_set")
    if args.set_prompts and "set_prompts" not in schema_fields(schema):
        raise InvalidInput(
            f"--set-prompt: model {model} takes no per-image prompts; ask for a set with --set and -n",
            field="set_prompts",
        )
    if args.thinking is not None and thinking_field(schema) is None:
        option = bool_option("--thinking", args.thinking)
        raise InvalidInput(f"{option}: model {model} has no thinking input", field="thinking")


def thinking_field(schema: Mapping[str, Any]) -> str | None:
    fields = schema_fields(schema)
    return next((name for name in THINKING_FIELDS if name in fields), None)


def set_switches(args: argparse.Namespace) -> dict[str, Any]:
    """`image_set` and `set_prompts` as the SDK's `generate` takes them (None: not given)."""
    return {"image_set": args.image_set, "set_prompts": args.set_prompts or None}


def switch_fields(args: argparse.Namespace, model: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    """The image-set and thinking fields under the model's names, False included (it turns off a default
    of True); call `check_model_switches` first."""
    fields = image_set_fields(model, schema, **set_switches(args))
    return fields | thinking_fields(args, schema)


def thinking_fields(args: argparse.Namespace, schema: Mapping[str, Any]) -> dict[str, Any]:
    found = thinking_field(schema)
    return {} if args.thinking is None or found is None else {found: args.thinking}
