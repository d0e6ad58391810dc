"""`--rewrite` and `--lora SOURCE[:SCALE]`, shared by the commands that take a prompt (edit, generate, orbit).
No torch, no engine: the remote commands import this too."""

from __future__ import annotations

import argparse
import re
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
    if lora.path is not None and _URL_SCHEME.match(lora.path):
        raise argparse.ArgumentTypeError(
            f"{text!r}: only http:// and https:// URLs are taken (or id:NAME, or a .safetensors file)"
        )
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


#: A URL of a scheme other than http(s) (`ftp://`, `s3://`), which Lora.parse would take for a path.
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

#: What a LoRA file's name ends in; a `:` right after one starts a scale.
_LORA_SUFFIX = ".safetensors"


def _bad_scale(text: str, lora: Lora) -> str | None:
    """What follows `<name>.safetensors:` when it is no number (`style.safetensors:abc`), which Lora.parse
    keeps as part of the source; None otherwise: any other colon may belong to the source (a port, a query,
    a file name)."""
    source = lora.url if lora.url is not None else lora.path
    if source is None or source != text or "?" in source or "#" in source:  # an id, a scale split off
        return None
    head, colon, tail = source.rpartition(":")
    if not colon or not head.lower().endswith(_LORA_SUFFIX) or "/" in tail:
        return None
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
