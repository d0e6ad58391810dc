"""What a catalog holds once loaded and checked: one ModelEntry per served model, in order."""

from __future__ import annotations

import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, get_args

from reangle.core.lora_refs import LoraRef

Task = Literal["camera_edit", "instruction_edit", "text_to_image", "image_edit_or_generate"]
TASKS: tuple[Task, ...] = get_args(Task)

#: `qwen-edit` and `qwen-image` are local diffusers pipelines; `dashscope` is Alibaba's API.
EngineFamily = Literal["qwen-edit", "qwen-image", "dashscope"]
ENGINES: tuple[EngineFamily, ...] = get_args(EngineFamily)
ENGINE_TASKS: Mapping[EngineFamily, tuple[Task, ...]] = MappingProxyType(
    {
        "qwen-edit": ("camera_edit", "instruction_edit"),
        "qwen-image": ("text_to_image",),
        "dashscope": ("image_edit_or_generate",),
    }
)
REMOTE_ENGINES = frozenset({"dashscope"})
#: Settings an engine cannot run without, whether or not an entry's `requires` names them.
ENGINE_REQUIRES: Mapping[EngineFamily, tuple[str, ...]] = MappingProxyType(
    {"dashscope": ("dashscope_api_key",)}
)
#: Settings whose default turns an engine on and whose empty value turns it off.
ENGINE_SWITCHES: Mapping[EngineFamily, str] = MappingProxyType({"qwen-image": "text_to_image_model"})
ENGINE_LABELS: Mapping[EngineFamily, str] = MappingProxyType({"dashscope": "Alibaba's DashScope API"})

Dialect = Literal["scenario", "segmind", "runpod", "fal", "openai"]
DIALECTS: tuple[Dialect, ...] = get_args(Dialect)
SCENARIO_PREFIX = "model_"
#: Dialects whose ids are looked up together (the OpenAI dialect also accepts fal's model ids), so an id may
#: name one model only across the group.
DIALECT_NAMESPACES: Mapping[str, str] = MappingProxyType({"fal": "openai"})


def default_dialect_ids(model_id: str) -> dict[str, str]:
    """The ids of the dialects that list every model, for an entry that does not name its own."""
    return {"scenario": SCENARIO_PREFIX + model_id, "openai": model_id}


@dataclass(frozen=True, kw_only=True)
class ModelLora:
    """A LoRA a model always runs with, on top of its engine's own (Lightning, angles)."""

    ref: LoraRef
    #: A label for listings and messages; its id, or its place in the catalog, otherwise.
    name: str | None = None

    def public(self) -> dict[str, object]:
        """How listings show it: its name, its registered id if it has one, and its strength; never its URL
        or file path, which are the operator's (a URL may be signed, a path shows the server's folders)."""
        registered = self.ref.value if self.ref.kind == "id" else None
        return {"name": self.name or self.ref.label or registered, "id": registered, "scale": self.ref.scale}


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Lower bounds than the model's own on what one request may ask for; None keeps the model's own."""

    max_outputs: int | None = None
    max_images: int | None = None


@dataclass(frozen=True, kw_only=True)
class ModelEntry:
    """One served model, as its catalog file declares it (checked)."""

    id: str
    name: str
    description: str
    task: Task
    engine: EngineFamily
    #: Local engines: a hub id (`Qwen/Qwen-Image-Edit-2511`) or a local folder; dashscope: the vendor's model.
    base: str
    loras: tuple[ModelLora, ...] = ()
    #: Input field -> its default for this model (checked against the task's inputs by `entry_inputs`).
    defaults: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    #: The prompt the engine sees, with the user's words at `{prompt}`; None passes them as they are.
    prompt_template: str | None = None
    limits: Limits = Limits()
    #: Dialect -> the id it lists and serves this model under (with the defaults of `default_dialect_ids`).
    dialects: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: Settings (Settings field names) that must be set for the model to run, besides its engine's own.
    requires: tuple[str, ...] = ()
    #: The file that declared it, for messages.
    source: str = ""

    @property
    def remote(self) -> bool:
        return self.engine in REMOTE_ENGINES

    @property
    def lora_refs(self) -> tuple[LoraRef, ...]:
        return tuple(lora.ref for lora in self.loras)

    @property
    def required_settings(self) -> tuple[str, ...]:
        """The entry's `requires` and its engine's, each once."""
        return tuple(dict.fromkeys((*ENGINE_REQUIRES.get(self.engine, ()), *self.requires)))

    def dialect_id(self, dialect: str) -> str | None:
        return self.dialects.get(dialect)

    def render_prompt(self, prompt: str) -> str:
        """The user's words in the model's prompt template. With no words, the separators the template put
        around them go too: `{prompt}, studio light` gives `studio light`."""
        if self.prompt_template is None:
            return prompt
        words = prompt.strip()
        if not words:
            return template_text(self.prompt_template)
        return self.prompt_template.format(prompt=words).strip()


def template_text(template: str) -> str:
    """A prompt template's own text: what it gives for no words, without the separators around them; every
    prompt rendered in it is at least this long."""
    return template.format(prompt="").strip().strip(",;").strip()


def template_problem(template: str) -> str | None:
    """Why a prompt template is unusable, or None: it needs `{prompt}` exactly once and no other field."""
    try:
        fields = [parsed for parsed in string.Formatter().parse(template) if parsed[1] is not None]
    except ValueError as exc:
        return f"{exc} (write a literal brace as {{{{ or }}}})"
    for _text, name, spec, conversion in fields:
        if name != "prompt" or spec or conversion:
            return f"{{{name}}} is not a placeholder; use {{prompt}} (write a literal brace as {{{{ or }}}})"
    if len(fields) != 1:
        return f"must contain {{prompt}} exactly once, not {len(fields)} times"
    return None


@dataclass(frozen=True)
class Catalog:
    """The served models: the shipped ones in their order, then the operator's additions."""

    models: tuple[ModelEntry, ...]
    #: Shipped models the operator turned off.
    disabled: tuple[str, ...] = ()
    _by_id: Mapping[str, ModelEntry] = field(init=False, repr=False, compare=False)
    _by_dialect: Mapping[tuple[str, str], ModelEntry] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_id = {entry.id: entry for entry in self.models}
        by_dialect = {
            (dialect, dialect_id): entry
            for entry in self.models
            for dialect, dialect_id in entry.dialects.items()
        }
        if len(by_id) != len(self.models):
            raise ValueError("a catalog's model ids must be unique")
        object.__setattr__(self, "_by_id", MappingProxyType(by_id))
        object.__setattr__(self, "_by_dialect", MappingProxyType(by_dialect))

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._by_id)

    def get(self, model_id: str) -> ModelEntry | None:
        return self._by_id.get(model_id)

    def by_dialect(self, dialect: str, dialect_id: str) -> ModelEntry | None:
        """The model a dialect serves under `dialect_id` (`by_dialect("scenario", "model_wan-2-7-image")`)."""
        return self._by_dialect.get((dialect, dialect_id))

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._by_id

    def __iter__(self) -> Iterator[ModelEntry]:
        return iter(self.models)

    def __len__(self) -> int:
        return len(self.models)
