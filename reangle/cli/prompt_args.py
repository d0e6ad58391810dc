"""`--rewrite` and `--lora SOURCE[:SCALE]`, shared by the commands that take a prompt (edit, generate, orbit).
No torch, no engine: the remote commands import this too."""

from __future__ import annotations

import argparse
from typing import Any

from reangle.client import Lora
from reangle.core.lora_refs import MAX_LORAS, MAX_SCALE


def add_prompt_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("prompt rewriting and LoRAs of your own")
    group.add_argument(
        "--rewrite",
        action=argparse.BooleanOptionalAction,
        help="have a vision-language model (Qwen3-VL) make your words precise first; the camera phrase is "
        "never changed, and the original prompt is kept when the rewrite fails (default: the model's; "
        "--no-rewrite turns it off for a model that rewrites by default)",
    )
    group.add_argument(
        "--lora",
        dest="loras",
        action="append",
        default=[],
        type=lora_arg,
        metavar="SOURCE[:SCALE]",
        help=f"a LoRA on top of the model's (repeatable, up to {MAX_LORAS}): an https:// URL of a "
        ".safetensors file, id:NAME (registered in REANGLE_LORAS) or a .safetensors path (in "
        "process: a file here; with --server: a file in the server's LoRA folder), then :SCALE (default "
        "1.0), e.g. "
        "https://example.com/style.safetensors:0.8",
    )


def lora_arg(text: str) -> Lora:
    """argparse type of --lora: only a trailing `:<number>` is the scale (URLs keep their colons)."""
    try:
        lora = Lora.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    bad_scale = _bad_scale(text.strip(), lora)
    if bad_scale is not None:
        raise argparse.ArgumentTypeError(
            f"the scale of {text!r} is not a number: {bad_scale!r} (write SOURCE:SCALE, e.g. ...:0.8)"
        )
    if not -MAX_SCALE <= lora.scale <= MAX_SCALE:
        raise argparse.ArgumentTypeError(
            f"the scale of {text!r} must be between {-MAX_SCALE:g} and {MAX_SCALE:g}, got {lora.scale:g}"
        )
    return lora


#: What a LoRA file's name ends in; a `:` after one starts a scale.
_LORA_SUFFIXES = (".safetensors",)


def _bad_scale(text: str, lora: Lora) -> str | None:
    """What follows the last `:` when it was meant as a scale but is no number (`style.safetensors:abc`,
    `https://host/style:abc`), which Lora.parse keeps as part of the source; None otherwise."""
    source = lora.url if lora.url is not None else lora.path
    if source is None or source != text:  # an id, or a scale was split off
        return None
    rest = source.split("://", 1)[1] if lora.url is not None else source
    head, colon, tail = rest.rpartition(":")
    if not colon or any(c in tail for c in "/?=&#") or tail.lower().endswith(_LORA_SUFFIXES):
        return None  # no colon, a port before the path (`host:8080/a.safetensors`), a query's colon
    try:
        float(tail)
    except ValueError:
        pass
    else:
        return None  # a number Lora.parse kept on purpose (`https://host:8080`: a port)
    if lora.url is None and not head.lower().endswith(_LORA_SUFFIXES):
        return None  # a path with a colon in its name
    return tail


def prompt_fields(args: argparse.Namespace) -> dict[str, Any]:
    """`rewrite_prompt` and `loras` as the API takes them, when given (keywords of the SDK's edit, orbit and
    generate); `--no-rewrite` is sent as False, so that it wins over a model's default."""
    fields: dict[str, Any] = {}
    if args.rewrite is not None:
        fields["rewrite_prompt"] = args.rewrite
    if args.loras:
        fields["loras"] = [lora.to_json() for lora in args.loras]
    return fields
