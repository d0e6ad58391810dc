"""References to LoRAs a request or a catalog entry adds on top of a model's own: `{"url"}`, `{"path"}` or
`{"id"}` with a strength. Their shape, how messages name them, and the rules a server checks at submit
(`LoraRules`); `reangle.engine.lora_sources` turns them into checked files.

A LoRA the operator declared (a registered id, or a catalog model's own LoRA) is *private*: its location (a
URL that may hold a signed query, a server file path) never appears in what users see; its id or label do."""

from __future__ import annotations

import posixpath
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from reangle.core.json_values import is_finite, shown_number
from reangle.errors import InvalidInput

RefKind = Literal["url", "path", "id"]
KINDS: tuple[RefKind, ...] = ("url", "path", "id")
#: How many LoRAs one request may add on top of the model's own.
MAX_LORAS = 4
#: The largest LoRA strength accepted, either way (negative strengths undo "slider" LoRAs).
MAX_SCALE = 4.0
#: The one file format LoRAs are read in.
LORA_SUFFIX = ".safetensors"


@dataclass(frozen=True, kw_only=True)
class LoraRef:
    """One LoRA a request asks for: where it is and at what strength."""

    kind: RefKind
    value: str
    scale: float = 1.0
    #: The request field of `value`, as errors name it (`loras.0.url`, or Segmind's `lora_2_url`).
    field: str
    #: How users see a catalog model's own LoRA (its name, or its place in the catalog); None for a request's.
    label: str | None = None
    #: A catalog model's own LoRA: the operator chose it, so a failure to fetch or load it is the server's
    #: fault, not the request's.
    from_catalog: bool = False

    @property
    def private(self) -> bool:
        """Whether its location is the operator's (a registered id, a catalog LoRA): never shown to users."""
        return self.kind == "id" or self.label is not None or self.from_catalog

    @property
    def shown(self) -> str:
        """The LoRA as messages to users name it: by its label or id when private, else by what was given."""
        if self.label is not None:
            return f"the model's LoRA {self.label!r}"
        if self.kind == "id":
            return f"the LoRA id {self.value!r}"
        if self.kind == "url":
            return f"the LoRA url {without_query(self.value)!r}"
        return f"the LoRA path {self.value!r}"


@dataclass(frozen=True, kw_only=True)
class LoraRules:
    """What this server takes of a request's own LoRAs, checked at submit so that a job that cannot run is
    refused at once, not failed later: `path` only with a folder of local LoRAs, `id` only when registered."""

    #: The ids registered on this server (REANGLE_LORAS).
    registered: frozenset[str] = frozenset()
    #: Whether `path` references are accepted (REANGLE_LORA_DIR is set).
    paths_allowed: bool = False

    @classmethod
    def of(cls, registered: Collection[str], *, paths_allowed: bool) -> LoraRules:
        return cls(registered=frozenset(registered), paths_allowed=paths_allowed)

    def check(self, refs: Sequence[LoraRef]) -> None:
        """Raise InvalidInput naming the first reference this server would refuse when the job runs."""
        for ref in refs:
            if ref.kind == "path" and not self.paths_allowed:
                raise InvalidInput(
                    f"{ref.field}: local LoRA paths are not accepted by this server",
                    field=ref.field,
                    hint="give the LoRA as a url or a registered id",
                )
            if ref.kind == "id" and ref.value not in self.registered:
                known = ", ".join(sorted(self.registered))
                listed = f"the registered ids are {known}" if known else "this server registers no LoRA ids"
                raise InvalidInput(f"{ref.field}: unknown LoRA id {ref.value!r}; {listed}", field=ref.field)


def check_each_once(refs: Sequence[LoraRef]) -> None:
    """Raise InvalidInput naming the later of two references that are the same (kind and value, as given):
    the job would load one file twice. Two different references to the same file are found when the job
    fetches them (`reangle.engine.lora_sources`)."""
    first_fields: dict[tuple[RefKind, str], str] = {}
    for ref in refs:
        earlier = first_fields.get((ref.kind, ref.value))
        if earlier is not None:
            raise InvalidInput(
                f"{ref.field}: the same LoRA as {earlier}; give each LoRA once", field=ref.field
            )
        first_fields[(ref.kind, ref.value)] = ref.field


def local_path_problem(text: str) -> str | None:
    """Why a `path` reference cannot name a file of the folder of local LoRAs by itself, or None: it leads
    out of the folder (absolute, or through `..`) or names no .safetensors file."""
    path = PurePosixPath(posixpath.normpath(text))
    if path.is_absolute() or path.parts[0] == "..":
        return "is outside the folder of local LoRAs"
    if path.suffix != LORA_SUFFIX:
        return f"is not a {LORA_SUFFIX} file"
    return None


def check_local_path(text: str, where: str) -> None:
    """What a `path` reference shows by itself, refused at submit (`local_path_problem`). Whether the file is
    there (or a link leads out) is known only where the job runs, which has the folder."""
    problem = local_path_problem(text)
    if problem is not None:
        raise InvalidInput(f"{where} {text!r} {problem}", field=where)


def without_query(url: str) -> str:
    """`url` without its user info, query and fragment (they may hold a password, a signature or a token)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.split("?", 1)[0].split("#", 1)[0]
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def parse_lora_refs(value: object, *, field: str = "loras", max_count: int = MAX_LORAS) -> list[LoraRef]:
    """The native `loras` field: a list of `{"url" | "path" | "id": text, "scale": number}` objects."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidInput(f"{field} must be a list of LoRA objects", field=field)
    if len(value) > max_count:
        raise InvalidInput(f"{field} has {len(value)} LoRAs; at most {max_count} are accepted", field=field)
    refs = []
    for index, item in enumerate(value):
        where = f"{field}.{index}"
        if not isinstance(item, dict):
            raise InvalidInput(f'{where} must be an object like {{"url": ..., "scale": 1.0}}', field=where)
        kinds = [kind for kind in KINDS if kind in item]
        extra = sorted(str(key) for key in item if key not in (*KINDS, "scale"))
        if extra:
            raise InvalidInput(f"{where} has unknown keys {extra}", field=f"{where}.{extra[0]}")
        if len(kinds) != 1:
            raise InvalidInput(f"{where} must have exactly one of url, path or id", field=where)
        kind = kinds[0]
        text = item[kind]
        if not isinstance(text, str) or not text.strip() or "\x00" in text:
            raise InvalidInput(f"{where}.{kind} must be a non-empty text", field=f"{where}.{kind}")
        scale = item.get("scale", 1.0)
        refs.append(
            LoraRef(
                kind=kind,
                value=text.strip(),
                scale=checked_scale(scale, f"{where}.scale"),
                field=f"{where}.{kind}",
            )
        )
    return refs


def checked_scale(scale: object, field: str) -> float:
    """A LoRA strength: a finite number within +-MAX_SCALE."""
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not is_finite(scale):
        raise InvalidInput(f"{field} must be a number", field=field)
    if abs(scale) > MAX_SCALE:
        raise InvalidInput(
            f"{field} must be between {-MAX_SCALE:g} and {MAX_SCALE:g}, not {shown_number(scale)}",
            field=field,
        )
    return float(scale)
