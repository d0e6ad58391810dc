"""Reading the catalog: the shipped `models.toml`, then the operator's file added on top.

An operator entry with a shipped model's id replaces it where it stands; one with a new id is appended; one
with only `id` and `enabled = false` turns a shipped model off. Any problem stops here with one CatalogError.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Collection, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from reangle.catalog.defaults import entry_inputs
from reangle.catalog.errors import CatalogError, entry_label, shown
from reangle.catalog.model import DIALECT_NAMESPACES, Catalog, ModelEntry
from reangle.catalog.parse import Parsed, parse_entry

SHIPPED_FILE = "models.toml"
TOP_LEVEL_KEYS = ("model",)
_TOML_POSITION = re.compile(r"^(?P<problem>.*?)\s*\(at (?P<where>line \d+, column \d+|end of document)\)$")

#: Task -> its input classes by job kind (`reangle.core.models.TASK_INPUTS`), to check entries' defaults.
TaskInputs = Mapping[str, Mapping[Any, type[BaseModel]]]


def load_catalog(
    operator_file: Path | None = None,
    *,
    inputs: TaskInputs | None = None,
    setting_names: Collection[str] | None = None,
) -> Catalog:
    """The shipped catalog with `operator_file` (REANGLE_CATALOG_FILE) on top.

    `inputs` checks every entry's defaults against its task's input classes (without it, they are checked
    only when `entry_inputs` builds the classes); `setting_names` are the names `requires` may give
    (default: the fields of reangle.settings.Settings).
    """
    if setting_names is None:
        from reangle.settings import Settings

        setting_names = frozenset(Settings.model_fields)
    text, shipped_source = shipped_text()
    shipped = read_entries(text, source=shipped_source, setting_names=setting_names)
    shipped_ids = [parsed.id for parsed in shipped]
    merged: dict[str, ModelEntry] = {}
    for parsed in shipped:
        if parsed.entry is not None and parsed.enabled:
            merged[parsed.id] = parsed.entry
    disabled: list[str] = []
    if operator_file is not None:
        source = str(operator_file)
        for parsed in read_entries(_read(operator_file), source=source, setting_names=setting_names):
            _apply(parsed, merged, disabled, source, shipped_ids=shipped_ids)
    catalog = Catalog(tuple(merged.values()), disabled=tuple(disabled))
    _check_dialect_ids(catalog, shipped_source)
    if inputs is not None:
        for entry in catalog:
            if entry.task in inputs:
                entry_inputs(entry, inputs[entry.task])
    return catalog


def shipped_text() -> tuple[str, str]:
    """The shipped catalog's text and the name messages give it."""
    resource = resources.files("reangle.catalog").joinpath(SHIPPED_FILE)
    return resource.read_text(encoding="utf-8"), str(resource)


def read_entries(text: str, *, source: str, setting_names: Collection[str]) -> list[Parsed]:
    """Every `[[model]]` table of one file's text, checked, with no id twice."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(source, exc) from None
    for key in document:
        if key not in TOP_LEVEL_KEYS:
            raise CatalogError(source, "unknown key; a catalog holds only [[model]] tables", field=key)
    tables = document.get("model", [])
    if not isinstance(tables, list):
        raise CatalogError(source, "must be an array of tables: write [[model]], not [model]", field="model")
    found: list[Parsed] = []
    first_index: dict[str, int] = {}
    for index, table in enumerate(tables):
        parsed = parse_entry(table, source=source, index=index, setting_names=setting_names)
        if parsed.id in first_index:
            raise CatalogError(
                source,
                f"{shown(parsed.id)} is already the id of model[{first_index[parsed.id]}] in this file",
                entry=entry_label(None, index),
                field="id",
            )
        first_index[parsed.id] = index
        found.append(parsed)
    return found


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise CatalogError(str(path), "no such file (REANGLE_CATALOG_FILE)") from None
    except UnicodeDecodeError as exc:
        raise CatalogError(str(path), f"not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise CatalogError(str(path), f"cannot be read: {exc.strerror or exc}") from None


def _syntax_error(source: str, exc: tomllib.TOMLDecodeError) -> CatalogError:
    # Python 3.11's TOMLDecodeError has no line attribute: its message ends "(at line 3, column 7)"
    match = _TOML_POSITION.match(str(exc))
    if match is None:
        return CatalogError(source, f"invalid TOML: {exc}")
    where = "end of file" if match["where"] == "end of document" else match["where"]
    return CatalogError(source, f"invalid TOML: {match['problem']}", position=where)


def _apply(
    parsed: Parsed, merged: dict[str, ModelEntry], disabled: list[str], source: str, shipped_ids: list[str]
) -> None:
    if parsed.entry is None:  # `id` and `enabled = false` only
        if parsed.id not in shipped_ids:
            raise CatalogError(
                source,
                f"there is no shipped model {shown(parsed.id)} to turn off "
                f"(shipped: {', '.join(shipped_ids)})",
                entry=entry_label(parsed.id, parsed.index),
                field="enabled",
            )
        merged.pop(parsed.id, None)
        disabled.append(parsed.id)
    elif parsed.enabled:
        merged[parsed.id] = parsed.entry
    else:
        merged.pop(parsed.id, None)
        if parsed.id in shipped_ids:
            disabled.append(parsed.id)


def _check_dialect_ids(catalog: Catalog, shipped_source: str) -> None:
    """No dialect id names two models (fal's ids share the OpenAI dialect's names). Of two models that
    clash, the operator's is the one to fix."""
    owners: dict[tuple[str, str], tuple[ModelEntry, str]] = {}
    for entry in catalog:
        for dialect, dialect_id in entry.dialects.items():
            key = (DIALECT_NAMESPACES.get(dialect, dialect), dialect_id)
            other, other_dialect = owners.setdefault(key, (entry, dialect))
            if other is entry:
                continue
            blamed, owner, field = (entry, other, dialect)
            if entry.source == shipped_source and other.source != shipped_source:
                blamed, owner, field = (other, entry, other_dialect)
            raise CatalogError(
                blamed.source,
                f"{shown(dialect_id)} already names model {shown(owner.id)} in that dialect",
                entry=entry_label(blamed.id, 0),
                field=f"dialects.{field}",
            )
