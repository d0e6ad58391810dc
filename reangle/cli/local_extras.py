"""`--rewrite` and `--lora` for the commands that run in this process (`reangle edit`, `reangle generate`
without a server): the prompt rewriter and a request's LoRAs as a server's job preparation runs them
(reangle.runtime.job_prep), without a job store. Imported only when a command runs locally."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from reangle.catalog import ModelEntry
from reangle.client import Lora
from reangle.core.edit import LoraUse
from reangle.core.lora_refs import LORA_SUFFIX, MAX_LORAS, LoraRef
from reangle.engine.base import Engine
from reangle.engine.lora_check import check_lora_file, lora_pairs, read_header
from reangle.engine.rewriter import Rewrite, RewriteTask, kept
from reangle.errors import InvalidInput
from reangle.settings import Settings


@dataclass(frozen=True)
class LocalExtras:
    #: What the rewriter made of the words; None when no rewrite was asked for.
    rewrite: Rewrite | None
    #: The LoRAs to run after the model's own, as checked local files.
    loras: tuple[LoraUse, ...]


def request_lora_refs(loras: Sequence[Lora], registered: Collection[str]) -> list[LoraRef]:
    """The --lora values as references, checked as far as that needs no model, so before any loads: an id
    must be one of `registered` (REANGLE_LORAS); in process a path is a .safetensors file on this machine,
    not one in a server's LoRA folder."""
    if len(loras) > MAX_LORAS:
        raise InvalidInput(f"--lora: at most {MAX_LORAS} LoRAs, got {len(loras)}", field="loras")
    refs = []
    for index, lora in enumerate(loras):
        field = "--lora" if len(loras) == 1 else f"--lora #{index + 1}"
        if lora.url is not None:
            refs.append(LoraRef(kind="url", value=lora.url, scale=lora.scale, field=field))
        elif lora.id is not None:
            if lora.id not in registered:
                known = (
                    f"registered: {', '.join(sorted(registered))}" if registered else "none are registered"
                )
                raise InvalidInput(
                    f"{field}: unknown LoRA id {lora.id!r} ({known}; see REANGLE_LORAS)", field="loras"
                )
            refs.append(LoraRef(kind="id", value=lora.id, scale=lora.scale, field=field))
        elif lora.path is not None:
            path = Path(lora.path).expanduser().absolute()
            if not path.is_file():
                raise InvalidInput(f"{field}: LoRA file not found: {lora.path}", field="loras")
            if path.suffix != LORA_SUFFIX:
                raise InvalidInput(f"{field}: {lora.path} is not a {LORA_SUFFIX} file", field="loras")
            _check_file(path, field=field, shown=lora.path)
            refs.append(LoraRef(kind="path", value=str(path), scale=lora.scale, field=field))
    return refs


def _check_file(path: Path, *, field: str, shown: str) -> None:
    """A LoRA file's checks that need no model: a whole safetensors file, of LoRA pairs (whether they fit
    the model's layers: check_lora_fit)."""
    try:
        lora_pairs(read_header(path, field=field, shown=shown), field=field, shown=shown)
    except OSError as exc:
        raise InvalidInput(f"{field}: cannot read {shown}: {exc.strerror or exc}", field="loras") from None


def check_lora_fit(engine: Engine, refs: Sequence[LoraRef], *, text_to_image: bool, strict: bool) -> None:
    """The --lora files' fit to the model's layers, before the model loads (the layers come from its config):
    a LoRA made for another model then costs seconds, not a model load. Each is checked again once the model
    has loaded, as a server's job preparation does."""
    files = [ref for ref in refs if ref.kind == "path" and ref.label is None]
    if not files:
        return
    layers = engine.lora_layers(text_to_image)
    for ref in files:
        check_lora_file(Path(ref.value), layers, field=ref.field, shown=ref.shown, strict=strict)


def model_lora_refs(entry: ModelEntry, settings: Settings) -> list[LoraRef]:
    """A catalog model's own LoRAs; its paths name files in REANGLE_LORA_DIR (its availability says so when
    that is not set)."""
    refs = []
    for ref in entry.lora_refs:
        if ref.kind == "path" and settings.lora_dir is not None:
            ref = LoraRef(
                kind="path", value=str(settings.lora_dir / ref.value), scale=ref.scale, field=ref.field
            )
        refs.append(ref)
    return refs


def shown_extras(rewrite: bool, refs: Sequence[LoraRef]) -> dict[str, Any]:
    """What a dry run reports of --rewrite and --lora (it rewrites nothing and fetches no LoRA)."""
    shown: dict[str, Any] = {}
    if rewrite:
        shown["rewrite_prompt"] = True
    if refs:
        shown["request_loras"] = [{ref.kind: ref.value, "scale": ref.scale} for ref in refs]
    return shown


@contextlib.contextmanager
def local_extras(
    settings: Settings,
    engine: Engine,
    *,
    words: str,
    images: Sequence[Image.Image],
    rewrite: bool,
    refs: Sequence[LoraRef],
    text_to_image: bool,
) -> Iterator[LocalExtras]:
    """The rewrite (when asked for) and the LoRAs, resolved through the LoRA cache of REANGLE_CACHE_DIR (the
    one a server on this machine uses) and checked against the engine's model; their files stay in the
    cache until the block ends."""
    task: RewriteTask = "generate" if text_to_image else "edit"
    rewritten = rewrite_words(settings, engine, words, images, task) if rewrite else None
    if not refs:
        yield LocalExtras(rewritten, ())
        return
    from reangle.compose import lora_sources

    # the user of this process may name any file of theirs: paths are absolute, checked above
    sources = lora_sources(settings.model_copy(update={"lora_dir": Path("/")}))
    layers = engine.lora_layers(text_to_image)
    with asyncio.Runner() as runner:
        holding = sources.resolved(refs, layers)
        found = runner.run(holding.__aenter__())
        try:
            uses = tuple(LoraUse(adapter=lora.adapter, weight=lora.scale, path=lora.path) for lora in found)
            yield LocalExtras(rewritten, uses)
        finally:
            runner.run(holding.__aexit__(None, None, None))


def rewrite_words(
    settings: Settings, engine: Engine, words: str, images: Sequence[Image.Image], task: RewriteTask
) -> Rewrite:
    """The user's words rewritten against the images; never raises (a fallback keeps the words)."""
    from reangle.compose import prompt_rewriter

    if not words.strip():
        return kept(words, "skipped", "there were no words of your own to rewrite")
    rewriter = prompt_rewriter(settings, engine)
    if rewriter is None:
        return kept(words, "skipped", "the prompt rewriter is off (REANGLE_REWRITER_MODEL=off)")
    print("reangle: rewriting the prompt ...", file=sys.stderr)
    return rewriter.rewrite(words, images, task=task)
