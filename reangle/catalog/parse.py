"""One `[[model]]` table of a catalog file -> a checked ModelEntry, or a CatalogError naming the field.

Every key is checked: an unknown one is an error (with the nearest known key), so that a typo never passes
as a silently ignored setting.
"""

from __future__ import annotations

import difflib
import math
import posixpath
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import cast

from reangle.catalog.errors import CatalogError, entry_label, shown
from reangle.catalog.model import (
    DIALECTS,
    ENGINE_TASKS,
    ENGINES,
    SCENARIO_PREFIX,
    TASKS,
    EngineFamily,
    Limits,
    ModelEntry,
    ModelLora,
    Task,
    default_dialect_ids,
    template_problem,
    template_text,
)
from reangle.core.edit import MAX_PROMPT_CHARS
from reangle.core.lora_refs import KINDS, LORA_SUFFIX, MAX_LORAS, MAX_SCALE, LoraRef, local_path_problem
from reangle.core.wan_image import MAX_PROMPT_CHARS as WAN_MAX_PROMPT_CHARS

ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]*")
MAX_ID_CHARS = 64
#: Vendor model names (`wan2.7-image`) and dialect ids (`model_wan-2-7-image`, Segmind's slugs).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:-]*")

REQUIRED_KEYS = ("id", "description", "task", "engine", "base")
OPTIONAL_KEYS = ("name", "loras", "defaults", "prompt_template", "limits", "dialects", "requires", "enabled")
LORA_KEYS = (*KINDS, "scale", "name")
LIMIT_KEYS = ("max_outputs", "max_images")
#: The longest prompt, in characters, a model of each task takes once in its template (as
#: `reangle.core.models.prompt_limit` checks it at submit).
TASK_PROMPT_LIMITS: Mapping[Task, int] = MappingProxyType(
    {task: WAN_MAX_PROMPT_CHARS if task == "image_edit_or_generate" else MAX_PROMPT_CHARS for task in TASKS}
)


@dataclass(frozen=True, kw_only=True)
class Parsed:
    """One table of a file: a model (`entry`), or only `id` and `enabled = false` (turn a shipped one off)."""

    id: str
    index: int
    enabled: bool
    entry: ModelEntry | None


class _Where:
    """The file and entry a problem is in, to raise it as one line."""

    def __init__(self, source: str, index: int) -> None:
        self.source = source
        self.index = index
        self.model_id: str | None = None

    def error(self, field: str | None, problem: str) -> CatalogError:
        return CatalogError(self.source, problem, entry=entry_label(self.model_id, self.index), field=field)


def parse_entry(table: object, *, source: str, index: int, setting_names: Collection[str]) -> Parsed:
    """Check one table; `setting_names` are the names `requires` may give (the Settings fields)."""
    where = _Where(source, index)
    if not isinstance(table, dict):
        raise where.error(None, "must be a table: write each model as a [[model]] table")
    model_id = _model_id(table, where)
    where.model_id = model_id
    _no_unknown_keys(table, (*REQUIRED_KEYS, *OPTIONAL_KEYS), where, prefix="")
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise where.error("enabled", "must be true or false")
    if not enabled and set(table) == {"id", "enabled"}:
        return Parsed(id=model_id, index=index, enabled=False, entry=None)
    missing = [key for key in REQUIRED_KEYS if key not in table]
    if missing:
        raise where.error(missing[0], "missing (a model needs " + ", ".join(REQUIRED_KEYS) + ")")
    task = cast(Task, _choice(table["task"], TASKS, "task", where))
    engine = cast(EngineFamily, _choice(table["engine"], ENGINES, "engine", where))
    if task not in ENGINE_TASKS[engine]:
        raise where.error(
            "engine", f"{engine} does not run task {task}; it runs {', '.join(ENGINE_TASKS[engine])}"
        )
    limits = _limits(table.get("limits", {}), task, where)
    entry = ModelEntry(
        id=model_id,
        name=_text(table.get("name", model_id), "name", where),
        description=_text(table["description"], "description", where, one_line=False),
        task=task,
        engine=engine,
        base=_base(table["base"], engine, where),
        loras=_loras(table.get("loras", []), engine, model_id, where),
        defaults=_defaults(table.get("defaults", {}), limits, where),
        prompt_template=_prompt_template(table.get("prompt_template"), task, where),
        limits=limits,
        dialects=_dialects(table.get("dialects", {}), model_id, task, where),
        requires=_requires(table.get("requires", []), setting_names, where),
        source=source,
    )
    return Parsed(id=model_id, index=index, enabled=enabled, entry=entry)


def _model_id(table: Mapping[str, object], where: _Where) -> str:
    if "id" not in table:
        raise where.error("id", "missing (a model needs " + ", ".join(REQUIRED_KEYS) + ")")
    value = table["id"]
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value) or len(value) > MAX_ID_CHARS:
        raise where.error(
            "id",
            f"{shown(value)} is not a model id: lowercase letters, digits, '.', '_' and '-', starting with a "
            f"letter or digit, at most {MAX_ID_CHARS} characters",
        )
    return value


def _no_unknown_keys(
    table: Mapping[str, object], known: tuple[str, ...], where: _Where, *, prefix: str
) -> None:
    for key in table:
        if key not in known:
            near = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {near[0]}?" if near else f"; known keys: {', '.join(known)}"
            raise where.error(prefix + key, "unknown key" + hint)


def _text(value: object, field: str, where: _Where, *, one_line: bool = True) -> str:
    if not isinstance(value, str) or not value.strip():
        raise where.error(field, "must be a non-empty string")
    if one_line and any(char < " " for char in value):
        raise where.error(field, "must be one line of text")
    return value.strip()


def _choice(value: object, choices: tuple[str, ...], field: str, where: _Where) -> str:
    if not isinstance(value, str) or value not in choices:
        raise where.error(field, f"{shown(value)} is not one of {', '.join(choices)}")
    return value


def _base(value: object, engine: EngineFamily, where: _Where) -> str:
    text = _text(value, "base", where)
    if engine == "dashscope" and not NAME_PATTERN.fullmatch(text):
        raise where.error("base", f"{shown(text)} is not a vendor model name (like wan2.7-image)")
    return text


def _loras(value: object, engine: EngineFamily, model_id: str, where: _Where) -> tuple[ModelLora, ...]:
    if not isinstance(value, list):
        raise where.error("loras", 'must be a list of tables like { url = "...", scale = 1.0 }')
    if value and engine == "dashscope":
        raise where.error("loras", f"engine {engine} takes no LoRAs")
    if len(value) > MAX_LORAS:
        raise where.error("loras", f"has {len(value)} LoRAs; a model takes at most {MAX_LORAS}")
    loras = tuple(_lora(item, f"loras[{index}]", model_id, index, where) for index, item in enumerate(value))
    first_places: dict[tuple[str, str], int] = {}
    for index, lora in enumerate(loras):
        value = posixpath.normpath(lora.ref.value) if lora.ref.kind == "path" else lora.ref.value
        key = (lora.ref.kind, value)
        if key in first_places:
            raise where.error(
                f"loras[{index}].{lora.ref.kind}",
                f"the same LoRA as loras[{first_places[key]}]; give it once",
            )
        first_places[key] = index
    return loras


def _lora(item: object, field: str, model_id: str, index: int, where: _Where) -> ModelLora:
    if not isinstance(item, dict):
        raise where.error(field, 'must be a table like { url = "...", scale = 1.0 }')
    _no_unknown_keys(item, LORA_KEYS, where, prefix=f"{field}.")
    kinds = [kind for kind in KINDS if kind in item]
    if len(kinds) != 1:
        raise where.error(field, "must have exactly one of url, path or id")
    kind = kinds[0]
    text = _text(item[kind], f"{field}.{kind}", where)
    if kind == "url" and not text.startswith(("https://", "http://")):
        raise where.error(f"{field}.url", f"{shown(text)} is not an http(s) URL")
    path_problem = local_path_problem(text) if kind == "path" else None
    if path_problem is not None:
        # a request's path is refused at submit by the same rule: a catalog one would fail every job
        raise where.error(
            f"{field}.path",
            f"{shown(text)} {path_problem}: give a {LORA_SUFFIX} file of REANGLE_LORA_DIR, relative to it",
        )
    scale = item.get("scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale):
        raise where.error(f"{field}.scale", f"must be a number between {-MAX_SCALE:g} and {MAX_SCALE:g}")
    if abs(scale) > MAX_SCALE:
        raise where.error(
            f"{field}.scale", f"must be a number between {-MAX_SCALE:g} and {MAX_SCALE:g}, not {scale:g}"
        )
    name = _text(item["name"], f"{field}.name", where) if "name" in item else None
    # errors at run time (a download that fails, an unregistered id) name the catalog entry's field, and the
    # LoRA by its name or place, never by its URL or path (users see them)
    label = name if name is not None or kind == "id" else f"loras[{index}] of {model_id}"
    ref = LoraRef(
        kind=kind,
        value=text,
        scale=float(scale),
        field=f"catalog.{model_id}.loras.{index}.{kind}",
        label=label,
        from_catalog=True,
    )
    return ModelLora(ref=ref, name=name)


def _limits(value: object, task: Task, where: _Where) -> Limits:
    if not isinstance(value, dict):
        raise where.error("limits", "must be a table like { max_outputs = 2 }")
    _no_unknown_keys(value, LIMIT_KEYS, where, prefix="limits.")
    lowest = {"max_outputs": 1, "max_images": 0}
    for key, number in value.items():
        if isinstance(number, bool) or not isinstance(number, int) or number < lowest[key]:
            raise where.error(f"limits.{key}", f"must be a whole number of at least {lowest[key]}")
    if task == "text_to_image" and "max_images" in value:
        raise where.error("limits.max_images", "a text_to_image model takes no input images")
    return Limits(max_outputs=value.get("max_outputs"), max_images=value.get("max_images"))


def _defaults(value: object, limits: Limits, where: _Where) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise where.error("defaults", "must be a table of input field = default value")
    for key, default in value.items():
        if not _finite(default):
            raise where.error(
                f"defaults.{key}", f"{default!r} is not a finite number (nan and inf are refused)"
            )
    outputs = value.get("num_outputs")
    if limits.max_outputs is not None and isinstance(outputs, int) and outputs > limits.max_outputs:
        raise where.error(
            "defaults.num_outputs", f"{outputs} is above limits.max_outputs ({limits.max_outputs})"
        )
    return MappingProxyType(dict(value))


def _finite(value: object) -> bool:
    """False when `value` is, or holds, a float that is nan or infinite (TOML writes them `nan`, `inf`)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_finite(item) for item in value)
    if isinstance(value, dict):
        return all(_finite(item) for item in value.values())
    return True


def _prompt_template(value: object, task: Task, where: _Where) -> str | None:
    if value is None:
        return None
    text = _text(value, "prompt_template", where)
    problem = template_problem(text)
    if problem:
        raise where.error("prompt_template", problem)
    fixed, limit = len(template_text(text)), TASK_PROMPT_LIMITS[task]
    if fixed > limit:
        # every request would be refused at submit, its words however short
        raise where.error(
            "prompt_template",
            f"its own text, without the prompt, is {fixed:,} characters: more than the {limit:,} a prompt "
            f"of task {task} may have, so no request could fit",
        )
    return text


#: The tasks whose fields each dialect translates (the others list every task).
DIALECT_TASKS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"segmind": ("camera_edit",), "runpod": ("camera_edit", "instruction_edit")}
)


def _dialects(value: object, model_id: str, task: Task, where: _Where) -> Mapping[str, str]:
    if not isinstance(value, dict):
        raise where.error("dialects", 'must be a table like { scenario = "model_..." }')
    _no_unknown_keys(value, DIALECTS, where, prefix="dialects.")
    ids = default_dialect_ids(model_id)
    for dialect, dialect_id in value.items():
        field = f"dialects.{dialect}"
        text = _text(dialect_id, field, where)
        if not NAME_PATTERN.fullmatch(text):
            raise where.error(field, f"{shown(text)} is not an id: letters, digits and . _ / : -")
        tasks = DIALECT_TASKS.get(dialect)
        if tasks is not None and task not in tasks:
            raise where.error(field, f"the {dialect} dialect serves only {' and '.join(tasks)} models")
        if dialect == "scenario" and not text.startswith(SCENARIO_PREFIX):
            raise where.error(field, f"{shown(text)}: Scenario model ids start with {SCENARIO_PREFIX}")
        ids[dialect] = text
    return MappingProxyType({dialect: ids[dialect] for dialect in DIALECTS if dialect in ids})


def _requires(value: object, setting_names: Collection[str], where: _Where) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise where.error("requires", 'must be a list of setting names like ["dashscope_api_key"]')
    for index, name in enumerate(value):
        if name not in setting_names:
            lowered = name.lower().removeprefix("reangle_")
            near = difflib.get_close_matches(lowered, list(setting_names), n=1)
            hint = f"; did you mean {near[0]}?" if near else ""
            raise where.error(f"requires[{index}]", f"{shown(name)} is not a setting{hint}")
    return tuple(dict.fromkeys(value))
